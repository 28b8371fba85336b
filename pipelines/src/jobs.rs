//! Runs the pipelines for one tenant: load facts (filters pushed into the store), compute off the async runtime,
//! write every report table.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use arrow::record_batch::RecordBatch;
use chrono::{Duration, NaiveDate};
use polars::prelude::*;
use pulse_config::{TenantScope, WriteScope};
use pulse_domain::{CanonicalMetric as M, Period as P, Post, PostInsightSnapshot};
use pulse_store::report::{
    AGE_BANDS, CAMPAIGN_SERIES, CAMPAIGN_UPLIFT, DATA_QUALITY, POST_PERFORMANCE, REACH_TENANT_WEEKLY, REACH_WEEKLY,
    REPORT_RUNS,
};
use pulse_store::{FactFilter, Fetched, PostFilter, ReportTable, ReportVariant, Store};

use crate::campaign::{self, Campaign, Estimate, Series};
use crate::frames::{self, from_day_number};
use crate::registered::Registered;
use crate::{PipelineError, Result, age_bands, posts, quality, reach};

/// Campaign metrics: (name in reports, page daily metric, post lifetime metric).
pub const CAMPAIGN_METRICS: &[(&str, M, M)] = &[
    ("views", M::PageViews, M::PostViews),
    ("reach", M::PageReach, M::PostReach),
    ("engagements", M::PageEngagements, M::PostEngagements),
    ("video_views", M::PageVideoViews, M::PostVideoViews),
];

/// The first day a report range can start: a run over "all history" asks from here, and its range starts on the
/// first day with facts.
pub const HISTORY_START: NaiveDate = NaiveDate::from_ymd_opt(2004, 2, 4).expect("a date");

/// Days after a campaign's window its posts' lifetime figures may still be re-fetched (the ingest snapshots a post
/// for 28 days after it was made).
pub const CAMPAIGN_SNAPSHOT_DAYS: i64 = 28;

/// The version of the reports' computation, in the inputs digest of every run: raise it when a change computes any
/// report row differently (a rule, a column), so the next run is full and no incremental run carries over a row the
/// previous version computed. 2: post performance updated incrementally, reports stored by month. 3: campaigns'
/// placebo windows are the newest 39 clear ones, up to 60 weeks back.
pub const REPORTS_VERSION: u32 = 3;

/// Days of history loaded before a campaign for its counterfactual and placebo windows: the oldest placebo window's
/// fit period, and a week's slack.
pub const CAMPAIGN_HISTORY_DAYS: i64 = (7 * campaign::MAX_PLACEBO_WEEKS + campaign::FIT_DAYS + 7) as i64;

pub struct JobInput {
    /// Jobs write report tables, so they need the operator's scope.
    pub scope: WriteScope,
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub campaigns: Vec<Campaign>,
    pub registered: Option<Registered>,
    /// Which copy of the reports to replace: the main one for the default range, a named one for a narrower run.
    pub variant: ReportVariant,
    /// Digest of the campaigns and registered patients (recorded with the run: a change makes the next run full).
    pub inputs: String,
    /// Recompute only what the facts fetched since the previous run touched, keeping the rest of the reports.
    pub incremental: Option<Incremental>,
    /// The national donor pool, when the tenant takes part in it (its campaigns are then recomputed by every run:
    /// other tenants' facts move the pool).
    pub donors: Option<Arc<DonorInput>>,
}

/// What an incremental run recomputes: the days of facts fetched since the previous run started.
#[derive(Debug, Clone)]
pub struct Incremental {
    pub changed: BTreeSet<NaiveDate>,
    /// When the changed days were asked for: this run's start, so facts fetched after it are the next run's.
    pub asked_at: chrono::DateTime<chrono::Utc>,
    /// What was fetched at or after this time is new to this run (posts and snapshots too).
    pub since: chrono::DateTime<chrono::Utc>,
    /// The last day of the previous run's reports: posts created after it are new to this run.
    pub previous_to: NaiveDate,
}

/// When the main reports can be updated incrementally: the previous main run's history start, and the days of
/// facts fetched since it started, or since an ingest run that finished after it started began (that run's
/// facts may have been written after the previous run read). `None` (a full run) when there is no previous run
/// record with a start, its inputs differ, or it reached past `to`.
pub async fn incremental_since_previous<S: Store>(
    store: &S,
    scope: &pulse_config::TenantScope,
    inputs: &str,
    to: NaiveDate,
) -> Result<Option<(NaiveDate, Incremental)>> {
    let runs = store.read_report(scope, &REPORT_RUNS, &ReportVariant::main()).await?;
    if runs.num_rows() == 0 {
        return Ok(None);
    }
    let text = |name: &str| {
        runs.column_by_name(name)
            .and_then(|c| c.as_any().downcast_ref::<arrow::array::StringArray>().map(|a| a.value(0).to_owned()))
            .unwrap_or_default()
    };
    let day = |name: &str| {
        runs.column_by_name(name)
            .and_then(|c| c.as_any().downcast_ref::<arrow::array::Date32Array>().map(|a| a.value(0)))
            .map(pulse_domain::from_day_number)
    };
    let (Ok(started), Some(range_from), Some(range_to)) =
        (chrono::DateTime::parse_from_rfc3339(&text("started_at")), day("range_from"), day("range_to"))
    else {
        return Ok(None);
    };
    if text("inputs") != inputs || range_to > to {
        return Ok(None);
    }
    let started = started.with_timezone(&chrono::Utc);
    let asked_at = chrono::Utc::now();
    let ingests = store.read_runs(scope).await?;
    let since =
        ingests.iter().filter(|r| r.finished_at >= started).map(|r| r.started_at).fold(started, |a, b| a.min(b));
    let mut changed = store.days_fetched_since(scope, Fetched::Facts, since).await?;
    // A backfill before the reports' first day: a full run (the history starts earlier now).
    if changed.first().is_some_and(|d| *d < range_from) {
        return Ok(None);
    }
    // Days after the previous run's range were not in it, whenever they were fetched.
    changed.extend(range_to.iter_days().skip(1).take_while(|d| *d <= to));
    Ok(Some((range_from, Incremental { changed, asked_at, since, previous_to: range_to })))
}

/// Seconds per phase of a run, each phase timed from the end of the one before.
struct Laps {
    phases: BTreeMap<&'static str, f64>,
    clock: Instant,
}

impl Laps {
    fn start() -> Self {
        Laps { phases: BTreeMap::new(), clock: Instant::now() }
    }

    fn lap(&mut self, phase: &'static str) {
        *self.phases.entry(phase).or_default() += self.clock.elapsed().as_secs_f64();
        self.clock = Instant::now();
    }
}

/// The error for a report thread that panicked, with the panic's message (a `&str` or `String` payload, as `panic!`
/// makes), as tokio's error for a panicked task would carry it.
fn panicked(what: &str, payload: Box<dyn std::any::Any + Send>) -> PipelineError {
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".into());
    PipelineError::Input(format!("{what} panicked: {message}"))
}

/// A future's output and the seconds it took to come.
async fn timed<T>(work: impl std::future::Future<Output = Result<T>>) -> Result<(T, f64)> {
    let clock = Instant::now();
    let out = work.await?;
    Ok((out, clock.elapsed().as_secs_f64()))
}

/// The Monday of `day`'s (Monday-Sunday) week.
fn monday_of(day: NaiveDate) -> NaiveDate {
    use chrono::Datelike;
    day - Duration::days(i64::from(day.weekday().num_days_from_monday()))
}

/// What an incremental run replaces: weeks ending, and windows ending, on or after `from`; facts are read from the
/// week before (for week-on-week change); campaigns whose history or window holds a changed day.
struct Plan {
    replace_from: NaiveDate,
    load_from: NaiveDate,
    campaigns: Vec<Campaign>,
    /// Pages with facts in the days read.
    loaded_pages: BTreeSet<String>,
    /// Every campaign's name, in the configured order.
    all_campaigns: Vec<String>,
    /// The last day of the run.
    to: NaiveDate,
}

