//! `pulse keys`: create, list and revoke the analyst service's API keys ([`pulse_app::keys`] does the work).

use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;
use pulse_app::keys::{KeyScope, Keys};
use pulse_app::open;

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key and print it once (only its hash is kept). A key for several tenants needs `--scope admin`.
    Create {
        /// Tenant the key reads; repeat for a regional admin key.
        #[arg(long, required = true)]
        tenant: Vec<String>,
        /// What the key may do: read (query, reports, dashboard), export (research exports), admin (several
        /// tenants; list and revoke their keys). Repeat for several.
        #[arg(long, default_value = "read", value_parser = ["read", "export", "admin"])]
        scope: Vec<String>,
        /// A name to recognise the key by (who holds it, what for).
        #[arg(long)]
        name: String,
        /// Days until the key stops working (default: no expiry).
        #[arg(long)]
        expires_in_days: Option<u32>,
    },
    /// List keys: id, name, tenants, scopes, state, last used. Never the secrets.
    List,
    /// Revoke a key by id; it stops working on its next request, and its dashboard sessions end.
    Revoke {
        /// The key's id (the part after `pulse_`, as `pulse keys list` shows).
        id: String,
    },
}

pub fn run(path: &Path, cmd: KeysCommand) -> Result<ExitCode> {
    let config = open::config(path)?;
    let keys = Keys::for_config(&config);
    match cmd {
        KeysCommand::Create { tenant, scope, name, expires_in_days } => {
            let scopes = scope.iter().map(|s| s.parse::<KeyScope>()).collect::<Result<Vec<_>, _>>()?;
            let new = keys.create(&config, &name, &tenant, &scopes, expires_in_days)?;
            crate::errln!(
                "created key {} ({}) for {} with scopes {}; stored hashed in {}",
                new.record.id,
                new.record.name,
                new.record.tenants.join(", "),
                new.record.scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "),
                keys.path().display()
            );
            crate::errln!("this is the only time the key is shown; give it to its holder now:");
            crate::outln!("{}", new.secret);
        }
        KeysCommand::List => {
            let now = chrono::Utc::now();
            let list = keys.list()?;
            if list.is_empty() {
                crate::outln!("no keys in {}; create one with `pulse keys create`", keys.path().display());
            }
            crate::outln!(
                "{:<10} {:<8} {:<24} {:<28} {:<18} {:<20} {}",
                "id",
                "state",
                "name",
                "tenants",
                "scopes",
                "last used",
                "expires"
            );
            for k in list {
                let when = |t: Option<chrono::DateTime<chrono::Utc>>| {
                    t.map(|t| t.format("%Y-%m-%d %H:%M").to_string()).unwrap_or_else(|| "-".into())
                };
                crate::outln!(
                    "{:<10} {:<8} {:<24} {:<28} {:<18} {:<20} {}",
                    k.id,
                    k.state(now),
                    k.name,
                    k.tenants.join(","),
                    k.scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(","),
                    when(k.last_used_at),
                    when(k.expires_at)
                );
            }
        }
        KeysCommand::Revoke { id } => {
            let k = keys.revoke(&id)?;
            crate::outln!("revoked key {} ({}); it stops working on its next request", k.id, k.name);
        }
    }
    Ok(ExitCode::SUCCESS)
}
