//! Campaign planning: before a campaign, how large an effect it could detect with the days and share of pages
//! planned, and, for a target effect, which durations and shares would detect it. From the tenant's own daily history
//! (and the national donor pool's, for a tenant in it)
//! ([`pulse_pipelines::campaign::plan`]: the estimator and interval the campaign will be judged by, run on the
//! placebo windows before it). Calibration is measured in `pipelines/tests/uplift.rs`.

use std::fmt::Write as _;

use chrono::{Duration, NaiveDate};
use pulse_config::{Access, Config};
use pulse_domain::Period;
use pulse_pipelines::campaign::{self, FIT_DAYS, MAX_PLACEBO_WEEKS, PLAN_POWER, Plan, Series};
use pulse_pipelines::jobs::CAMPAIGN_METRICS;
use pulse_store::{FactFilter, Store};

use crate::error::{AppError, AppResult};
use crate::{jobs, open, text};

/// The durations (days) and shares of pages a plan for a target effect compares.
pub const DAYS_OPTIONS: &[u32] = &[1, 2, 3, 7, 14];
pub const SHARE_OPTIONS: &[f64] = &[0.25, 0.5, 0.75, 1.0];

/// The largest target effect a plan takes (beyond it the options' expected effects lose their meaning).
pub const MAX_TARGET: f64 = 1e12;

/// Plans computed at once, process-wide.
fn plan_permits() -> std::sync::Arc<tokio::sync::Semaphore> {
    static PERMITS: std::sync::OnceLock<std::sync::Arc<tokio::sync::Semaphore>> = std::sync::OnceLock::new();
    PERMITS
        .get_or_init(|| {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 4);
            std::sync::Arc::new(tokio::sync::Semaphore::new(cores))
        })
        .clone()
}

#[derive(Debug, Clone)]
pub struct PlanRequest {
    pub tenant: String,
    pub start: NaiveDate,
    pub days: u32,
    /// The share of the tenant's pages taking part, in (0, 1].
    pub share: f64,
    /// `views`, `reach`, `engagements` or `video_views`.
    pub metric: String,
    /// The effect expected over the planned days and share (a total over the participating pages and days, e.g.
    /// 20,000 views). Other durations and shares are compared at the same effect per participating page and day.
    pub target: Option<f64>,
}

/// An option compared for a target: its plan and the effect expected of it (the target's effect per participating
/// page and day, times its own pages and days).
#[derive(Debug, Clone)]
pub struct PlanOption {
    pub plan: Plan,
    pub expected: f64,
}

impl PlanOption {
    pub fn detects(&self) -> bool {
        self.expected >= self.plan.mde
    }
}

/// A plan, and for a target the options compared and the smallest that detects it.
#[derive(Debug, Clone)]
pub struct PlanAnswer {
    pub tenant: String,
    pub metric: String,
    pub plan: Plan,
    pub target: Option<f64>,
    pub options: Vec<PlanOption>,
    /// The option with the fewest participating page-days (then the fewest days) whose expected effect is at least
    /// its MDE.
    pub needed: Option<PlanOption>,
}

/// What a pool tenant's plan was offered of the national donor pool.
enum PoolRead {
    NotInPool,
    Pool(campaign::Donors),
    /// Fewer than its thresholds of other tenants' pages on the days the plan needs.
    TooSmall,
    Unavailable(String),
}

