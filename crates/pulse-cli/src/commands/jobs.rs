//! `pulse jobs run`: the pipelines, for each tenant, into the report tables.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};
use chrono::NaiveDate;
use clap::Subcommand;
use pulse_config::{CampaignConfig, Config, StoreBackend};
use pulse_domain::{Principal, TenantScope};
use pulse_pipelines::campaign::{Campaign, Matcher};
use pulse_pipelines::jobs::{self, JobInput, JobSummary};
use pulse_pipelines::registered::{self, Registered};
use pulse_store::Store;

use crate::open;

#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// Run every pipeline and replace the tenants' report tables.
    Run {
        /// Only these tenants (repeatable). Default: every configured tenant.
        #[arg(long)]
        tenant: Vec<String>,
        /// First day of the report range. Default: a year before --to.
        #[arg(long)]
        from: Option<NaiveDate>,
        /// Last day of the report range. Default: the last day ingested for the tenant.
        #[arg(long)]
        to: Option<NaiveDate>,
    },
}

pub fn campaigns_for(configured: &[CampaignConfig], scope: &TenantScope) -> Vec<Campaign> {
    configured
        .iter()
        .filter(|c| c.tenants.is_empty() || c.tenants.contains(scope.tenant()))
        .map(|c| Campaign {
            name: c.name.clone(),
            matcher: if let Some(h) = &c.hashtag {
                Matcher::Hashtag(h.clone())
            } else if let Some(l) = &c.link {
                Matcher::Link(l.clone())
            } else if let Some(t) = &c.text {
                Matcher::Text(t.clone())
            } else {
                Matcher::Posts(c.posts.clone())
            },
            post_type: c.post_type.clone(),
            start: c.start,
            days: c.days,
        })
        .collect()
}

pub fn registered_for(config: &Config) -> Result<Option<Registered>> {
    match &config.registered_patients_csv {
        Some(path) => Ok(Some(registered::load(path)?)),
        None => Ok(None),
    }
}

pub async fn run(path: &Path, cmd: JobsCommand) -> Result<ExitCode> {
    let JobsCommand::Run { tenant, from, to } = cmd;
    let config = open::config(path)?;
    let store = open::store(&config)?;
    let access = config.access(Principal::Operator);
    let scopes = if tenant.is_empty() {
        access.scopes()
    } else {
        tenant.iter().map(|t| access.scope(t)).collect::<Result<Vec<_>, _>>()?
    };
    let registered = registered_for(&config)?;
    let lake_root = (config.store.backend == StoreBackend::Lake).then(|| config.store.lake_dir.clone());
    let mut failed = false;
    for scope in scopes {
        let to = match to {
            Some(t) => t,
            None => {
                let cps = store.load_checkpoints(&scope).await?;
                match cps.iter().map(|c| c.through_day).max() {
                    Some(d) => d,
                    None => {
                        eprintln!(
                            "tenant {scope}: nothing ingested yet; run `pulse ingest` first (or pass --from and --to)"
                        );
                        failed = true;
                        continue;
                    }
                }
            }
        };
        let from = from.unwrap_or(to - chrono::Duration::days(364));
        let input = JobInput {
            scope: scope.clone(),
            from,
            to,
            campaigns: campaigns_for(&config.campaigns, &scope),
            registered: registered.clone(),
            lake_root: lake_root.clone(),
        };
        match jobs::run(&store, input).await.with_context(|| format!("tenant {scope}")) {
            Ok(summary) => print_summary(&summary, from, to),
            Err(e) => {
                eprintln!("error: {e:#}");
                failed = true;
            }
        }
    }
    Ok(if failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

/// 1234567 -> "1,234,567".
pub fn thousands(x: f64) -> String {
    let n = x.round() as i64;
    let s = n.abs().to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

fn bar(fraction: f64, width: usize) -> String {
    let cells = (fraction.clamp(0.0, 1.0) * width as f64 * 8.0).round() as usize;
    let full = cells / 8;
    let part = ["", "▏", "▎", "▍", "▌", "▋", "▊", "▉"][cells % 8];
    format!("{}{part}", "█".repeat(full))
}

/// A sparkline of a series (what a chart would show, in one line).
pub fn sparkline(values: &[f64]) -> String {
    let ticks = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let (lo, hi) = values.iter().fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(*v), b.max(*v)));
    values
        .iter()
        .map(|v| if hi > lo { ticks[(((v - lo) / (hi - lo)) * 7.0).round() as usize] } else { ticks[0] })
        .collect()
}

pub fn print_summary(s: &JobSummary, from: NaiveDate, to: NaiveDate) {
    println!();
    println!(
        "── tenant {}: reports for {from} to {to} ({} facts, {} pages, {} weeks, {:.1}s)",
        s.tenant, s.facts, s.pages, s.weeks, s.seconds
    );
    if let (Some(e), Some(r)) = (s.median_weekly_engaged, s.median_weekly_reach) {
        println!(
            "   reach: a typical page reaches {} people and engages {} a week (medians of the API's weekly uniques)",
            thousands(r),
            thousands(e)
        );
    }
    if let Some((week, gross)) = s.latest_week {
        println!(
            "   week ending {week}: gross reach across pages {} (people following several pages count more than once)",
            thousands(gross)
        );
    }
    if !s.age_shares.is_empty() {
        println!("   who engages ({}):", s.age_source);
        let max = s.age_shares.iter().filter_map(|(_, v)| *v).fold(0.0, f64::max);
        for (band, share) in &s.age_shares {
            match share {
                Some(v) => println!("     {band:>6} {:<30} {:>5.1}%", bar(v / max.max(1e-9), 30), v * 100.0),
                None => println!("     {band:>6} {:<30}   n/a (suppressed)", ""),
            }
        }
    } else {
        println!("   who engages: {}", s.age_source);
    }
    for c in &s.campaigns {
        let label = format!("{} · {}", c.campaign, c.metric);
        match &c.estimate {
            Some(e) => {
                let interval = e.interval.map_or("no interval".to_owned(), |(lo, hi)| {
                    format!("95% CI {} to {}", thousands(lo), thousands(hi))
                });
                let lift = if e.counterfactual > 0.0 {
                    format!(", lift {:+.0}%", 100.0 * e.effect / e.counterfactual)
                } else {
                    String::new()
                };
                let posts = c
                    .post_lifetime
                    .map_or(String::new(), |v| format!("; its {} posts: {} lifetime", c.posts, thousands(v)));
                println!(
                    "   campaign {label}: {}{} over the window ({interval}{lift}, p={:.3}) on {} pages{posts}",
                    if e.effect >= 0.0 { "+" } else { "" },
                    thousands(e.effect),
                    e.p_value.unwrap_or(f64::NAN),
                    c.pages
                );
                let obs: Vec<f64> = e.series.iter().map(|x| x.1).collect();
                let cf: Vec<f64> = e.series.iter().map(|x| x.2).collect();
                println!("     observed       {}", sparkline(&obs));
                println!("     counterfactual {}", sparkline(&cf));
            }
            None => println!("   campaign {label}: not computed: {}", c.note),
        }
    }
    if s.quality_issues > 0 {
        println!("   data quality: {} issues (see `pulse report quality`)", s.quality_issues);
    } else {
        println!("   data quality: no gaps, stale pages or impossible values");
    }
    let rows: usize = s.rows_written.values().sum();
    println!("   wrote {rows} report rows into {} tables", s.rows_written.len());
}