impl Plan {
    /// `pooled`: the tenant's campaigns use the national donor pool, which other tenants' facts move, so every one
    /// is recomputed.
    fn new(inc: &Incremental, to: NaiveDate, campaigns: &[Campaign], pooled: bool) -> Plan {
        // Nothing changed still refreshes the last week: stale pages and the latest window are about now.
        let first = inc.changed.iter().copied().filter(|d| *d <= to).min().unwrap_or(to).min(to);
        let replace_from = monday_of(first);
        let estimate = campaigns
            .iter()
            .filter(|c| {
                let (ws, we) = c.window();
                // Its posts' lifetime figures are re-fetched for POST_SNAPSHOT_DAYS after they were made, with the
                // days of facts the same ingest writes: those days recompute it too.
                let (lo, hi) = (
                    from_day_number(ws) - Duration::days(CAMPAIGN_HISTORY_DAYS),
                    from_day_number(we) + Duration::days(campaign::SERIES_DAYS_AFTER.max(CAMPAIGN_SNAPSHOT_DAYS)),
                );
                pooled || inc.changed.iter().any(|d| *d >= lo && *d <= hi)
            })
            .cloned()
            .collect();
        Plan {
            replace_from,
            load_from: replace_from - Duration::days(7),
            campaigns: estimate,
            loaded_pages: BTreeSet::new(),
            all_campaigns: campaigns.iter().map(|c| c.name.clone()).collect(),
            to,
        }
    }
}

/// One campaign metric's headline.
#[derive(Debug, Clone)]
pub struct CampaignHeadline {
    pub campaign: String,
    pub metric: String,
    pub posts: usize,
    pub pages: usize,
    pub post_lifetime: Option<f64>,
    pub estimate: Option<Estimate>,
    pub note: String,
}

/// What a job run computed, for printing.
#[derive(Debug, Clone, Default)]
pub struct JobSummary {
    pub tenant: String,
    pub facts: usize,
    pub pages: usize,
    pub weeks: usize,
    pub median_weekly_engaged: Option<f64>,
    pub median_weekly_reach: Option<f64>,
    pub latest_week: Option<(NaiveDate, f64)>,
    pub age_source: String,
    /// (band, share) at tenant level.
    pub age_shares: Vec<(String, Option<f64>)>,
    pub campaigns: Vec<CampaignHeadline>,
    pub quality_issues: usize,
    pub rows_written: BTreeMap<&'static str, usize>,
    pub seconds: f64,
    pub run_id: String,
    pub variant: ReportVariant,
    /// The range computed: the one asked for, starting no earlier than the first day with facts.
    pub from: Option<NaiveDate>,
    pub to: Option<NaiveDate>,
    /// `full`, or what an incremental run recomputed.
    pub mode: String,
    /// Seconds spent in each phase of the run (reading facts, posts, reports; computing; merging; writing).
    pub phases: BTreeMap<&'static str, f64>,
}

fn wanted() -> Vec<(M, P)> {
    let mut w: BTreeSet<(M, P)> = BTreeSet::new();
    w.extend(reach::WANTED.iter().copied());
    w.extend(age_bands::WANTED.iter().copied());
    w.extend(quality::WANTED.iter().copied());
    w.extend(CAMPAIGN_METRICS.iter().map(|(_, m, _)| (*m, P::Day)));
    w.into_iter().collect()
}

/// What a job reads for one tenant.
pub struct Loaded {
    /// Seconds spent reading each part.
    pub phases: BTreeMap<&'static str, f64>,
    pub facts: frames::Facts,
    pub posts: Vec<Post>,
    pub snapshots: Vec<PostInsightSnapshot>,
    pub runs: Vec<pulse_domain::IngestRunRecord>,
}

/// Reads what the job needs for one tenant: facts with the filters pushed into the store (from far enough back for
/// the campaigns' counterfactuals), posts, snapshots and run records.
pub async fn load<S: Store>(store: &S, input: &JobInput) -> Result<Loaded> {
    load_parts(store, input, true).await
}

/// [`load`], with posts and snapshots only when `with_posts` (an incremental run reads its own).
async fn load_parts<S: Store>(store: &S, input: &JobInput, with_posts: bool) -> Result<Loaded> {
    if input.to < input.from {
        return Err(PipelineError::Input(format!("--from {} is after --to {}", input.from, input.to)));
    }
    let load_from = input
        .campaigns
        .iter()
        .map(|c| c.start - Duration::days(CAMPAIGN_HISTORY_DAYS))
        .min()
        .map_or(input.from, |d| d.min(input.from));
    let wanted = wanted();
    let filter = FactFilter {
        metrics: wanted.iter().map(|(m, _)| *m).collect::<BTreeSet<_>>().into_iter().collect(),
        periods: wanted.iter().map(|(_, p)| *p).collect::<BTreeSet<_>>().into_iter().collect(),
        from: Some(load_from),
        to: Some(input.to),
        ..FactFilter::default()
    };
    // Facts, posts and snapshots are read at the same time, each timed on its own. On the lake each read decodes on
    // a thread of the blocking pool, so the two cores share them; on ClickHouse the three queries overlap their waits.
    // All three are awaited whatever fails (no read is left running behind the run), and their errors are reported
    // in a fixed order: facts, then posts, then snapshots.
    let facts = async {
        // Facts come through the store either way: as checked Parquet files of this tenant to scan in place (the
        // lake), or as rows (ClickHouse).
        let facts = match store.fact_files(&input.scope, &filter).await? {
            Some(files) => {
                let (from, to) = (input.from, input.to);
                tokio::task::spawn_blocking(move || {
                    let totals: Vec<(M, P)> = wanted.into_iter().filter(|w| !age_bands::WANTED.contains(w)).collect();
                    frames::load_fact_files(&files, &totals, age_bands::WANTED, load_from, from, to)
                })
                .await
                .map_err(|e| PipelineError::Input(e.to_string()))??
            }
            None => {
                // Rows from the store: the totals, then the breakdowns of the kept windows only (Sundays and the
                // last week), so a year of breakdowns never has to be held; each page's latest day is picked from
                // those.
                let breakdown_metrics: BTreeSet<M> = age_bands::WANTED.iter().map(|(m, _)| *m).collect();
                let totals_only = FactFilter {
                    metrics: filter.metrics.iter().copied().filter(|m| !breakdown_metrics.contains(m)).collect(),
                    ..filter.clone()
                };
                let breakdowns = FactFilter {
                    metrics: breakdown_metrics.into_iter().collect(),
                    from: Some(input.from),
                    ..filter.clone()
                }
                .sundays_or_from(input.to - Duration::days(6));
                let totals = store.read_fact_series(&input.scope, &totals_only).await?;
                let breakdowns = store.read_fact_series(&input.scope, &breakdowns).await?;
                let total_pairs: Vec<(M, P)> = wanted.into_iter().filter(|w| !age_bands::WANTED.contains(w)).collect();
                frames::Facts::from_series(&totals, &total_pairs, &breakdowns, age_bands::WANTED, input.to)?
            }
        };
        Ok::<_, PipelineError>(facts)
    };
    let post_filter = PostFilter { from: Some(load_from), to: Some(input.to), ..PostFilter::default() };
    let posts = async {
        Ok::<_, PipelineError>(if with_posts {
            store.read_posts(&input.scope, &post_filter).await?
        } else {
            Vec::new()
        })
    };
    let snapshots = async {
        Ok::<_, PipelineError>(if with_posts {
            store.read_post_snapshots(&input.scope, &PostFilter::default()).await?
        } else {
            Vec::new()
        })
    };
    let (facts, posts, snapshots) = tokio::join!(timed(facts), timed(posts), timed(snapshots));
    let (facts, facts_s) = facts?;
    if facts.totals.height() == 0 {
        return Err(PipelineError::Input(format!(
            "tenant {} has no stored facts between {load_from} and {}: run `pulse ingest` (or `pulse demo`) first, or choose dates with data",
            input.scope, input.to
        )));
    }
    let ((posts, posts_s), (snapshots, snapshots_s)) = (posts?, snapshots?);
    let mut laps = Laps::start();
    laps.phases.insert("load facts", facts_s);
    if with_posts {
        laps.phases.insert("load posts", posts_s);
        laps.phases.insert("load snapshots", snapshots_s);
    }
    let runs = store.read_runs(&input.scope).await?;
    laps.lap("load runs");
    Ok(Loaded { phases: laps.phases, facts, posts, snapshots, runs })
}