/// The national donor pool for `tenant`'s plan on one metric over [from, to]: every other pool tenant's blocks (sums
/// over its pages, never rows: [`pulse_pipelines::donors`]). Nobody has taken part in a campaign that has not started,
/// so no tenant is left out but the asking one. A pool tenant that cannot be read leaves the pool out of the plan.
async fn donor_pool<S: Store>(
    store: &S,
    config: &Config,
    tenant: &str,
    metric: &str,
    from: NaiveDate,
    to: NaiveDate,
) -> PoolRead {
    let access = config.operator_access();
    let mut input = pulse_pipelines::jobs::DonorInput::default();
    for other in config.tenants.iter().filter(|t| t.donor_pool && t.id.as_str() != tenant) {
        // Read access only: the plan may be an analyst's request, and only the blocks' sums leave this function.
        let read = match access.scope(other.id.as_str()) {
            Ok(scope) => input.add_blocks(store, &scope, from, to, &[metric]).await.map_err(anyhow::Error::from),
            Err(e) => Err(e.into()),
        };
        if let Err(e) = read {
            tracing::warn!(
                tenant = other.id.as_str(),
                error = %format!("{e:#}"),
                "the national donor pool is left out of this plan: a tenant in it could not be read"
            );
            return PoolRead::Unavailable("a tenant in it could not be read; planning again tries again".to_owned());
        }
    }
    let none = std::collections::BTreeSet::new();
    match input.blocks.get(metric).and_then(|b| pulse_pipelines::donors::pool(b, tenant, &none)) {
        Some(d) => PoolRead::Pool(d),
        None => PoolRead::TooSmall,
    }
}

/// A plan for the operator (the CLI).
pub async fn plan(config: &Config, request: &PlanRequest) -> AppResult<PlanAnswer> {
    let store = open::store(config)?;
    plan_on(&store, config, &config.operator_access(), request).await
}

/// Checks a plan request's own fields (not its tenant or history): each wrong one is a 400 naming it. The metric's
/// store name when they are right.
pub fn check(request: &PlanRequest) -> AppResult<pulse_domain::CanonicalMetric> {
    let bad = |field: &str, message: String| AppError::bad_request(message).at(field.to_owned());
    let Some((_, metric, _)) = CAMPAIGN_METRICS.iter().find(|(name, _, _)| *name == request.metric) else {
        let names: Vec<&str> = CAMPAIGN_METRICS.iter().map(|(n, _, _)| *n).collect();
        return Err(bad(
            "metric",
            format!("metric `{}` is not a campaign metric: use one of {}", request.metric, names.join(", ")),
        ));
    };
    if !(request.share > 0.0 && request.share <= 1.0) {
        return Err(bad(
            "share",
            format!("share {} must be a share of the pages above 0 and at most 1 (0.5 is half of them)", request.share),
        ));
    }
    if request.days == 0 || request.days > 28 {
        return Err(bad("days", format!("days {} must be from 1 to 28", request.days)));
    }
    if request.target.is_some_and(|t| !(t > 0.0 && t <= MAX_TARGET)) {
        return Err(bad(
            "target",
            format!(
                "target must be a positive effect of at most {} (a total over the participating pages and days, e.g. 20000)",
                text::thousands(MAX_TARGET)
            ),
        ));
    }
    Ok(*metric)
}

