//! Pipelines from the configuration: campaigns and registered patients, which tenants, which range and which
//! report variant, and a summary for people.

use std::fmt::Write as _;

use anyhow::{Result, bail};
use chrono::NaiveDate;
use pulse_config::{CampaignConfig, Config};
use pulse_config::{TenantScope, WriteScope};
pub use pulse_pipelines::campaign::Campaign;
use pulse_pipelines::campaign::Matcher;
use pulse_pipelines::jobs::{self, JobInput, JobSummary};
use pulse_pipelines::registered::{self, Registered};
use pulse_store::{ReportVariant, Store};

use crate::open;
use crate::text::{bar, sparkline, thousands};

/// What to compute.
#[derive(Debug, Clone, Default)]
pub struct JobsRequest {
    /// Only these tenants. Empty: every configured tenant.
    pub tenants: Vec<String>,
    /// First day of the report range. Default: the first day with facts (all history).
    pub from: Option<NaiveDate>,
    /// Last day. Default: the last day ingested for the tenant.
    pub to: Option<NaiveDate>,
    /// Recompute every report from all facts, even when the previous run's reports could be updated incrementally.
    pub full: bool,
    /// Which copy of the reports to write: `main`, or a name. Default: `main` for the default range, and
    /// `FROM..TO` when a range is given, so a narrower run never replaces the reports analysts read.
    pub variant: Option<String>,
}

impl JobsRequest {
    pub fn variant(&self, from: NaiveDate, to: NaiveDate) -> Result<ReportVariant> {
        Ok(match (&self.variant, self.from.is_some() || self.to.is_some()) {
            (Some(v), _) if v == "main" => ReportVariant::main(),
            (Some(v), _) => ReportVariant::named(v)?,
            (None, true) => {
                let from = if self.from.is_some() { from.to_string() } else { "start".to_owned() };
                ReportVariant::named(&format!("{from}..{to}"))?
            }
            (None, false) => ReportVariant::main(),
        })
    }
}

/// One tenant's outcome.
pub enum TenantJob {
    Done {
        summary: Box<JobSummary>,
        from: NaiveDate,
        to: NaiveDate,
    },
    /// Nothing ingested yet (and no range given).
    NothingIngested {
        tenant: String,
    },
    Failed {
        tenant: String,
        error: anyhow::Error,
    },
}

impl TenantJob {
    /// What went wrong, with what to do, for a tenant whose jobs did not run.
    pub fn problem(&self) -> Option<String> {
        match self {
            TenantJob::Done { .. } => None,
            TenantJob::NothingIngested { tenant } => Some(format!(
                "tenant {tenant}: nothing ingested yet; run `pulse ingest` first (or pass --from and --to)"
            )),
            TenantJob::Failed { tenant, error } => Some(format!("tenant {tenant}: {error:#}")),
        }
    }
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

/// Runs the pipelines for each requested tenant, on the store the config names.
pub async fn run(config: &Config, request: &JobsRequest) -> Result<Vec<TenantJob>> {
    let store = open::store(config)?;
    run_on(&store, config, request).await
}

/// Runs the pipelines for each requested tenant on `store`: incremental runs several tenants at a time, full runs one
/// by one ([`jobs::run_each`]); answers in the order the tenants were asked.
pub async fn run_on<S: Store + Clone + 'static>(
    store: &S,
    config: &Config,
    request: &JobsRequest,
) -> Result<Vec<TenantJob>> {
    let access = config.operator_access();
    let scopes = if request.tenants.is_empty() {
        access.write_scopes()
    } else {
        request.tenants.iter().map(|t| access.write_scope(t)).collect::<Result<Vec<_>, _>>()?
    };
    if let (Some(f), Some(t)) = (request.from, request.to)
        && t < f
    {
        bail!("--from {f} is after --to {t}");
    }
    let registered = registered_for(config)?;
    // Each tenant's input first (its last ingested day, whether the previous run allows an incremental one).
    let mut out: Vec<Option<TenantJob>> = Vec::new();
    let mut inputs = Vec::new();
    // A bad variant name is the request's fault, not a tenant's: refused before any tenant.
    request.variant(request.from.unwrap_or(jobs::HISTORY_START), request.to.unwrap_or(jobs::HISTORY_START))?;
    let mut failures = Vec::new();
    for scope in scopes {
        let tenant = scope.to_string();
        match prepare(store, config, request, scope, registered.as_ref()).await {
            Ok(Some(input)) => {
                out.push(None);
                inputs.push(input);
            }
            Ok(None) => out.push(Some(TenantJob::NothingIngested { tenant })),
            Err(error) => {
                failures.push(out.len());
                out.push(Some(TenantJob::Failed { tenant, error }));
            }
        }
    }
    // One tenant whose checkpoints, campaigns or previous run cannot be read fails alone and the others run; when
    // none could be prepared (the store is unreachable, or the only tenant asked failed), the run fails as a whole,
    // so a scheduler retries it.
    if !failures.is_empty() {
        if failures.len() == out.len() {
            let first = out.into_iter().flatten().find_map(|j| match j {
                TenantJob::Failed { error, .. } => Some(error),
                _ => None,
            });
            return Err(first.unwrap_or_else(|| anyhow::anyhow!("no tenant's run could be prepared")));
        }
        for i in failures {
            if let Some(TenantJob::Failed { tenant, error }) = out[i].take() {
                tracing::warn!(tenant, error = %format!("{error:#}"), "a tenant's run could not be prepared");
                metrics::counter!("pulse_report_jobs_total", "tenant" => tenant.clone(), "outcome" => "failed")
                    .increment(1);
                let error = error.context(
                    "its run could not be prepared (its checkpoints, campaigns or previous run were not read); the \
                     other tenants' runs went ahead",
                );
                out[i] = Some(TenantJob::Failed { tenant, error });
            }
        }
    }
    attach_donor_pool(store, config, &mut inputs).await;
    let asked: Vec<(String, NaiveDate, NaiveDate)> =
        inputs.iter().map(|i| (i.scope.to_string(), i.from, i.to)).collect();
    let mut results = jobs::run_each(store, inputs).await.into_iter().zip(asked);
    Ok(out
        .into_iter()
        .map(|job| {
            job.unwrap_or_else(|| {
                let ((result, seconds), (tenant, from, to)) = results.next().expect("a result for each input");
                let outcome = if result.is_ok() { "ok" } else { "failed" };
                metrics::counter!("pulse_report_jobs_total", "tenant" => tenant.clone(), "outcome" => outcome)
                    .increment(1);
                metrics::histogram!("pulse_report_job_duration_seconds", "tenant" => tenant.clone()).record(seconds);
                match result {
                    Ok(summary) => {
                        let from = summary.from.unwrap_or(from);
                        TenantJob::Done { summary: Box::new(summary), from, to }
                    }
                    Err(e) => TenantJob::Failed { tenant, error: e.into() },
                }
            })
        })
        .collect())
}