/// How many tenants' incremental runs go at once: one such run keeps about one core busy with small reads, merges
/// and writes, so they go as many at a time as the machine has cores (at most four), or `PULSE_JOBS_CONCURRENCY`
/// (1 to 16) when set, as for a store on another machine, whose runs mostly wait on it. A full run has the machine to
/// itself: its computation already uses every core, and its memory is the largest.
pub fn incremental_concurrency() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 4);
    let Ok(set) = std::env::var("PULSE_JOBS_CONCURRENCY") else {
        return cores;
    };
    match set.trim().parse::<usize>() {
        Ok(n) if (1..=16).contains(&n) => n,
        _ => {
            tracing::warn!(value = %set, cores, "PULSE_JOBS_CONCURRENCY is not a number from 1 to 16; going by cores");
            cores
        }
    }
}

/// Runs each tenant's jobs, answering each result with its seconds in the order given: incremental runs
/// [`incremental_concurrency`] at a time, a full run alone (on a cluster, one per shard at a time; see [`Gate`]).
/// Each run is traced in a `report_jobs` span with its tenant and range.
pub async fn run_each<S: Store + Clone + 'static>(store: &S, inputs: Vec<JobInput>) -> Vec<(Result<JobSummary>, f64)> {
    // Where each tenant's rows live: on a cluster, full runs of tenants on different shards go at once, each reading
    // from its own shard's replica. A tenant whose place cannot be told runs as on one server (its run reports why).
    let mut places = Vec::with_capacity(inputs.len());
    for input in &inputs {
        places.push(store.home_of(input.scope.read()).await.unwrap_or(None));
    }
    // The shards full runs will go to: a lone full run keeps the machine even if incremental runs go elsewhere.
    let full_places: BTreeSet<&String> =
        inputs.iter().zip(&places).filter(|(i, _)| i.incremental.is_none()).filter_map(|(_, p)| p.as_ref()).collect();
    let gate = Arc::new(Gate::new(incremental_concurrency(), full_places.len()));
    let tasks: Vec<_> = inputs
        .into_iter()
        .zip(places)
        .map(|(input, place)| {
            let (store, gate) = (store.clone(), gate.clone());
            let span = tracing::info_span!("report_jobs", tenant = %input.scope, from = %input.from, to = %input.to);
            tokio::spawn(tracing::Instrument::instrument(
                async move {
                    let _pass = gate.enter(input.incremental.is_some(), place.as_deref()).await;
                    let started = Instant::now();
                    let result = run(&store, input).await;
                    (result, started.elapsed().as_secs_f64())
                },
                span,
            ))
        })
        .collect();
    // Dropped (a daemon's shutdown gave up waiting), the runs not finished are stopped, not left running.
    struct StopOnDrop<T>(Vec<tokio::task::JoinHandle<T>>);
    impl<T> Drop for StopOnDrop<T> {
        fn drop(&mut self) {
            self.0.iter().for_each(tokio::task::JoinHandle::abort);
        }
    }
    let mut tasks = StopOnDrop(tasks);
    let mut out = Vec::with_capacity(tasks.0.len());
    for task in &mut tasks.0 {
        out.push(task.await.unwrap_or_else(|e| (Err(PipelineError::Input(format!("the run stopped: {e}"))), 0.0)));
    }
    // The report slices the runs superseded, deleted together (housekeeping: readers never see them).
    if let Err(e) = store.sweep_reports().await {
        tracing::warn!(error = %e, "could not delete superseded report rows");
    }
    out
}

/// Admits tenants' runs: incremental ones `slots` at a time (one keeps about a core busy); a full one takes the
/// machine (its computation already uses every core, and its memory is the largest), or on a store with several
/// places (a cluster's shards) a share of it, at most one full run per place at a time: while one tenant's run
/// computes, another's reads go to a different shard's server.
struct Gate {
    slots: u32,
    places: usize,
    permits: Arc<tokio::sync::Semaphore>,
    per_place: std::sync::Mutex<BTreeMap<String, Arc<tokio::sync::Semaphore>>>,
}

/// A run's admission, held while it runs.
struct Pass {
    _place: Option<tokio::sync::OwnedSemaphorePermit>,
    _slots: tokio::sync::OwnedSemaphorePermit,
}

impl Gate {
    fn new(slots: usize, places: usize) -> Self {
        let slots = slots.max(1);
        Self {
            slots: slots as u32,
            places,
            permits: Arc::new(tokio::sync::Semaphore::new(slots)),
            per_place: Default::default(),
        }
    }

    /// How many of the slots a run takes.
    fn weight(&self, incremental: bool, place: Option<&str>) -> u32 {
        match (incremental, place) {
            (true, _) => 1,
            (false, Some(_)) if self.places > 1 => (self.slots / self.places as u32).max(1),
            (false, _) => self.slots,
        }
    }

    async fn enter(&self, incremental: bool, place: Option<&str>) -> Pass {
        let place_permit = match place {
            Some(place) if !incremental && self.places > 1 => {
                let one = self
                    .per_place
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .entry(place.to_owned())
                    .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(1)))
                    .clone();
                // Never closed, so a permit always comes.
                Some(one.acquire_owned().await.expect("the gate's semaphores are never closed"))
            }
            _ => None,
        };
        let weight = self.weight(incremental, place);
        let slots =
            self.permits.clone().acquire_many_owned(weight).await.expect("the gate's semaphores are never closed");
        Pass { _place: place_permit, _slots: slots }
    }
}

