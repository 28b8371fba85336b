//! `pulse ingest`.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use chrono::NaiveDate;
use clap::Args;
use pulse_config::Config;
use pulse_domain::Principal;
use pulse_ingest::{GraphClient, IngestOptions, Ingester, PlanOptions, RunReport, Target};
use pulse_store::Store;

use crate::open;

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
}

/// Today in US-Pacific time: the first day whose values are not complete.
pub fn pacific_today() -> NaiveDate {
    chrono::Utc::now().with_timezone(&chrono_tz::America::Los_Angeles).date_naive()
}

/// Pages of the selected tenants whose token resolves; the others are returned with the reason.
fn targets(config: &Config, tenants: &[String]) -> Result<(Vec<Target>, Vec<String>)> {
    let access = config.access(Principal::Operator);
    let scopes = if tenants.is_empty() {
        access.scopes()
    } else {
        tenants.iter().map(|t| access.scope(t)).collect::<Result<Vec<_>, _>>()?
    };
    let mut out = Vec::new();
    let mut skipped = Vec::new();
    for scope in scopes {
        let tenant = config.tenant(scope.tenant()).context("tenant vanished from config")?;
        for practice in &tenant.practices {
            for page in &practice.pages {
                let token = match &page.token {
                    None => Err("no token reference".to_owned()),
                    Some(r) => config.resolve(r).map_err(|e| format!("{e} ({})", r.describe())),
                };
                match token {
                    Ok(token) => out.push(Target {
                        scope: scope.clone(),
                        practice: practice.code.clone(),
                        page: page.id.clone(),
                        token,
                    }),
                    Err(why) => {
                        skipped.push(format!("page {} (practice {}, tenant {scope}): {why}", page.id, practice.code))
                    }
                }
            }
        }
    }
    Ok((out, skipped))
}

pub async fn run(path: &Path, args: IngestArgs) -> Result<ExitCode> {
    let config = open::config(path)?;
    let store = open::store(&config)?;
    let (targets, skipped) = targets(&config, &args.tenant)?;
    for s in &skipped {
        eprintln!("skipped {s}");
    }
    if targets.is_empty() {
        bail!("no page has a usable token, so there is nothing to ingest; `pulse config check` lists why");
    }
    let app_secret = match &config.graph.app_secret {
        Some(r) => Some(config.resolve(r).with_context(|| format!("graph.app_secret ({})", r.describe()))?),
        None => None,
    };
    let today = args.today.unwrap_or_else(pacific_today);
    let plan = PlanOptions {
        version: config.graph.version,
        today,
        backfill_from: args.since.unwrap_or(today - chrono::Duration::days(90)),
        lookback_days: args.lookback_days.max(1),
        post_snapshot_days: 28,
    };
    let mut opts = IngestOptions::new(plan);
    opts.concurrency = args.concurrency.max(1);
    let client = GraphClient::new(&config.graph.base_url, config.graph.version, app_secret, Duration::from_secs(60))?;
    eprintln!("ingesting {} pages from {} into {}", targets.len(), config.graph.base_url, store.describe());
    let report = Ingester::new(store, client, opts).run(targets).await?;
    print!("{}", report.table());
    Ok(exit_code(&report, !skipped.is_empty()))
}

pub fn exit_code(report: &RunReport, skipped: bool) -> ExitCode {
    println!(
        "run {}: {} requests, {} rows written in {:.1}s",
        report.run_id,
        report.requests,
        report.rows_written,
        (report.finished_at - report.started_at).num_milliseconds() as f64 / 1000.0
    );
    if report.store_error.is_some() {
        return ExitCode::from(3);
    }
    if report.is_clean() && !skipped { ExitCode::SUCCESS } else { ExitCode::from(1) }
}
