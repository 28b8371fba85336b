//! `pulse jobs run`: arguments in, [`pulse_app::jobs`] does the work, words out.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;
use chrono::NaiveDate;
use clap::Subcommand;
use pulse_app::jobs::{self, JobsRequest, TenantJob};

#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// Run every pipeline and replace the tenants' report tables.
    ///
    /// With --from or --to the reports go to a variant named FROM..TO (or --variant), so a narrower run never
    /// replaces the full-range reports; `pulse report --variant FROM..TO` reads it.
    Run {
        /// Only these tenants (repeatable). Default: every configured tenant.
        #[arg(long)]
        tenant: Vec<String>,
        /// First day of the report range. Default: the first day with facts (the reports keep all history).
        #[arg(long)]
        from: Option<NaiveDate>,
        /// Last day of the report range. Default: the last day ingested for the tenant.
        #[arg(long)]
        to: Option<NaiveDate>,
        /// Report variant to write: `main`, or a name (letters, digits, `.`, `_`, `-`).
        #[arg(long)]
        variant: Option<String>,
        /// Recompute every report from all facts. Without it the main reports are updated incrementally: only the
        /// weeks, 28-day windows and campaigns touched by facts fetched since the previous run are recomputed.
        #[arg(long)]
        full: bool,
    },
}

pub async fn run(path: &Path, cmd: JobsCommand) -> Result<ExitCode> {
    let JobsCommand::Run { tenant, from, to, variant, full } = cmd;
    let config = pulse_app::open::config(path)?;
    let results = jobs::run(&config, &JobsRequest { tenants: tenant, from, to, variant, full }).await?;
    Ok(print(&results))
}

/// Prints each tenant's outcome; exit 1 when any tenant failed.
pub fn print(results: &[TenantJob]) -> ExitCode {
    let mut failed = false;
    for r in results {
        match r {
            TenantJob::Done { summary, from, to } => crate::out(&jobs::summary_text(summary, *from, *to)),
            other => {
                failed = true;
                crate::errln!("error: {}", other.problem().unwrap_or_default());
            }
        }
    }
    if failed { ExitCode::from(1) } else { ExitCode::SUCCESS }
}