/// Gives the runs of tenants in the national donor pool (`donor_pool = true`) what the pool holds: every pool
/// tenant's sums over its pages around those runs' campaigns (see `pulse_pipelines::donors`). A pool tenant that cannot
/// be read leaves the pool out of this run for everyone (a pool silently missing a tenant would move every estimate
/// that uses it without saying so): every campaign of a pool tenant is then recomputed without it, so a report never
/// mixes estimates with and without the pool, and its method says why.
async fn attach_donor_pool<S: Store>(store: &S, config: &Config, inputs: &mut [JobInput]) {
    let in_pool = |t: &pulse_domain::TenantId| config.tenant(t).is_some_and(|t| t.donor_pool);
    let campaigns: Vec<Campaign> =
        inputs.iter().filter(|i| in_pool(i.scope.tenant())).flat_map(|i| i.campaigns.iter().cloned()).collect();
    if campaigns.is_empty() {
        return;
    }
    let access = config.operator_access();
    let mut pool = jobs::DonorInput::default();
    for tenant in config.tenants.iter().filter(|t| t.donor_pool) {
        let read = match access.scope(tenant.id.as_str()) {
            Ok(scope) => pool.add_tenant(store, &scope, &campaigns).await.map_err(anyhow::Error::from),
            Err(e) => Err(e.into()),
        };
        if let Err(e) = read {
            tracing::warn!(
                tenant = tenant.id.as_str(),
                error = %format!("{e:#}"),
                "the national donor pool is left out of this run: a tenant in it could not be read"
            );
            pool = jobs::DonorInput {
                unavailable: Some("a tenant in it could not be read; the next run tries again".to_owned()),
                ..jobs::DonorInput::default()
            };
            break;
        }
    }
    let pool = std::sync::Arc::new(pool);
    for input in inputs.iter_mut().filter(|i| in_pool(i.scope.tenant())) {
        input.donors = Some(pool.clone());
    }
}

/// One tenant's job input: its range, campaigns and whether the previous run allows an incremental one; `None`
/// when nothing is ingested yet and no range was given.
async fn prepare<S: Store>(
    store: &S,
    config: &Config,
    request: &JobsRequest,
    scope: WriteScope,
    registered: Option<&Registered>,
) -> Result<Option<JobInput>> {
    let to = match request.to {
        Some(t) => t,
        None => match store.load_checkpoints(&scope).await?.iter().map(|c| c.through_day).max() {
            Some(d) => d,
            None => return Ok(None),
        },
    };
    let mut from = request.from.unwrap_or(jobs::HISTORY_START);
    // The config's campaigns and those registered through the API or dashboard (not withdrawn).
    let campaigns = campaigns_for(&crate::campaigns::effective(store, config, &scope).await?, &scope);
    let mut inputs_of = inputs_digest(&campaigns, registered);
    // Joining or leaving the donor pool changes the campaigns' counterfactuals: the next run is full.
    if config.tenant(scope.tenant()).is_some_and(|t| t.donor_pool) {
        inputs_of.push_str("+pool");
    }
    let variant = request.variant(from, to)?;
    // The main reports over all history are updated incrementally when the previous run allows it.
    let incremental = if request.full || request.from.is_some() || !variant.is_main() {
        None
    } else {
        match jobs::incremental_since_previous(store, &scope, &inputs_of, to).await? {
            Some((history_from, incremental)) => {
                from = history_from;
                Some(incremental)
            }
            None => None,
        }
    };
    Ok(Some(JobInput {
        scope,
        from,
        to,
        campaigns,
        registered: registered.cloned(),
        variant,
        inputs: inputs_of,
        incremental,
        donors: None,
    }))
}

