//! `pulse run` (the scheduler daemon) and `pulse status` (what it did and will do): thin over
//! [`pulse_digest::daemon`] and [`pulse_app::scheduler`].

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Result;
use chrono::{DateTime, Utc};
use clap::Args;
use pulse_app::open;
use pulse_app::scheduler::{self, Clock};
use pulse_digest::daemon::Daemon;
use pulse_digest::{delivery, digest, mail};

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Start the daemon's clock at this instant (RFC 3339) instead of now: for rehearsing a schedule.
    #[arg(long, hide = true)]
    clock_start: Option<DateTime<Utc>>,
    /// With --clock-start: how many times faster than real time the clock runs.
    #[arg(long, hide = true, default_value_t = 1.0)]
    clock_speed: f64,
    /// Serve Prometheus metrics at http://<this address>/metrics (for example 127.0.0.1:9465): scheduled runs, leases,
    /// ingest calls and rows, report jobs, digest deliveries, pages' token health. Off when not given.
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<String>,
}

pub async fn run(path: &Path, args: RunArgs) -> Result<ExitCode> {
    let config = Arc::new(open::config(path)?);
    let store = open::store(&config)?;
    let clock = match args.clock_start {
        Some(t) => Clock::driven(t, args.clock_speed),
        None => Clock::system(),
    };
    let mailer = match &config.smtp {
        Some(_) => Some(mail::Mailer::from_config(&config).map_err(anyhow::Error::msg)?),
        None => {
            if !config.subscriptions.is_empty() {
                crate::errln!("no [smtp] section: digest runs will fail until one is added");
            }
            None
        }
    };
    if let Some(m) = &args.metrics_listen {
        let at = pulse_server::telemetry::serve_metrics(m).await?;
        crate::errln!("metrics for Prometheus on http://{at}/metrics");
    }
    let daemon = Daemon::new(store.clone(), config.clone(), clock, mailer);
    crate::errln!(
        "Practice Pulse scheduler ({}): store {}, times in {}",
        daemon.holder,
        pulse_store::Store::describe(&store),
        config.scheduler.timezone
    );
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        super::serve::shutdown_signal().await;
        let _ = tx.send(true);
    });
    // One line per event, timestamped, on stderr (JSON with --log-format json).
    let observer = |line: &str| tracing::info!("{line}");
    daemon.run(rx, &observer).await.map_err(anyhow::Error::msg)?;
    crate::errln!("stopped");
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Only this tenant's jobs.
    #[arg(long)]
    tenant: Option<String>,
    /// The digest week to report deliveries for: an ISO week (2018-W10) or any day in it. Default: the last whole
    /// week, naming who is interrupted, waiting and given up; with --week every recipient is named with their state.
    #[arg(long)]
    week: Option<String>,
}

pub async fn status(path: &Path, args: StatusArgs) -> Result<ExitCode> {
    let config = open::config(path)?;
    let store = open::store(&config)?;
    let access = match &args.tenant {
        Some(t) => config.operator_access().analyst(t).map_err(|e| anyhow::anyhow!("{e}"))?,
        None => config.operator_access(),
    };
    let jobs = scheduler::status(&store, &config, &access, Utc::now()).await.map_err(anyhow::Error::msg)?;
    if jobs.is_empty() {
        crate::outln!(
            "no scheduled jobs: declare tenants (ingest) and [[subscription]] lists (digests) in {}",
            path.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    crate::outln!(
        "{:<28} {:<14} {:<12} {:<26} {:<26} {}",
        "job",
        "schedule",
        "last",
        "last run for",
        "next run",
        "detail"
    );
    for j in &jobs {
        let (state, tick, detail) = match &j.truth {
            Some(s) => (s.state.as_str(), scheduler::local(&config, s.tick), s.detail.as_str()),
            None => ("never run", String::new(), ""),
        };
        crate::outln!(
            "{:<28} {:<14} {:<12} {:<26} {:<26} {}",
            j.job,
            j.schedule,
            state,
            tick,
            j.next.map(|t| scheduler::local(&config, t)).unwrap_or_default(),
            detail
        );
    }
    // The latest week's deliveries per list.
    for sub in config.subscriptions.iter().filter(|s| args.tenant.as_deref().is_none_or(|t| t == s.tenant.as_str())) {
        let week = match &args.week {
            Some(w) => digest::parse_week(w).map_err(anyhow::Error::msg)?,
            None => digest::last_whole_week(Utc::now().with_timezone(&config.scheduler.tz()).date_naive()),
        };
        let history = delivery::history(&store, &config, &sub.name, week).await.map_err(anyhow::Error::msg)?;
        let mut counts = std::collections::BTreeMap::<String, usize>::new();
        let mut named = Vec::new();
        // Once the next week's digest is due, a recipient still deferred for this week is no longer owed.
        let superseded = Utc::now() >= delivery::next_digest_due(&config, week);
        for (recipient, steps) in &history {
            if let Some(last) = steps.last() {
                let state = match last.state.as_str() {
                    "pending" => "pending (cut off mid-send, or in flight now)",
                    "failed" if superseded => "not sent (still deferred when the next week's digest was due)",
                    "failed" => "waiting (deferred by the mail server; retried)",
                    s => s,
                };
                *counts.entry(state.to_owned()).or_default() += 1;
                // With --week, everyone by name (sent too); otherwise only who needs a look.
                if state != "sent" || args.week.is_some() {
                    named.push(format!(
                        "    {recipient}: {state}{}",
                        if last.detail.is_empty() { String::new() } else { format!(" ({})", last.detail) }
                    ));
                }
            }
        }
        let counts: Vec<String> = counts.iter().map(|(k, v)| format!("{v} {k}")).collect();
        crate::outln!(
            "list {} (week ending {week}): {}",
            sub.name,
            if counts.is_empty() { "nothing sent yet".into() } else { counts.join(", ") }
        );
        for line in named {
            crate::outln!("{line}");
        }
        if history.values().any(|s| s.last().is_some_and(|l| l.state == "pending" || l.state == "interrupted")) {
            crate::outln!(
                "    resend the interrupted (they may already have it): pulse digest send --list {} --week {week} --resend-interrupted",
                sub.name
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
