//! Ingest from the configuration: which pages, with which tokens, and what the run's outcome means.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use chrono::NaiveDate;
use pulse_config::Config;
use pulse_domain::pacific_today;
use pulse_ingest::{GraphClient, IngestOptions, Ingester, PlanOptions, RunRecordPlace, RunReport, Target};
use pulse_store::Store;

use crate::open;

/// What to ingest.
#[derive(Debug, Clone, Default)]
pub struct IngestRequest {
    /// Only these tenants. Empty: every configured tenant.
    pub tenants: Vec<String>,
    /// Where pages without checkpoints start. Default: 90 days before `today`.
    pub since: Option<NaiveDate>,
    /// The first Pacific-time day that is not complete yet. Default: today in US-Pacific time.
    pub today: Option<NaiveDate>,
    pub lookback_days: i64,
    pub concurrency: usize,
    /// How long the store may stay unreachable before the run stops (default two minutes).
    pub store_retry_for: Option<Duration>,
}

/// How a run ended, in the terms an operator (and an exit code) needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every page ingested (possibly with nothing due).
    Clean,
    /// Some page failed, needs re-authorisation, or was skipped for want of a token.
    PagesFailed,
    /// The store went away: the run stopped, acknowledged data is kept.
    StoreUnavailable,
}

impl Outcome {
    pub fn of(report: &RunReport, skipped: bool) -> Self {
        if report.store_error.is_some() {
            Outcome::StoreUnavailable
        } else if report.is_clean() && !skipped {
            Outcome::Clean
        } else {
            Outcome::PagesFailed
        }
    }

    /// The process exit code: 0 clean, 1 pages failed, 3 store unavailable.
    pub fn exit_code(self) -> u8 {
        match self {
            Outcome::Clean => 0,
            Outcome::PagesFailed => 1,
            Outcome::StoreUnavailable => 3,
        }
    }
}

/// A finished run with everything a surface shows about it.
pub struct IngestRun {
    pub report: RunReport,
    pub record: RunRecordPlace,
    /// Pages left out before the run (no usable token), with why.
    pub skipped: Vec<String>,
    pub outcome: Outcome,
}

impl IngestRun {
    /// The closing lines: totals, why nothing was stored (when it was not), where the record is.
    pub fn closing(&self) -> String {
        let r = &self.report;
        let mut out = format!(
            "run {}: {} requests, {} rows written in {:.1}s\n",
            r.run_id,
            r.requests,
            r.rows_written,
            (r.finished_at - r.started_at).num_milliseconds() as f64 / 1000.0
        );
        if let Some(why) = r.empty_reason() {
            out.push_str(&format!("{why}\n"));
        }
        match &self.record {
            RunRecordPlace::Store => {}
            RunRecordPlace::File(p) => out.push_str(&format!(
                "the store could not take the run record, so it is in {} (nothing else was lost: checkpoints never \
                 run ahead of stored data); start the store and run `pulse ingest` again\n",
                p.display()
            )),
            RunRecordPlace::Lost(why) => out.push_str(&format!("the run record could not be saved: {why}\n")),
        }
        out
    }
}

/// Pages of the selected tenants with a usable token; the others are returned with the reason. A page's token comes
/// from the vault when it has one there (a page connected through an invitation, or imported), else from the
/// config's secret reference. Pages connected through an invitation that the config does not list are ingested
/// too, for the practice they were connected for.
pub async fn targets<S: Store>(store: &S, config: &Config, tenants: &[String]) -> Result<(Vec<Target>, Vec<String>)> {
    let access = config.operator_access();
    let scopes = if tenants.is_empty() {
        access.write_scopes()
    } else {
        tenants.iter().map(|t| access.write_scope(t)).collect::<Result<Vec<_>, _>>()?
    };
    let vault = crate::vault::Vault::from_config(config).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut out = Vec::new();
    let mut skipped = Vec::new();
    let mut orphans = Vec::new();
    for scope in scopes {
        let tenant = config.tenant(scope.tenant()).context("tenant vanished from config")?;
        let mut vaulted = match &vault {
            Some(v) => crate::vault::tokens(store, v, scope.read()).await.map_err(|e| anyhow::anyhow!("{e}"))?,
            None => Default::default(),
        };
        let mut practices_of_vaulted = match &vault {
            Some(_) => crate::vault::entries(store, scope.read())
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?
                .into_iter()
                .map(|(page, e)| (page, e.practice))
                .collect(),
            None => std::collections::BTreeMap::new(),
        };
        let mut push = |practice: &pulse_domain::PracticeCode, page: &pulse_domain::PageId, token| match token {
            Ok(token) => {
                out.push(Target { scope: scope.clone(), practice: practice.clone(), page: page.clone(), token })
            }
            Err(why) => skipped.push(format!("page {page} (practice {practice}, tenant {scope}): {why}")),
        };
        for practice in &tenant.practices {
            for page in &practice.pages {
                practices_of_vaulted.remove(page.id.as_str());
                let token = match (vaulted.remove(page.id.as_str()), &page.token) {
                    (Some(t), _) => t.map_err(|why| format!("the vault: {why}")),
                    (None, None) => {
                        Err("no token in the vault and no token reference (send an invitation: `pulse pages invite`)"
                            .to_owned())
                    }
                    (None, Some(r)) => config.resolve(r).map_err(|e| format!("{e} ({})", r.describe())),
                };
                push(&practice.code, &page.id, token);
            }
        }
        // Connected through an invitation, not (yet) in the config.
        for (page, practice) in practices_of_vaulted {
            let Some(token) = vaulted.remove(&page) else { continue };
            let (Ok(page_id), Some(p)) =
                (page.parse::<pulse_domain::PageId>(), tenant.practices.iter().find(|p| p.code.as_str() == practice))
            else {
                orphans.push(format!(
                    "page {page} (tenant {scope}): in the vault for practice {practice}, which the config no longer lists"
                ));
                continue;
            };
            push(&p.code, &page_id, token.map_err(|why| format!("the vault: {why}")));
        }
    }
    skipped.extend(orphans);
    Ok((out, skipped))
}