/// A digest of what, besides facts, the reports are computed from: the campaigns, the registered patients, and the
/// version of the reports' computation (a new one makes the next run full, so no row an older version computed is
/// carried over by an incremental run).
pub fn inputs_digest(campaigns: &[Campaign], registered: Option<&Registered>) -> String {
    use sha2::Digest as _;
    let text = format!("{}\n{campaigns:?}\n{registered:?}", pulse_pipelines::jobs::REPORTS_VERSION);
    sha2::Sha256::digest(text.as_bytes()).iter().take(12).map(|b| format!("{b:02x}")).collect()
}

/// What a pipelines run computed, for people: headline figures with bars and sparklines.
pub fn summary_text(s: &JobSummary, from: NaiveDate, to: NaiveDate) -> String {
    let mut out = String::new();
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "── tenant {}: reports for {from} to {to}{}, {} ({} facts, {} pages, {} weeks computed, {:.1}s)",
        s.tenant,
        if s.variant.is_main() { String::new() } else { format!(" as variant `{}`", s.variant.as_str()) },
        s.mode,
        s.facts,
        s.pages,
        s.weeks,
        s.seconds
    );
    if let (Some(e), Some(r)) = (s.median_weekly_engaged, s.median_weekly_reach) {
        let _ = writeln!(
            out,
            "   reach: a typical page reaches {} people and engages {} a week (medians of the API's weekly uniques)",
            thousands(r),
            thousands(e)
        );
    }
    if let Some((week, gross)) = s.latest_week {
        let _ = writeln!(
            out,
            "   week ending {week}: gross reach across pages {} (people following several pages count more than once)",
            thousands(gross)
        );
    }
    if !s.age_shares.is_empty() {
        let _ = writeln!(out, "   who engages ({}):", s.age_source);
        let max = s.age_shares.iter().filter_map(|(_, v)| *v).fold(0.0, f64::max);
        for (band, share) in &s.age_shares {
            match share {
                Some(v) => {
                    let _ = writeln!(out, "     {band:>6} {:<30} {:>5.1}%", bar(v / max.max(1e-9), 30), v * 100.0);
                }
                None => {
                    let _ = writeln!(out, "     {band:>6} {:<30}   n/a (suppressed)", "");
                }
            }
        }
    } else {
        let _ = writeln!(out, "   who engages: {}", s.age_source);
    }
    for c in &s.campaigns {
        let label = format!("{} · {}", c.campaign, c.metric);
        match &c.estimate {
            Some(e) => {
                let interval = e.interval.map_or("no interval".to_owned(), |i| {
                    format!("{:.0}% interval {} to {}", i.level * 100.0, thousands(i.lo), thousands(i.hi))
                });
                let lift = if e.counterfactual > 0.0 {
                    format!(", lift {:+.0}%", 100.0 * e.effect / e.counterfactual)
                } else {
                    String::new()
                };
                let posts = c
                    .post_lifetime
                    .map_or(String::new(), |v| format!("; its {} posts: {} lifetime", c.posts, thousands(v)));
                let _ = writeln!(
                    out,
                    "   campaign {label}: {}{} over the window ({interval}{lift}, p={:.3}) on {} pages{posts}",
                    if e.effect >= 0.0 { "+" } else { "" },
                    thousands(e.effect),
                    e.p_value.unwrap_or(f64::NAN),
                    c.pages
                );
                let obs: Vec<f64> = e.series.iter().map(|x| x.1).collect();
                let cf: Vec<f64> = e.series.iter().map(|x| x.2).collect();
                let _ = writeln!(out, "     observed       {}", sparkline(&obs));
                let _ = writeln!(out, "     counterfactual {}", sparkline(&cf));
            }
            None => {
                let _ = writeln!(out, "   campaign {label}: not computed: {}", c.note);
            }
        }
    }
    if s.quality_issues > 0 {
        let _ = writeln!(out, "   data quality: {} issues (see `pulse report quality`)", s.quality_issues);
    } else {
        let _ = writeln!(out, "   data quality: no gaps, stale pages or impossible values");
    }
    let rows: usize = s.rows_written.values().sum();
    let _ = writeln!(out, "   wrote {rows} report rows into {} tables", s.rows_written.len());
    out
}
