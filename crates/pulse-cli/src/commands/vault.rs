//! `pulse vault` and `pulse pages`: the token vault (keys, rotation, import from config) and invitations that connect
//! practices' pages ([`pulse_app::vault`] and [`pulse_app::onboarding`] do the work). No command prints a page
//! token; `new-key` prints the new vault key, once, for the operator to keep where `[vault] key` points.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::Subcommand;
use pulse_app::vault::{self, Vault};
use pulse_app::{onboarding, open};

#[derive(Debug, Subcommand)]
pub enum VaultCommand {
    /// Print a new random vault key (64 hex digits). Keep it where `[vault] key` points (an environment variable
    /// or a secrets file), never in the config or git.
    NewKey,
    /// Move the page tokens the config's secret references hold into the vault (sealed). The references keep
    /// working; remove them from the config once this has run.
    Import,
    /// Seal every page's token again under `[vault] key`. Run it after moving the old key to `previous_keys`; once
    /// it has run, the old key can be removed.
    Rotate,
    /// Each page: where its token comes from (vault and its key id, a config reference, none) and when it was
    /// obtained. Never the token.
    Status,
}

#[derive(Debug, Subcommand)]
pub enum PagesCommand {
    /// Create single-use, expiring invitation links for practice managers to connect their page (printed, one per
    /// line: practice, expiry, link). Send each link to the practice's manager.
    Invite {
        #[arg(long)]
        tenant: String,
        /// The practice (ODS code); repeat for several.
        #[arg(long)]
        practice: Vec<String>,
        /// Every practice of the tenant with no page whose token works (in the vault or by reference).
        #[arg(long, conflicts_with = "practice")]
        all_without_token: bool,
    },
    /// Check every page token through Meta's debug_token (validity, permissions, data access expiry) and record
    /// it; a page that needs re-authorisation gets an invitation (shown on the data-quality page and in the
    /// digest). Exit code 1 when any page needs attention. The scheduler does this daily after ingest.
    Health {
        /// Only this tenant (repeat for several); default every tenant.
        #[arg(long)]
        tenant: Vec<String>,
    },
    /// Disconnect a page: its token in the vault is no longer used (the config's reference, if any, is used again)
    /// and the page can be connected again, for any practice.
    Disconnect {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        page: String,
    },
    /// Withdraw an open invitation: its link stops working at once.
    Revoke {
        #[arg(long)]
        tenant: String,
        /// The invitation's id (`pulse pages invitations` lists them).
        id: String,
    },
    /// The tenant's invitations: who invited which practice, when, and which page was connected with each.
    Invitations {
        #[arg(long)]
        tenant: String,
    },
}

fn vault_of(config: &pulse_config::Config) -> Result<Vault> {
    match Vault::from_config(config)? {
        Some(v) => Ok(v),
        None => bail!(
            "this config has no [vault]; add `[vault] key = {{ env = \"PULSE_VAULT_KEY\" }}` and set that variable to a key from `pulse vault new-key`"
        ),
    }
}