/// Runs one tenant's jobs: every report table replaced (a full run) or updated from the previous run (an incremental
/// one), then the run's record.
pub async fn run<S: Store>(store: &S, input: JobInput) -> Result<JobSummary> {
    let started = Instant::now();
    let started_at = input.incremental.as_ref().map_or_else(chrono::Utc::now, |i| i.asked_at);
    let mut plan =
        input.incremental.as_ref().map(|inc| Plan::new(inc, input.to, &input.campaigns, input.donors.is_some()));
    // An incremental run reads facts from the week before the first changed one, every post (ranks are across
    // them all), and the history of the campaigns it recomputes.
    let load_input = match &plan {
        Some(p) => JobInput {
            scope: input.scope.clone(),
            from: p.load_from.max(input.from),
            to: input.to,
            campaigns: p.campaigns.clone(),
            registered: None,
            variant: input.variant.clone(),
            inputs: String::new(),
            incremental: None,
            donors: None,
        },
        None => JobInput {
            scope: input.scope.clone(),
            from: input.from,
            to: input.to,
            campaigns: input.campaigns.clone(),
            registered: None,
            variant: input.variant.clone(),
            inputs: String::new(),
            incremental: None,
            donors: None,
        },
    };
    let mut loaded = load_parts(store, &load_input, plan.is_none()).await?;
    let mut laps = Laps::start();
    laps.phases = std::mem::take(&mut loaded.phases);
    // Post performance, when an incremental run can update it: the posts and snapshots fetched since.
    let mut update_posts = None;
    if let (Some(p), Some(inc)) = (&mut plan, &input.incremental) {
        let pages = loaded.facts.totals.column("page_id")?.str()?.clone();
        p.loaded_pages = pages.iter().flatten().map(str::to_owned).collect();
        // Campaigns recomputed read every post and snapshot (their posts' lifetime figures), and so does an age-band
        // window from the posts' video watch time.
        if p.campaigns.is_empty() && !age_bands::needs_video(&loaded.facts.breakdowns, input.to)? {
            let created = store.days_fetched_since(&input.scope, Fetched::Posts, inc.since).await?;
            let snapped = store.days_fetched_since(&input.scope, Fetched::Snapshots, inc.since).await?;
            let new_from = inc.previous_to + Duration::days(1);
            // A day earlier than the earliest created day fetched since: a server may count days in its own zone.
            let from = created.first().map_or(new_from, |d| new_from.min(*d - Duration::days(1)));
            let filter = PostFilter { from: Some(from), to: Some(input.to), ..PostFilter::default() };
            loaded.posts = store.read_posts(&input.scope, &filter).await?;
            loaded.posts.retain(|p| p.fetched_at >= inc.since || p.created_time.date_naive() >= new_from);
            laps.lap("load posts fetched since");
            // Every snapshot dated on or after the earliest one fetched since (what can be a post's latest now), and
            // every snapshot of the posts new to the reports (created after the previous run's last day; possibly
            // snapshotted before, by an ingest that ran ahead of that run). The ingester dates a snapshot the day
            // before its today, and reads only posts made by then: never more than two days before the post's
            // created day (UTC).
            let new_posts = loaded.posts.iter().map(|p| p.created_time.date_naive()).filter(|d| *d >= new_from);
            let first_new = new_posts.min().map(|d| d - Duration::days(2));
            if let Some(first) = snapped.first().copied().into_iter().chain(first_new).min() {
                let filter = PostFilter { from: Some(first), ..PostFilter::default() };
                loaded.snapshots = store.read_post_snapshots(&input.scope, &filter).await?;
            }
            laps.lap("load snapshots fetched since");
            update_posts = Some(inc.since);
        } else {
            loaded.posts =
                store.read_posts(&input.scope, &PostFilter { to: Some(input.to), ..PostFilter::default() }).await?;
            laps.lap("load every post");
            loaded.snapshots = store.read_post_snapshots(&input.scope, &PostFilter::default()).await?;
            laps.lap("load snapshots");
        }
    }
    let loaded = Arc::new(loaded);
    let tenant = input.scope.to_string();
    let first_fact = loaded.facts.first_day()?.unwrap_or(input.from);
    let (from, compute_from) = match &plan {
        // The report's range keeps its start; the computation covers the recomputed weeks.
        Some(_) => (input.from, load_input.from.max(first_fact)),
        None => (input.from.max(first_fact), input.from.max(first_fact)),
    };
    let (to, registered) = (input.to, input.registered.clone());
    // Campaigns estimated (an incremental run's recomputed ones), and every campaign's tag for the posts' topics.
    let campaigns = Campaigns {
        estimate: load_input.campaigns.clone(),
        tags: input.campaigns.clone(),
        donors: input.donors.clone().map(|d| (input.scope.to_string(), d)),
    };
    let shared = loaded.clone();
    let computed =
        tokio::task::spawn_blocking(move || compute(&shared, compute_from, to, &campaigns, registered.as_ref()))
            .await
            .map_err(|e| PipelineError::Input(e.to_string()))??;
    laps.lap("compute");
    let (tables, mut summary) = computed;
    // The compute's own parts, instead of its total.
    laps.phases.remove("compute");
    laps.phases.extend(std::mem::take(&mut summary.phases));
    for (table, df) in tables {
        // An incremental run that recomputed no campaign leaves the campaign tables as they are.
        let campaign_table = table.name == CAMPAIGN_UPLIFT.name || table.name == CAMPAIGN_SERIES.name;
        if plan.as_ref().is_some_and(|p| p.campaigns.is_empty()) && campaign_table {
            continue;
        }
        let mut batch = frames::to_batch(&df, table)?;
        laps.lap("convert");
        // A table stored by month is read and replaced from the month before the first recomputed week on (the
        // previous run's latest window is in it); any other is read and replaced whole.
        let tail = plan.as_ref().and_then(|p| table.partition.map(|_| table.partition_start(p.load_from)));
        if let Some(p) = &plan {
            let old = match tail {
                Some(from) => store.read_report_from(&input.scope, table, &input.variant, from).await?,
                None => store.read_report(&input.scope, table, &input.variant).await?,
            };
            laps.lap("read reports");
            batch = match update_posts {
                Some(since) if table.name == POST_PERFORMANCE.name => {
                    let tags = campaign_tags(&input.campaigns);
                    posts::updated_performance(&old, &loaded.posts, &loaded.snapshots, since, &tags)?
                }
                _ => merge(table, &old, &batch, p)?,
            };
            laps.lap("merge");
        }
        let ack = match tail {
            Some(from) => store.replace_report_from(&input.scope, table, &input.variant, from, &batch).await?,
            None => store.replace_report(&input.scope, table, &input.variant, &batch).await?,
        };
        laps.lap("write reports");
        summary.rows_written.insert(table.name, ack.rows);
    }
    // The run record goes last: it names the run whose tables are now in place.
    summary.run_id =
        format!("jobs-{}-{}", started_at.format("%Y%m%dT%H%M%SZ"), &uuid::Uuid::new_v4().simple().to_string()[..8]);
    summary.mode = match (&plan, &input.incremental) {
        (Some(p), Some(inc)) => format!(
            "incremental from {} ({} changed days, {} campaigns recomputed, {})",
            p.replace_from,
            inc.changed.iter().filter(|d| **d <= to).count(),
            p.campaigns.len(),
            if update_posts.is_some() {
                format!("{} posts fetched since", loaded.posts.len())
            } else {
                "every post read".to_owned()
            }
        ),
        _ => "full".into(),
    };
    let rows: usize = summary.rows_written.values().sum();
    let run = frames::RunFacts {
        run_id: &summary.run_id,
        started_at,
        computed_at: chrono::Utc::now(),
        facts: summary.facts,
        rows,
        inputs: &input.inputs,
        mode: &summary.mode,
    };
    let record = frames::run_record(&input.variant, from, to, &run)?;
    store.replace_report(&input.scope, &REPORT_RUNS, &input.variant, &record).await?;
    laps.lap("write reports");
    summary.phases = laps.phases;
    summary.tenant = tenant;
    summary.variant = input.variant.clone();
    (summary.from, summary.to) = (Some(from), Some(to));
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

/// An incremental run's table: the rows it recomputed, and the previous rows it did not touch.
fn merge(table: &ReportTable, old: &RecordBatch, new: &RecordBatch, plan: &Plan) -> Result<RecordBatch> {
    use arrow::array::{Date32Array, StringArray};
    let dates = |b: &RecordBatch, c: &str| -> Vec<i32> {
        b.column_by_name(c)
            .and_then(|a| a.as_any().downcast_ref::<Date32Array>().map(|d| d.iter().map(|v| v.unwrap_or(0)).collect()))
            .unwrap_or_default()
    };
    let texts = |b: &RecordBatch, c: &str| -> Vec<String> {
        b.column_by_name(c)
            .and_then(|a| {
                a.as_any().downcast_ref::<StringArray>().map(|s| s.iter().map(|v| v.unwrap_or("").to_owned()).collect())
            })
            .unwrap_or_default()
    };
    let from = frames::day_number(plan.replace_from);
    let (keep_old, keep_new): (Vec<bool>, Vec<bool>) = match table.name {
        // Weeks ending on or after the first recomputed Monday are replaced.
        n if n == REACH_WEEKLY.name || n == REACH_TENANT_WEEKLY.name => (
            dates(old, "week_ending").iter().map(|d| *d < from).collect(),
            dates(new, "week_ending").iter().map(|d| *d >= from).collect(),
        ),
        // Windows too; a previous run's latest window (not a Sunday's) is superseded by this run's, which may end
        // before `from` (a page whose latest day in the last week came before the first recomputed Monday).
        n if n == AGE_BANDS.name => {
            let last_week = frames::day_number(plan.to - Duration::days(6));
            (
                dates(old, "window_end").iter().map(|d| *d < from && d % 7 == 3).collect(),
                dates(new, "window_end").iter().map(|d| *d >= from || (*d >= last_week && d % 7 != 3)).collect(),
            )
        }
        // Checks of days before the recomputed ones stay; checks about now (stale pages, re-authorisation, failed
        // runs) are made again, except a stale page with no facts in the recomputed days, which stays as it was.
        n if n == DATA_QUALITY.name => {
            let loaded = &plan.loaded_pages;
            let load_from = frames::day_number(plan.load_from);
            let (checks, days, pages) = (texts(old, "check_name"), dates(old, "day_to"), texts(old, "page_id"));
            let recomputed: BTreeSet<String> = texts(new, "page_id").into_iter().collect();
            (
                (0..old.num_rows())
                    .map(|i| match checks[i].as_str() {
                        "gap" | "metric_gap" | "unique_above_total" | "week_below_max_day" => days[i] < load_from,
                        "stale" => !loaded.contains(&pages[i]) && !recomputed.contains(&pages[i]),
                        _ => false,
                    })
                    .collect(),
                vec![true; new.num_rows()],
            )
        }
        // Campaigns not recomputed keep their rows.
        n if n == CAMPAIGN_UPLIFT.name || n == CAMPAIGN_SERIES.name => {
            let redone: BTreeSet<&str> = plan.campaigns.iter().map(|c| c.name.as_str()).collect();
            (texts(old, "campaign").iter().map(|c| !redone.contains(c.as_str())).collect(), vec![true; new.num_rows()])
        }
        // Post performance ranks every post: recomputed whole.
        _ => (vec![false; old.num_rows()], vec![true; new.num_rows()]),
    };
    let pick = |b: &RecordBatch, keep: Vec<bool>| -> Result<RecordBatch> {
        let mask = arrow::array::BooleanArray::from(keep);
        arrow::compute::filter_record_batch(b, &mask).map_err(|e| PipelineError::Input(e.to_string()))
    };
    let (mut old, new) = (pick(old, keep_old)?, pick(new, keep_new)?);
    // A stale page kept from before is still stale: through the new last day, as a full run would say.
    if table.name == DATA_QUALITY.name {
        old = extend_stale(&old, frames::day_number(plan.to))?;
    }
    let fail = |e: arrow::error::ArrowError| PipelineError::Input(format!("{}: {e}", table.name));
    let merged = arrow::compute::concat_batches(&table.schema(), [&old, &new]).map_err(fail)?;
    // In the order a full run writes: weekly reach page by page, week by week; campaigns in the configured order
    // (each campaign's rows as they were computed).
    let order = if table.name == REACH_WEEKLY.name {
        let keys = ["page_id", "week_ending"].map(|c| arrow::compute::SortColumn {
            values: merged.column_by_name(c).expect("a reach column").clone(),
            options: None,
        });
        arrow::compute::lexsort_to_indices(&keys, None).map_err(fail)?
    } else if table.name == CAMPAIGN_UPLIFT.name || table.name == CAMPAIGN_SERIES.name {
        let names = texts(&merged, "campaign");
        let rank = |n: &str| plan.all_campaigns.iter().position(|c| c == n).unwrap_or(usize::MAX);
        let mut idx: Vec<u32> = (0..merged.num_rows() as u32).collect();
        idx.sort_by_key(|i| rank(&names[*i as usize]));
        arrow::array::UInt32Array::from(idx)
    } else {
        return Ok(merged);
    };
    let columns = merged
        .columns()
        .iter()
        .map(|c| arrow::compute::take(c, &order, None))
        .collect::<std::result::Result<Vec<_>, _>>();
    RecordBatch::try_new(table.schema(), columns.map_err(fail)?).map_err(fail)
}

/// Quality rows with `stale` ones running to `to` (their first day stays: the day after the page's last data).
fn extend_stale(b: &RecordBatch, to: i32) -> Result<RecordBatch> {
    use arrow::array::{Array, Date32Array, StringArray, UInt32Array};
    let fail = |what: &str| PipelineError::Input(format!("report_data_quality: no {what} column"));
    let col = |name: &str| b.column_by_name(name).ok_or_else(|| fail(name));
    let checks = col("check_name")?.as_any().downcast_ref::<StringArray>().ok_or_else(|| fail("check_name"))?;
    let from = col("day_from")?.as_any().downcast_ref::<Date32Array>().ok_or_else(|| fail("day_from"))?;
    let day_to = col("day_to")?.as_any().downcast_ref::<Date32Array>().ok_or_else(|| fail("day_to"))?;
    let count = col("count")?.as_any().downcast_ref::<UInt32Array>().ok_or_else(|| fail("count"))?;
    let stale = |i: usize| checks.value(i) == "stale";
    let new_to: Date32Array = (0..b.num_rows()).map(|i| Some(if stale(i) { to } else { day_to.value(i) })).collect();
    let new_count: UInt32Array = (0..b.num_rows())
        .map(|i| Some(if stale(i) { (to - from.value(i) + 1).max(0) as u32 } else { count.value(i) }))
        .collect();
    let schema = b.schema();
    let columns = schema
        .fields()
        .iter()
        .zip(b.columns())
        .map(|(f, c)| match f.name().as_str() {
            "day_to" => Arc::new(new_to.clone()) as arrow::array::ArrayRef,
            "count" => Arc::new(new_count.clone()) as arrow::array::ArrayRef,
            _ => c.clone(),
        })
        .collect();
    RecordBatch::try_new(schema, columns).map_err(|e| PipelineError::Input(e.to_string()))
}

/// What marks a post as a campaign's: its hashtag, text or link (none for a list of posts).
fn campaign_tags(campaigns: &[Campaign]) -> Vec<String> {
    campaigns
        .iter()
        .map(|c| match &c.matcher {
            campaign::Matcher::Hashtag(h) | campaign::Matcher::Text(h) | campaign::Matcher::Link(h) => h.clone(),
            campaign::Matcher::Posts(_) => String::new(),
        })
        .collect()
}

/// Report tables with their frames, and the summary to print.
pub type Computed = (Vec<(&'static ReportTable, DataFrame)>, JobSummary);

/// The campaigns a run estimates, and all of them: their tags mark posts as campaign posts, their windows are kept
/// out of each other's placebo windows.
pub struct Campaigns {
    pub estimate: Vec<Campaign>,
    pub tags: Vec<Campaign>,
    /// The national donor pool, for a tenant that takes part in it: (the tenant, what the pool holds).
    pub donors: Option<(String, Arc<DonorInput>)>,
}

impl Campaigns {
    /// Every campaign estimated, tagged and kept out of the others' placebo windows.
    pub fn all(campaigns: &[Campaign]) -> Self {
        Campaigns { estimate: campaigns.to_vec(), tags: campaigns.to_vec(), donors: None }
    }
}

/// What tenants' campaigns may use of the national donor pool ([`crate::donors`]): every pool tenant's blocks per
/// campaign metric (sums over its pages, never a page's row), and the tenants whose posts matched each campaign
/// (they are left out of its pool: their pages took part).
#[derive(Debug, Clone, Default)]
pub struct DonorInput {
    pub blocks: BTreeMap<String, Vec<crate::donors::Block>>,
    pub took_part: BTreeMap<String, BTreeSet<String>>,
    /// Why the pool is left out of this run (its campaigns are still all recomputed, without it).
    pub unavailable: Option<String>,
}

/// A campaign's key in [`DonorInput::took_part`]: its name, matcher, type and window.
pub fn campaign_key(c: &Campaign) -> String {
    format!("{c:?}")
}

impl DonorInput {
    /// Adds one pool tenant: its blocks over `campaigns`' histories, windows and plotted days, and which of
    /// `campaigns` (every pool tenant's) its posts matched.
    pub async fn add_tenant<S: Store>(&mut self, store: &S, scope: &TenantScope, campaigns: &[Campaign]) -> Result<()> {
        let (Some(first), Some(last)) =
            (campaigns.iter().map(|c| c.start).min(), campaigns.iter().map(|c| from_day_number(c.window().1)).max())
        else {
            return Ok(());
        };
        let (from, to) =
            (first - Duration::days(CAMPAIGN_HISTORY_DAYS), last + Duration::days(campaign::SERIES_DAYS_AFTER));
        let all: Vec<&str> = CAMPAIGN_METRICS.iter().map(|(name, _, _)| *name).collect();
        self.add_blocks(store, scope, from, to, &all).await?;
        // A day either side: a server may count days in its own zone.
        let filter = PostFilter {
            from: Some(first - Duration::days(2)),
            to: Some(last + Duration::days(1)),
            ..PostFilter::default()
        };
        let posts = store.read_posts(scope, &filter).await?;
        let tenant = scope.to_string();
        for c in campaigns {
            let matched = posts.iter().any(|p| {
                c.matches(&p.message, &p.permalink, p.post.as_str(), &p.post_type, p.created_time.date_naive())
            });
            if matched {
                self.took_part.entry(campaign_key(c)).or_default().insert(tenant.clone());
            }
        }
        Ok(())
    }

    /// Adds one pool tenant's blocks over [from, to] for the campaign metrics named in `metrics` (a plan reads only its
    /// own: nobody has taken part in a campaign that has not started).
    pub async fn add_blocks<S: Store>(
        &mut self,
        store: &S,
        scope: &TenantScope,
        from: NaiveDate,
        to: NaiveDate,
        metrics: &[&str],
    ) -> Result<()> {
        let wanted: Vec<&(&str, M, M)> =
            CAMPAIGN_METRICS.iter().filter(|(name, _, _)| metrics.contains(name)).collect();
        let pairs: Vec<(M, P)> = wanted.iter().map(|(_, m, _)| (*m, P::Day)).collect();
        if pairs.is_empty() {
            return Ok(());
        }
        let filter = FactFilter {
            metrics: pairs.iter().map(|(m, _)| *m).collect(),
            periods: vec![P::Day],
            from: Some(from),
            to: Some(to),
            ..FactFilter::default()
        };
        let series = store.read_fact_series(scope, &filter).await?;
        let tenant = scope.to_string();
        if !series.is_empty() {
            let facts = frames::Facts::from_series(&series, &pairs, &[], &[], to)?;
            for ((name, _, _), series) in wanted.iter().zip(frames::series_many(&facts.totals, &pairs)?) {
                self.blocks.entry((*name).to_owned()).or_default().push(crate::donors::Block::of(&tenant, &series));
            }
        }
        Ok(())
    }

    /// The pool for one of `tenant`'s campaigns, for one metric (`None` when too few tenants' pages are in it).
    pub fn pool(&self, tenant: &str, campaign: &Campaign, metric: &str) -> Option<campaign::Donors> {
        if self.unavailable.is_some() {
            return None;
        }
        let none = BTreeSet::new();
        let took_part = self.took_part.get(&campaign_key(campaign)).unwrap_or(&none);
        crate::donors::pool(self.blocks.get(metric)?, tenant, took_part)
    }
}

/// Every report of one tenant from what [`load`] read, off the async runtime.
pub fn compute(
    loaded: &Loaded,
    from: NaiveDate,
    to: NaiveDate,
    campaigns: &Campaigns,
    registered: Option<&Registered>,
) -> Result<Computed> {
    let Loaded { facts, posts, snapshots, runs, .. } = loaded;
    let mut summary = JobSummary { facts: facts.height(), ..JobSummary::default() };
    let in_range = facts
        .totals
        .clone()
        .lazy()
        .filter(col("day").gt_eq(frames::date(from)).and(col("day").lt_eq(frames::date(to))))
        .collect()?;
    // The reports are independent of each other, and each is mostly one core's work: campaign uplift (per-page Rust
    // work) runs on a thread of its own, age bands and post performance on a second, reach and quality on this one,
    // so a tenant's compute uses both cores even when no campaign is estimated. Each thread times its own phases.
    let mut laps = Laps::start();
    let tags = campaign_tags(&campaigns.tags);
    let (weekly, tenant_weekly, (ages, source, performance, side_phases), q, (uplift, series, headlines)) =
        std::thread::scope(|s| {
            let uplift = s.spawn(|| campaigns_report(&facts.totals, posts, snapshots, campaigns));
            let side = s.spawn(|| {
                let mut laps = Laps::start();
                let (ages, source) = age_bands::age_bands(&facts.breakdowns, snapshots, registered, to)?;
                laps.lap("compute age bands");
                let post_df = frames::post_frame(posts, snapshots)?;
                let performance = posts::post_performance(&post_df, &tags)?;
                laps.lap("compute posts");
                Ok::<_, PipelineError>((ages, source, performance, laps.phases))
            });
            let weekly = reach::weekly(&in_range, from, to)?;
            let tenant_weekly = reach::tenant_weekly(&weekly)?;
            laps.lap("compute reach");
            let q = quality::quality(&in_range, runs, from, to)?;
            laps.lap("compute quality");
            let side = side.join().map_err(|p| panicked("the age band and post performance computation", p))??;
            laps.lap("compute age bands and posts (waited for)");
            let uplift = uplift.join().map_err(|p| panicked("the campaign uplift computation", p))??;
            laps.lap("compute campaigns (waited for)");
            Ok::<_, PipelineError>((weekly, tenant_weekly, side, q, uplift))
        })?;
    laps.phases.extend(side_phases);
    summary.weeks = tenant_weekly.height();
    summary.pages = weekly.column("page_id")?.n_unique()?;
    let engaged: Vec<f64> = weekly.column("engaged_users")?.f64()?.iter().flatten().collect();
    let weekly_reach: Vec<f64> = weekly.column("reach")?.f64()?.iter().flatten().collect();
    summary.median_weekly_engaged = (!engaged.is_empty()).then(|| reach::median(&engaged));
    summary.median_weekly_reach = (!weekly_reach.is_empty()).then(|| reach::median(&weekly_reach));
    if tenant_weekly.height() > 0 {
        let last = tenant_weekly.height() - 1;
        let week = tenant_weekly.column("week_ending")?.cast(&DataType::Int32)?.i32()?.get(last);
        let gross = tenant_weekly.column("gross_reach")?.f64()?.get(last);
        if let (Some(w), Some(g)) = (week, gross) {
            summary.latest_week = Some((from_day_number(w), g));
        }
    }
    summary.age_source = source;
    if ages.height() > 0 {
        let latest = col("window_end").eq(col("window_end").max());
        let t = ages.clone().lazy().filter(col("level").eq(lit("tenant")).and(latest)).collect()?;
        let bands = t.column("age_band")?.str()?.clone();
        let shares = t.column("share")?.f64()?.clone();
        summary.age_shares = bands.iter().zip(shares.iter()).map(|(b, s)| (b.unwrap_or("").to_owned(), s)).collect();
    }
    summary.quality_issues = q.height();
    summary.campaigns = headlines;
    summary.phases = laps.phases;
    Ok((
        vec![
            (&REACH_WEEKLY, weekly),
            (&REACH_TENANT_WEEKLY, tenant_weekly),
            (&AGE_BANDS, ages),
            (&POST_PERFORMANCE, performance),
            (&DATA_QUALITY, q),
            (&CAMPAIGN_UPLIFT, uplift),
            (&CAMPAIGN_SERIES, series),
        ],
        summary,
    ))
}

#[derive(Default)]
struct UpliftRows {
    campaign: Vec<String>,
    practice: Vec<String>,
    metric: Vec<String>,
    from: Vec<i32>,
    to: Vec<i32>,
    posts: Vec<u32>,
    lifetime: Vec<Option<f64>>,
    observed: Vec<Option<f64>>,
    counterfactual: Vec<Option<f64>>,
    effect: Vec<Option<f64>>,
    lo: Vec<Option<f64>>,
    hi: Vec<Option<f64>>,
    level: Vec<Option<f64>>,
    lift: Vec<Option<f64>>,
    p: Vec<Option<f64>>,
    method: Vec<String>,
    note: Vec<String>,
}

#[derive(Default)]
struct SeriesRows {
    campaign: Vec<String>,
    practice: Vec<String>,
    metric: Vec<String>,
    day: Vec<i32>,
    observed: Vec<Option<f64>>,
    counterfactual: Vec<Option<f64>>,
}

fn campaigns_report(
    facts: &DataFrame,
    posts: &[Post],
    snapshots: &[PostInsightSnapshot],
    all: &Campaigns,
) -> Result<(DataFrame, DataFrame, Vec<CampaignHeadline>)> {
    let campaigns = &all.estimate;
    // With no campaign to estimate (a plain run) nothing below reads the posts' lifetimes or the daily series: they
    // are not built (the series alone are a pass over every total).
    let mut latest = Default::default();
    let mut practice_of: BTreeMap<String, String> = BTreeMap::new();
    let mut all_series: BTreeMap<M, Series> = BTreeMap::new();
    if !campaigns.is_empty() {
        latest = frames::latest_lifetime(snapshots);
        practice_of = posts.iter().map(|p| (p.page.to_string(), p.practice.to_string())).collect();
        let pairs: Vec<(M, P)> = CAMPAIGN_METRICS.iter().map(|(_, m, _)| (*m, P::Day)).collect();
        for ((m, _), series) in pairs.iter().zip(frames::series_many(facts, &pairs)?) {
            all_series.insert(*m, series);
        }
    }
    let pages_with_data: BTreeSet<String> = all_series.values().flat_map(|s| s.keys().cloned()).collect();
    // Every campaign's window is kept out of the others' placebo windows, estimated now or not.
    let windows: Vec<(i32, i32)> = all.tags.iter().map(|c| c.window()).collect();
    let mut rows = UpliftRows::default();
    let mut srows = SeriesRows::default();
    let mut headlines = Vec::new();
    for c in campaigns.iter() {
        let matched: Vec<&Post> = posts
            .iter()
            .filter(|p| c.matches(&p.message, &p.permalink, p.post.as_str(), &p.post_type, p.created_time.date_naive()))
            .collect();
        let treated: Vec<String> =
            matched.iter().map(|p| p.page.to_string()).collect::<BTreeSet<_>>().into_iter().collect();
        // Controls: pages with data in the campaign's history and window (the days an incremental run reads for
        // it, so both kinds of run pick the same pages).
        let (ws, we) = c.window();
        let (lo, hi) = (ws - CAMPAIGN_HISTORY_DAYS as i32, we + campaign::SERIES_DAYS_AFTER as i32);
        let controls: Vec<String> = pages_with_data
            .iter()
            .filter(|p| !treated.contains(p))
            .filter(|p| all_series.values().any(|s| s.get(*p).is_some_and(|days| days.range(lo..=hi).next().is_some())))
            .cloned()
            .collect();
        let exclude: Vec<(i32, i32)> = windows.iter().copied().filter(|w| *w != c.window()).collect();
        for (name, page_metric, post_metric) in CAMPAIGN_METRICS {
            let lifetime: Vec<f64> =
                matched.iter().filter_map(|p| latest.get(&(p.post.as_str(), *post_metric)).copied()).collect();
            let post_lifetime = (!lifetime.is_empty()).then(|| lifetime.iter().sum::<f64>());
            let mut push = |practice: &str,
                            posts_n: usize,
                            lifetime: Option<f64>,
                            e: Option<campaign::PageEffect>,
                            p: Option<f64>,
                            method: &str,
                            note: &str| {
                rows.campaign.push(c.name.clone());
                rows.practice.push(practice.to_owned());
                rows.metric.push((*name).to_owned());
                rows.from.push(ws);
                rows.to.push(we);
                rows.posts.push(posts_n as u32);
                rows.lifetime.push(lifetime);
                rows.observed.push(e.map(|x| x.0));
                rows.counterfactual.push(e.map(|x| x.1));
                rows.effect.push(e.map(|x| x.2));
                rows.lo.push(e.and_then(|x| x.3).map(|i| i.lo));
                rows.hi.push(e.and_then(|x| x.3).map(|i| i.hi));
                rows.level.push(e.and_then(|x| x.3).map(|i| i.level));
                rows.lift.push(e.and_then(|x| (x.1 > 0.0).then(|| 100.0 * x.2 / x.1)));
                rows.p.push(p);
                rows.method.push(method.to_owned());
                rows.note.push(note.to_owned());
            };
            let series = &all_series[page_metric];
            let estimated = if matched.is_empty() {
                Err(format!(
                    "no post matched {:?} between {} and {}: check the matcher and the window",
                    c.matcher,
                    c.start - Duration::days(1),
                    from_day_number(we)
                ))
            } else if *page_metric == M::PageVideoViews && !matched.iter().any(|p| p.post_type == "video") {
                // A metric the campaign's posts cannot move is not an effect of it: video views for a campaign with
                // no video (a poster, a link) would only be noise called an effect.
                Err(format!(
                    "none of the campaign's {} posts is a video: video views cannot be its effect, so none is estimated",
                    matched.len()
                ))
            } else {
                let donors = all.donors.as_ref().and_then(|(tenant, d)| d.pool(tenant, c, name));
                campaign::estimate_with_donors(series, &treated, &controls, donors.as_ref(), c.start, c.days, &exclude)
                    .map_err(|e| e.to_string())
            };
            match estimated {
                Ok(est) => {
                    let unavailable = all.donors.as_ref().and_then(|(_, d)| d.unavailable.as_deref());
                    let est = match unavailable {
                        Some(why) => Estimate {
                            method: format!("{} (the national donor pool was left out: {why})", est.method),
                            ..est
                        },
                        None => est,
                    };
                    let note = match est.interval {
                        None => format!(
                            "only {} placebo windows before the campaign (need {}): no interval",
                            est.placebos,
                            campaign::MIN_PLACEBOS
                        ),
                        Some(i) if i.level < campaign::TARGET_LEVEL - 1e-9 => format!(
                            "only {} placebo windows before the campaign: the interval's level is {:.0}% ({:.0}% needs {})",
                            est.placebos,
                            i.level * 100.0,
                            campaign::TARGET_LEVEL * 100.0,
                            campaign::PLACEBOS_FOR_TARGET
                        ),
                        Some(_) => String::new(),
                    };
                    push(
                        "ALL",
                        matched.len(),
                        post_lifetime,
                        Some((est.observed, est.counterfactual, est.effect, est.interval)),
                        est.p_value,
                        &est.method,
                        &note,
                    );
                    for (page, (o, cf, eff, iv)) in &est.pages {
                        let practice = practice_of.get(page).cloned().unwrap_or_default();
                        let page_posts: Vec<&&Post> = matched.iter().filter(|p| p.page.as_str() == page).collect();
                        let page_life: Vec<f64> = page_posts
                            .iter()
                            .filter_map(|p| latest.get(&(p.post.as_str(), *post_metric)).copied())
                            .collect();
                        push(
                            &practice,
                            page_posts.len(),
                            (!page_life.is_empty()).then(|| page_life.iter().sum()),
                            Some((*o, *cf, *eff, *iv)),
                            None,
                            &est.method,
                            "",
                        );
                    }
                    for (d, o, cf) in &est.series {
                        srows.campaign.push(c.name.clone());
                        srows.practice.push("ALL".into());
                        srows.metric.push((*name).into());
                        srows.day.push(*d);
                        srows.observed.push(Some(*o));
                        srows.counterfactual.push(Some(*cf));
                    }
                    headlines.push(CampaignHeadline {
                        campaign: c.name.clone(),
                        metric: (*name).into(),
                        posts: matched.len(),
                        pages: treated.len(),
                        post_lifetime,
                        estimate: Some(est),
                        note,
                    });
                }
                Err(note) => {
                    push("ALL", matched.len(), post_lifetime, None, None, "", &note);
                    headlines.push(CampaignHeadline {
                        campaign: c.name.clone(),
                        metric: (*name).into(),
                        posts: matched.len(),
                        pages: treated.len(),
                        post_lifetime,
                        estimate: None,
                        note,
                    });
                }
            }
        }
    }
    let uplift = df!(
        "campaign" => rows.campaign, "practice_code" => rows.practice, "metric" => rows.metric,
        "window_from" => rows.from, "window_to" => rows.to, "posts" => rows.posts, "post_lifetime" => rows.lifetime,
        "observed" => rows.observed, "counterfactual" => rows.counterfactual, "effect" => rows.effect,
        "effect_lo" => rows.lo, "effect_hi" => rows.hi, "interval_level" => rows.level, "lift_pct" => rows.lift, "p_value" => rows.p,
        "method" => rows.method, "note" => rows.note,
    )?
    .lazy()
    .with_columns([col("window_from").cast(DataType::Date), col("window_to").cast(DataType::Date)])
    .collect()?;
    let series = df!(
        "campaign" => srows.campaign, "practice_code" => srows.practice, "metric" => srows.metric,
        "day" => srows.day, "observed" => srows.observed, "counterfactual" => srows.counterfactual,
    )?
    .lazy()
    .with_column(col("day").cast(DataType::Date))
    .collect()?;
    Ok((uplift, series, headlines))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{ArrayRef, Date32Array, Float64Array, StringArray};

    /// A report thread's panic reaches the caller with its message, whether `panic!` made a `&str` or a `String`.
    #[test]
    fn a_report_thread_that_panics_is_reported_with_its_message() {
        let literal = std::thread::spawn(|| panic!("no rows")).join().unwrap_err();
        let n = 3;
        let formatted = std::thread::spawn(move || panic!("row {n} is bad")).join().unwrap_err();
        assert_eq!(
            panicked("the age bands", literal).to_string(),
            PipelineError::Input("the age bands panicked: no rows".into()).to_string()
        );
        assert!(panicked("uplift", formatted).to_string().contains("uplift panicked: row 3 is bad"));
        assert!(panicked("uplift", Box::new(7_u8)).to_string().contains("uplift panicked: no message"));
    }

    /// Whether `enter` admits within a moment (while the passes held so far are held).
    async fn admitted(gate: &Gate, incremental: bool, place: Option<&str>) -> Option<Pass> {
        tokio::time::timeout(std::time::Duration::from_millis(150), gate.enter(incremental, place)).await.ok()
    }

    #[tokio::test]
    async fn full_runs_on_different_shards_go_at_once_and_on_one_shard_in_turn() {
        let gate = Gate::new(2, 2);
        let first = admitted(&gate, false, Some("shard 1")).await.expect("the first run goes");
        let other = admitted(&gate, false, Some("shard 2")).await.expect("another shard's full run goes at once");
        assert!(admitted(&gate, false, Some("shard 1")).await.is_none(), "the same shard's next run waits");
        assert!(
            admitted(&gate, true, Some("shard 1")).await.is_none(),
            "the machine is taken: an incremental run waits"
        );
        drop(first);
        let next = admitted(&gate, false, Some("shard 1")).await.expect("then it goes");
        drop((other, next));
        // Four cores and two shards: a full run takes two slots, so two incremental runs fit beside one.
        let wide = Gate::new(4, 2);
        let _full = admitted(&wide, false, Some("shard 1")).await.unwrap();
        let _a = admitted(&wide, true, Some("shard 2")).await.expect("an incremental run beside it");
        let _b = admitted(&wide, true, Some("shard 2")).await.expect("and a second");
        assert!(admitted(&wide, false, Some("shard 2")).await.is_none(), "no slot left for another full run");
    }

    #[tokio::test]
    async fn on_one_server_a_full_run_takes_the_machine() {
        let gate = Gate::new(2, 0);
        let full = admitted(&gate, false, None).await.unwrap();
        assert!(admitted(&gate, true, None).await.is_none(), "an incremental run waits for the full one");
        drop(full);
        let a = admitted(&gate, true, None).await.unwrap();
        let _b = admitted(&gate, true, None).await.expect("two incremental runs at once on two cores");
        assert!(admitted(&gate, false, None).await.is_none(), "a full run waits for them");
        drop(a);
        assert!(admitted(&gate, false, None).await.is_none(), "for all of them");
        // A single shard is one place: its full runs take the machine too.
        let single = Gate::new(2, 1);
        let _full = admitted(&single, false, Some("shard 1")).await.unwrap();
        assert!(admitted(&single, true, Some("shard 1")).await.is_none());
    }

    fn day(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    /// Age-band rows of one practice, one per window end.
    fn windows(ends: &[&str]) -> RecordBatch {
        let n = ends.len();
        let columns: Vec<ArrayRef> = AGE_BANDS
            .columns
            .iter()
            .map(|c| -> ArrayRef {
                match c.name {
                    "window_end" => {
                        Arc::new(Date32Array::from(ends.iter().map(|e| frames::day_number(day(e))).collect::<Vec<_>>()))
                    }
                    _ if c.ty == pulse_store::ReportType::Str => Arc::new(StringArray::from(vec!["x"; n])),
                    _ => Arc::new(Float64Array::from(vec![Some(1.0); n])),
                }
            })
            .collect();
        RecordBatch::try_new(AGE_BANDS.schema(), columns).unwrap()
    }

    fn ends(b: &RecordBatch) -> Vec<String> {
        let a = b.column_by_name("window_end").unwrap().as_any().downcast_ref::<Date32Array>().unwrap();
        let mut out: Vec<String> =
            a.iter().map(|d| frames::from_day_number(d.unwrap()).format("%Y-%m-%d").to_string()).collect();
        out.sort();
        out
    }

    /// The previous run went to Sunday 22 November; this one goes to Wednesday 25th with the 23rd-25th new, so it
    /// replaces from Monday 23rd and reads from the 16th. One page's latest day in the last week is Saturday 21st (no
    /// data since), so its latest window ends there: this run's row, not dropped for ending before the Monday, and
    /// not kept twice. The Sunday 22nd (another page's) stays once; windows from the Monday on are this run's.
    #[test]
    fn an_incremental_merge_keeps_a_latest_window_that_ends_before_the_first_recomputed_monday() {
        let plan = Plan {
            replace_from: day("2026-11-23"),
            load_from: day("2026-11-16"),
            campaigns: vec![],
            loaded_pages: BTreeSet::new(),
            all_campaigns: vec![],
            to: day("2026-11-25"),
        };
        let old = windows(&["2026-11-08", "2026-11-15", "2026-11-21", "2026-11-22"]);
        let new = windows(&["2026-11-21", "2026-11-22", "2026-11-24"]);
        let merged = merge(&AGE_BANDS, &old, &new, &plan).unwrap();
        assert_eq!(ends(&merged), ["2026-11-08", "2026-11-15", "2026-11-21", "2026-11-22", "2026-11-24"]);
    }
}