/// Runs one ingest as configured. `on_start` is told where from and into what, before the first call.
pub async fn run(config: &Config, request: &IngestRequest, on_start: impl FnOnce(&str)) -> Result<IngestRun> {
    let store = open::store(config)?;
    let (targets, skipped) = targets(&store, config, &request.tenants).await?;
    if targets.is_empty() {
        bail!("no page has a usable token, so there is nothing to ingest; `pulse config check` lists why");
    }
    let app_secret = match &config.graph.app_secret {
        Some(r) => Some(config.resolve(r).with_context(|| format!("graph.app_secret ({})", r.describe()))?),
        None => None,
    };
    let today = request.today.unwrap_or_else(pacific_today);
    let backfill_from = request.since.unwrap_or(today - chrono::Duration::days(90));
    let plan = PlanOptions {
        lookback_days: request.lookback_days.max(1),
        ..PlanOptions::backfill(config.graph.version, today, backfill_from)
    };
    let mut opts = IngestOptions::new(plan);
    opts.concurrency = request.concurrency.max(1);
    if let Some(d) = request.store_retry_for {
        opts.store_retry_for = d;
    }
    opts.fallback_record_dir = Some(config.base_dir().join("pulse-runs"));
    let client = GraphClient::new(&config.graph.base_url, config.graph.version, app_secret, Duration::from_secs(60))?;
    on_start(&format!("ingesting {} pages from {} into {}", targets.len(), client.host(), store.describe()));
    let mut tokens: std::collections::BTreeMap<String, (usize, usize)> = std::collections::BTreeMap::new();
    for t in &targets {
        tokens.entry(t.scope.as_str().to_owned()).or_default().0 += 1;
    }
    let (report, record) = match Ingester::new(store, client, opts).run(targets).await {
        Ok(ran) => ran,
        Err(e) => {
            // The run could not start (the store refused its checkpoints, the client could not be built).
            metrics::counter!("pulse_ingest_runs_total", "outcome" => "error").increment(1);
            return Err(e.into());
        }
    };
    let outcome = Outcome::of(&report, !skipped.is_empty());
    record_metrics(&report, outcome, tokens);
    Ok(IngestRun { report, record, skipped, outcome })
}

/// The run's outcome and each tenant's token health, for `/metrics`: pages whose token was used, and of those, pages
/// whose token Meta rejected.
fn record_metrics(
    report: &RunReport,
    outcome: Outcome,
    mut tokens: std::collections::BTreeMap<String, (usize, usize)>,
) {
    let outcome = match outcome {
        Outcome::Clean => "clean",
        Outcome::PagesFailed => "pages_failed",
        Outcome::StoreUnavailable => "store_unavailable",
    };
    metrics::counter!("pulse_ingest_runs_total", "outcome" => outcome).increment(1);
    for r in &report.reauth {
        tokens.entry(r.tenant.clone()).or_default().1 += 1;
    }
    for (tenant, (checked, rejected)) in tokens {
        metrics::gauge!("pulse_page_tokens_checked", "tenant" => tenant.clone()).set(checked as f64);
        metrics::gauge!("pulse_page_tokens_rejected", "tenant" => tenant).set(rejected as f64);
    }
}