pub async fn run(path: &Path, cmd: VaultCommand) -> Result<ExitCode> {
    if let VaultCommand::NewKey = cmd {
        crate::errln!("a new vault key; this is the only time it is shown: keep it where [vault] key points");
        crate::outln!("{}", Vault::new_key()?);
        return Ok(ExitCode::SUCCESS);
    }
    let config = open::config(path)?;
    let store = open::store(&config)?;
    let access = config.operator_access();
    let v = vault_of(&config)?;
    let report = |what: &str, m: vault::Moved| {
        crate::outln!(
            "{what}: {} sealed under key {}, {} unchanged, {} failed",
            m.sealed,
            v.key_id(),
            m.unchanged,
            m.failed.len()
        );
        for k in &m.kept {
            crate::outln!("  {k}");
        }
        for f in &m.failed {
            crate::outln!("  failed: {f}");
        }
        if m.failed.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
    };
    match cmd {
        VaultCommand::NewKey => unreachable!("handled above"),
        VaultCommand::Import => Ok(report("import", vault::import(&store, &config, &v, &access).await?)),
        VaultCommand::Rotate => {
            let code = report("rotation", vault::rotate(&store, &config, &v, &access).await?);
            let links = pulse_app::health::reseal_links(&store, &v, &access).await?;
            crate::outln!("re-authorisation links sealed again: {links}");
            Ok(code)
        }
        VaultCommand::Status => {
            crate::outln!("{:<16} {:<8} {:<20} {:<36} {}", "tenant", "practice", "page", "token", "obtained");
            for scope in access.scopes() {
                let entries = vault::entries(&store, &scope).await?;
                let tenant = config.tenant(scope.tenant()).expect("configured");
                let mut shown = std::collections::BTreeSet::new();
                for p in &tenant.practices {
                    for page in &p.pages {
                        shown.insert(page.id.to_string());
                        let (source, when) = match entries.get(page.id.as_str()).filter(|e| !e.removed) {
                            Some(e) => (
                                format!("vault (key {})", e.key_id),
                                e.obtained_at.format("%Y-%m-%d %H:%M").to_string(),
                            ),
                            None => match &page.token {
                                Some(r) => (format!("config ({})", r.describe()), "-".into()),
                                None => ("none".into(), "-".into()),
                            },
                        };
                        crate::outln!("{:<16} {:<8} {:<20} {:<36} {}", scope.as_str(), p.code, page.id, source, when);
                    }
                }
                for (page, e) in entries.iter().filter(|(p, e)| !e.removed && !shown.contains(*p)) {
                    crate::outln!(
                        "{:<16} {:<8} {:<20} {:<36} {}",
                        scope.as_str(),
                        e.practice,
                        page,
                        format!("vault (key {}), not in config", e.key_id),
                        e.obtained_at.format("%Y-%m-%d %H:%M")
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

pub async fn pages(path: &Path, cmd: PagesCommand) -> Result<ExitCode> {
    let config = open::config(path)?;
    let store = open::store(&config)?;
    let access = config.operator_access();
    match cmd {
        PagesCommand::Invite { tenant, practice, all_without_token } => {
            let practices = if all_without_token {
                onboarding::practices_without_token(&store, &config, &tenant).await?
            } else if practice.is_empty() {
                bail!("name a practice with --practice, or give --all-without-token");
            } else {
                practice
            };
            if practices.is_empty() {
                crate::errln!("every practice of {tenant} has a page with a working token: no invitation needed");
                return Ok(ExitCode::SUCCESS);
            }
            let by = format!("operator ({})", whoami());
            let created =
                onboarding::invite(&store, &config, &access, &tenant, &practices, &by, chrono::Utc::now()).await?;
            crate::errln!(
                "{} invitation(s) for {tenant}; each link works once, until it expires; send each to its practice's manager:",
                created.len()
            );
            for c in created {
                crate::outln!("{}\t{}\t{}\t{}", c.practice, c.practice_name, c.expires_at.format("%Y-%m-%d"), c.link);
            }
            Ok(ExitCode::SUCCESS)
        }
        PagesCommand::Health { tenant } => {
            let checked = pulse_app::health::check(&store, &config, &tenant, chrono::Utc::now()).await?;
            crate::outln!("{:<16} {:<8} {:<20} {:<10} {}", "tenant", "practice", "page", "state", "what to do");
            let mut attention = 0;
            for (t, h) in &checked.pages {
                let todo = match (&h.problem, &h.invitation) {
                    (Some(p), Some(_)) => {
                        format!("{p}; a re-authorisation invitation was made (data-quality page, digest)")
                    }
                    (Some(p), None) if h.needs_attention() => {
                        format!("{p}; send an invitation: `pulse pages invite --tenant {t} --practice {}`", h.practice)
                    }
                    (Some(p), None) => p.clone(),
                    (None, _) => h
                        .data_access_expires_at
                        .map(|d| format!("data access until {}", d.format("%Y-%m-%d")))
                        .unwrap_or_default(),
                };
                attention += usize::from(h.needs_attention());
                crate::outln!("{:<16} {:<8} {:<20} {:<10} {}", t, h.practice, h.page, h.state, todo);
            }
            crate::errln!("{} page token(s) checked; {attention} need re-authorisation", checked.pages.len());
            Ok(if attention == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        PagesCommand::Disconnect { tenant, page } => {
            let by = format!("disconnected by the operator ({})", whoami());
            let e = pulse_app::vault::disconnect(&store, &config, &tenant, &page, &by).await?;
            crate::outln!(
                "disconnected page {page} (practice {}) of {tenant}: its vault token is no longer used",
                e.practice
            );
            Ok(ExitCode::SUCCESS)
        }
        PagesCommand::Revoke { tenant, id } => {
            let by = format!("operator ({})", whoami());
            let i = onboarding::revoke(&store, &config, &access, &tenant, &id, &by).await?;
            crate::outln!("withdrew invitation {} for practice {}: its link no longer works", i.id, i.practice);
            Ok(ExitCode::SUCCESS)
        }
        PagesCommand::Invitations { tenant } => {
            let list = onboarding::list(&store, &access, &tenant).await?;
            if list.is_empty() {
                crate::outln!("no invitations for {tenant}; create them with `pulse pages invite`");
            }
            crate::outln!(
                "{:<34} {:<8} {:<8} {:<17} {:<17} {:<20} {}",
                "id",
                "practice",
                "state",
                "created",
                "expires",
                "page",
                "by"
            );
            for i in list {
                crate::outln!(
                    "{:<34} {:<8} {:<8} {:<17} {:<17} {:<20} {}",
                    i.id,
                    i.practice,
                    i.state,
                    i.created_at.format("%Y-%m-%d %H:%M"),
                    i.expires_at.format("%Y-%m-%d %H:%M"),
                    i.page.as_deref().unwrap_or("-"),
                    i.created_by
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn whoami() -> String {
    std::env::var("USER").or_else(|_| std::env::var("LOGNAME")).unwrap_or_else(|_| "unknown".into())
}