/// A plan for a caller: the tenant must be one `access` may read; bad input is a 400 naming its field.
pub async fn plan_on<S: Store>(
    store: &S,
    config: &Config,
    access: &Access,
    request: &PlanRequest,
) -> AppResult<PlanAnswer> {
    let metric = check(request)?;
    let scope = crate::tenant::resolve(access, Some(&request.tenant), "tenant", "name one of your tenants")?;
    // A plan reads over a year of the tenant's days (and of every other pool tenant's) and runs a few hundred placebo
    // fits: at most as many at once as the machine has cores, the reads included (a caller that went away leaves its
    // plan running, holding its permit).
    let permit = plan_permits().acquire_owned().await.map_err(|e| AppError::from(anyhow::anyhow!("{e}")))?;
    // The longest plan's history: its placebo windows and each one's fit period.
    let longest = DAYS_OPTIONS.iter().copied().chain([request.days]).max().unwrap_or(request.days);
    let back = i64::from(7 * MAX_PLACEBO_WEEKS + FIT_DAYS) + i64::from(longest) + 7;
    let filter = FactFilter {
        metrics: vec![metric],
        periods: vec![Period::Day],
        from: Some(request.start - Duration::days(back)),
        to: Some(request.start - Duration::days(1)),
        ..FactFilter::default()
    };
    let facts = store.read_page_insights(&scope, &filter).await?;
    let mut series = Series::new();
    for f in facts.iter().filter(|f| f.breakdown.is_empty()) {
        series.entry(f.page.to_string()).or_default().insert(pulse_domain::day_number(f.day), f.value);
    }
    if series.is_empty() {
        return Err(AppError::bad_request(format!(
            "tenant {scope} has no daily {} before {}: its pages' history has not been ingested (an operator runs \
                 `pulse ingest --since` far enough back)",
            request.metric, request.start
        ))
        .at("start"));
    }
    // A tenant in the national donor pool will have its campaign's estimate offered the pool: so has its plan.
    let donors = if config.tenant(scope.tenant()).is_some_and(|t| t.donor_pool) {
        donor_pool(
            store,
            config,
            scope.as_str(),
            request.metric.as_str(),
            request.start - Duration::days(back),
            request.start - Duration::days(1),
        )
        .await
    } else {
        PoolRead::NotInPool
    };
    // Other campaigns' windows are kept out of the placebo windows, as the estimate will keep them.
    let exclude: Vec<(i32, i32)> =
        jobs::campaigns_for(&crate::campaigns::effective(store, config, &scope).await?, &scope)
            .iter()
            .map(campaign::Campaign::window)
            .collect();
    // The same tenant and start give the same plan (the draws of participating pages are seeded by them).
    let seed = format!("{}|{}", request.tenant, request.start)
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    // The plans are computation: off the async workers, still holding the permit.
    let (start, days, share, target, metric_name) =
        (request.start, request.days, request.share, request.target, request.metric.clone());
    let tenant = scope.to_string();
    let (asked, options) = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let pool = match &donors {
            PoolRead::Pool(d) => Some(d),
            _ => None,
        };
        let asked = campaign::plan_with_donors(&series, pool, start, days, share, &exclude, seed).map_err(|e| {
            AppError::bad_request(format!("tenant {tenant}, {metric_name} over {days} days from {start}: {e}"))
                .at("start")
        })?;
        let mut options = Vec::new();
        if let Some(target) = target {
            let per_page_day = target / (asked.participants as f64 * f64::from(asked.days));
            for &d in DAYS_OPTIONS {
                for &s in SHARE_OPTIONS {
                    // A duration the history cannot plan is left out, not a failure of the plan asked for.
                    if let Ok(p) = campaign::plan_with_donors(&series, pool, start, d, s, &exclude, seed) {
                        let expected = per_page_day * p.participants as f64 * f64::from(d);
                        options.push(PlanOption { plan: p, expected });
                    }
                }
            }
        }
        // Why a pool tenant's plan had no pool, in its method (as a campaign's estimate says it).
        let without = match &donors {
            PoolRead::Unavailable(why) => Some(format!(" (the national donor pool was left out: {why})")),
            PoolRead::TooSmall => Some(" (the national donor pool has too few other tenants' pages for it)".to_owned()),
            _ => None,
        };
        let (mut asked, mut options) = (asked, options);
        if let Some(why) = without {
            asked.method.push_str(&why);
            for o in &mut options {
                o.plan.method.push_str(&why);
            }
        }
        Ok::<_, AppError>((asked, options))
    })
    .await
    .map_err(|e| AppError::from(anyhow::anyhow!("the plan stopped: {e}")))??;
    let needed = options
        .iter()
        .filter(|o| o.detects())
        .min_by_key(|o| (o.plan.participants * o.plan.days as usize, o.plan.days))
        .cloned();
    Ok(PlanAnswer {
        tenant: scope.to_string(),
        metric: request.metric.clone(),
        plan: asked,
        target: request.target,
        options,
        needed,
    })
}

/// An interval's level in words: "95%", or with its decimal below 95% ("94.9%", never rounded up to 95).
pub fn level_words(level: f64) -> String {
    if level >= 0.95 { format!("{:.0}%", level * 100.0) } else { format!("{:.1}%", level * 100.0) }
}

/// What a target needs, in words: the smallest option that detects it, or that none does.
pub fn needed_words(a: &PlanAnswer) -> String {
    match &a.needed {
        Some(n) => format!(
            "Needed: {} day{} with {:.0}% of pages ({} taking part): {} expected against a minimum detectable {}.",
            n.plan.days,
            if n.plan.days == 1 { "" } else { "s" },
            n.plan.share * 100.0,
            n.plan.participants,
            text::thousands(n.expected),
            text::thousands(n.plan.mde)
        ),
        None => "None of these detects it: at that effect per page and day the campaign's interval would likely \
                 include zero."
            .into(),
    }
}

