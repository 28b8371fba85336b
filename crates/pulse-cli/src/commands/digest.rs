//! `pulse digest`: preview a tenant's weekly digest, send a list's digest by hand, and manage list members — thin
//! over [`pulse_digest::digest`], [`pulse_digest::delivery`] and [`pulse_app::subscriptions`].

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use chrono::Utc;
use clap::{Args, Subcommand};
use pulse_app::{open, subscriptions};
use pulse_digest::digest::{self, Links};
use pulse_digest::{delivery, mail};

#[derive(Debug, Subcommand)]
pub enum DigestCommand {
    /// Write a tenant's digest for a week as an email (.eml) and as a web page (.html) to review.
    Preview(PreviewArgs),
    /// Send a list's digest for a week now (the scheduler does this on Mondays). Recipients already sent to are
    /// skipped; failed ones are retried.
    Send(SendArgs),
    /// The digest lists and their members.
    Lists,
    /// Add someone to a list.
    Add(MemberArgs),
    /// Take someone off a list.
    Remove(MemberArgs),
}

#[derive(Debug, Args)]
pub struct PreviewArgs {
    #[arg(long)]
    tenant: String,
    /// The week: an ISO week (2018-W10) or any day in it. Default: the last whole week.
    #[arg(long)]
    week: Option<String>,
    /// Where to write: F.eml, F.html and F.figures.json (a trailing .eml or .html is dropped first).
    #[arg(long)]
    out: PathBuf,
}

#[derive(Debug, Args)]
pub struct SendArgs {
    #[arg(long)]
    list: String,
    /// The week: an ISO week (2018-W10) or any day in it. Default: the last whole week.
    #[arg(long)]
    week: Option<String>,
    /// Also send to recipients whose earlier delivery was interrupted mid-send (they may already have it).
    #[arg(long)]
    resend_interrupted: bool,
    /// The time (RFC 3339) retry times are judged against and set from, instead of now: for rehearsals beside
    /// `pulse run --clock-start`, whose clock the recipients' retry times then share.
    #[arg(long, hide = true)]
    at: Option<chrono::DateTime<Utc>>,
}

#[derive(Debug, Args)]
pub struct MemberArgs {
    #[arg(long)]
    list: String,
    #[arg(long)]
    email: String,
}

fn week(config: &pulse_config::Config, text: Option<&str>) -> Result<chrono::NaiveDate> {
    match text {
        Some(t) => digest::parse_week(t).map_err(anyhow::Error::msg),
        None => Ok(digest::last_whole_week(Utc::now().with_timezone(&config.scheduler.tz()).date_naive())),
    }
}

pub async fn run(path: &Path, cmd: DigestCommand) -> Result<ExitCode> {
    let config = open::config(path)?;
    let store = open::store(&config)?;
    match cmd {
        DigestCommand::Preview(a) => {
            let week_end = week(&config, a.week.as_deref())?;
            let d = digest::build(&store, &config, &a.tenant, week_end).await.map_err(anyhow::Error::msg)?;
            let links = Links {
                dashboard: config.digest.dashboard_url.trim_end_matches('/').to_owned(),
                unsubscribe: Some(format!("{}/unsubscribe?preview", config.digest.dashboard_url.trim_end_matches('/'))),
            };
            let rendered = digest::render(&d, &links).map_err(anyhow::Error::msg)?;
            let from = config.smtp.as_ref().map_or("Practice Pulse <digests@example.invalid>", |s| s.from.as_str());
            let headers = mail::ListHeaders {
                message_id: format!("preview.{}.{week_end}", a.tenant),
                list: Some(format!("preview-{}", a.tenant)),
                unsubscribe: links.unsubscribe.clone(),
            };
            let message =
                mail::message(&rendered, from, "preview@example.invalid", &headers).map_err(anyhow::Error::msg)?;
            let base = a.out.with_extension("");
            let (eml, html, figures) =
                (base.with_extension("eml"), base.with_extension("html"), base.with_extension("figures.json"));
            if let Some(dir) = base.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            }
            std::fs::write(&eml, message.formatted()).with_context(|| format!("writing {}", eml.display()))?;
            std::fs::write(&html, rendered.html_standalone()).with_context(|| format!("writing {}", html.display()))?;
            let published = serde_json::to_vec_pretty(&digest::published_figures(&d)).unwrap_or_default();
            std::fs::write(&figures, published).with_context(|| format!("writing {}", figures.display()))?;
            crate::outln!("{}", rendered.subject);
            crate::out(&rendered.text);
            crate::errln!(
                "wrote {} (the email), {} (open in a browser) and {} (its published figures, for the disclosure auditor)",
                eml.display(),
                html.display(),
                figures.display()
            );
            if !d.has_data() {
                crate::errln!("no figures for the week ending {week_end}: run `pulse jobs run` over it first");
            }
        }
        DigestCommand::Send(a) => {
            let week_end = week(&config, a.week.as_deref())?;
            let mailer = mail::Mailer::from_config(&config).map_err(anyhow::Error::msg)?;
            let request = delivery::SendRequest {
                list: a.list.clone(),
                week_end,
                now: a.at.unwrap_or_else(Utc::now),
                resend_interrupted: a.resend_interrupted,
                allow_incomplete: true,
                superseded: None,
            };
            let holder = delivery::manual_holder();
            let out = delivery::send_list_leased(&store, &config, &mailer, &request, &holder)
                .await
                .map_err(anyhow::Error::msg)?;
            crate::outln!("{}", out.summary());
            return Ok(if out.clean() { ExitCode::SUCCESS } else { ExitCode::from(1) });
        }
        DigestCommand::Lists => {
            let lists =
                subscriptions::lists(&store, &config, &config.operator_access()).await.map_err(anyhow::Error::msg)?;
            if lists.is_empty() {
                crate::outln!("no digest lists: declare one with [[subscription]] in {}", path.display());
            }
            for l in lists {
                crate::outln!("{} (tenant {}): {} recipient(s)", l.name, l.tenant, l.recipients.len());
                for r in &l.recipients {
                    crate::outln!("  {r}");
                }
                for r in &l.unsubscribed {
                    crate::outln!("  {r} (unsubscribed)");
                }
            }
        }
        DigestCommand::Add(a) => member(&store, &config, &a, "add").await?,
        DigestCommand::Remove(a) => member(&store, &config, &a, "remove").await?,
    }
    Ok(ExitCode::SUCCESS)
}

async fn member(
    store: &pulse_store::AnyStore,
    config: &pulse_config::Config,
    a: &MemberArgs,
    action: &str,
) -> Result<()> {
    let l = subscriptions::change(store, config, &config.operator_access(), &a.list, &a.email, action, "operator")
        .await
        .map_err(anyhow::Error::msg)?;
    crate::outln!("{} now has {} recipient(s)", l.name, l.recipients.len());
    Ok(())
}
