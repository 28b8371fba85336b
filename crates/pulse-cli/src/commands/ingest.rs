//! `pulse ingest`: arguments in, [`pulse_app::ingest`] does the work, words out.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;
use chrono::NaiveDate;
use clap::Args;
use pulse_app::ingest::{self, IngestRequest};

#[derive(Debug, Args)]
pub struct IngestArgs {
    /// Only these tenants (repeatable). Default: every configured tenant.
    #[arg(long)]
    tenant: Vec<String>,
    /// Where pages without checkpoints start (at most two years back). Default: 90 days ago.
    #[arg(long)]
    since: Option<NaiveDate>,
    /// The first Pacific-time day that is not complete yet. Default: today in US-Pacific time.
    #[arg(long)]
    today: Option<NaiveDate>,
    /// Days re-read before each checkpoint (Meta revises recent days).
    #[arg(long, default_value_t = 3)]
    lookback_days: i64,
    /// HTTP calls in flight across all pages.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Seconds the store may stay unreachable (retrying) before the run stops with exit code 3.
    #[arg(long, default_value_t = 120)]
    store_retry_secs: u64,
}

pub async fn run(path: &Path, args: IngestArgs) -> Result<ExitCode> {
    let config = pulse_app::open::config(path)?;
    let request = IngestRequest {
        tenants: args.tenant,
        since: args.since,
        today: args.today,
        lookback_days: args.lookback_days,
        concurrency: args.concurrency,
        store_retry_for: Some(std::time::Duration::from_secs(args.store_retry_secs)),
    };
    let run = ingest::run(&config, &request, |line| crate::errln!("{line}")).await?;
    for s in &run.skipped {
        crate::errln!("skipped {s}");
    }
    crate::out(&run.report.table());
    crate::out(&run.closing());
    Ok(ExitCode::from(run.outcome.exit_code()))
}