/// What a person reads: the plan asked for, and for a target the table of options with the first that detects it.
pub fn plan_text(a: &PlanAnswer) -> String {
    let p = &a.plan;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Campaign plan for {}: {} over {} day{} from {}, {:.0}% of {} pages taking part ({}).",
        a.tenant,
        a.metric,
        p.days,
        if p.days == 1 { "" } else { "s" },
        p.start,
        p.share * 100.0,
        p.pages,
        p.participants
    );
    let lift = if p.baseline > 0.0 {
        format!(", {:.0}% of their usual {}", 100.0 * p.mde / p.baseline, text::thousands(p.baseline))
    } else {
        String::new()
    };
    let _ = writeln!(
        out,
        "  Minimum detectable effect: {} {} added over the window by the participating pages{lift}.",
        text::thousands(p.mde),
        a.metric
    );
    let _ = writeln!(
        out,
        "  An effect that size is detected {:.0}% of the time by the {} interval the campaign will be judged by ({} placebo windows of the history before it).",
        PLAN_POWER * 100.0,
        level_words(p.level),
        p.placebos
    );
    let _ = writeln!(out, "  Method: {}.", p.method);
    let gap = (p.start - p.history_to).num_days() - 1;
    if gap > 7 {
        let _ = writeln!(
            out,
            "  The history ends on {}, {gap} days before the start: the weeks between have no placebo windows; plan again nearer the start.",
            p.history_to
        );
    }
    if let Some(target) = a.target {
        let _ = writeln!(
            out,
            "\nIf the campaign adds {} {} over {} days with {} pages ({} per page and day), by duration and share of pages: the effect expected / the minimum detectable (✓: detected at {:.0}% power):",
            text::thousands(target),
            a.metric,
            p.days,
            p.participants,
            text::thousands(target / (p.participants as f64 * f64::from(p.days))),
            PLAN_POWER * 100.0
        );
        let mut header = format!("  {:>6}", "days");
        for s in SHARE_OPTIONS {
            let _ = write!(header, " {:>20}", format!("{:.0}% of pages", s * 100.0));
        }
        let _ = writeln!(out, "{header}");
        for &d in DAYS_OPTIONS {
            let mut line = format!("  {d:>6}");
            for &s in SHARE_OPTIONS {
                let cell = a.options.iter().find(|o| o.plan.days == d && (o.plan.share - s).abs() < 1e-9).map_or_else(
                    || "n/a".to_owned(),
                    |o| {
                        let mark = if o.detects() { " ✓" } else { "  " };
                        format!("{} / {}{mark}", text::thousands(o.expected), text::thousands(o.plan.mde))
                    },
                );
                let _ = write!(line, " {cell:>20}");
            }
            let _ = writeln!(out, "{line}");
        }
        let _ = writeln!(out, "  {}", needed_words(a));
    }
    out
}

fn plan_value(p: &Plan) -> serde_json::Value {
    serde_json::json!({
        "start": p.start.to_string(),
        "days": p.days,
        "share": p.share,
        "pages": p.pages,
        "participants": p.participants,
        "mde": p.mde,
        "baseline": p.baseline,
        "power": PLAN_POWER,
        "level": p.level,
        "placebos": p.placebos,
        "method": p.method,
        "history_to": p.history_to.to_string(),
    })
}

fn option_value(o: &PlanOption) -> serde_json::Value {
    let mut v = plan_value(&o.plan);
    v["expected"] = serde_json::json!(o.expected);
    v["detected"] = serde_json::json!(o.detects());
    v
}

/// The plan as JSON: the plan asked for, and for a target the options compared and the first that detects it.
pub fn plan_json(a: &PlanAnswer) -> serde_json::Value {
    serde_json::json!({
        "tenant": a.tenant,
        "metric": a.metric,
        "plan": plan_value(&a.plan),
        "target": a.target,
        "options": a.options.iter().map(option_value).collect::<Vec<_>>(),
        "needed": a.needed.as_ref().map(option_value),
    })
}
