//! The executor: runs the plan with bounded concurrency and the rate budget, retries what can be retried, isolates
//! retired metrics, marks dead tokens, writes in batches, and advances checkpoints only after the store
//! acknowledged the data they cover.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::io::IsTerminal;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Duration as Days, NaiveDate, Utc};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use pulse_domain::time::end_time_for_day;
use pulse_domain::{
    ApiVersion, Checkpoint, GraphMetric, IngestRunRecord, PageInsightFact, Period, Post, PostInsightSnapshot,
    PracticeCode, Stream, TenantScope,
};
use pulse_graph::ErrorClass;
use pulse_graph::wire::{InsightsResponse, PostsResponse};
use pulse_store::{Store, StoreError};
use tokio::sync::{Semaphore, mpsc};
use tracing::Instrument;

use crate::budget::RateBudget;
use crate::client::{CallError, Fetched, GraphClient};
use crate::parse::{self, Origin};
use crate::plan::{PlanOptions, StreamPlan, Target, Window, plan_page};
use crate::retry::{RetryPolicy, jitter};

/// Everything an ingest run can be told.
#[derive(Debug, Clone)]
pub struct IngestOptions {
    pub plan: PlanOptions,
    /// HTTP calls in flight across all pages.
    pub concurrency: usize,
    /// Streams of one page in flight at once.
    pub per_page: usize,
    pub retry: RetryPolicy,
    /// Real length of a "minute" in Meta's `estimated_time_to_regain_access`.
    pub throttle_minute: Duration,
    /// Extra delay per call when usage is at 100 % (scaled from 75 %).
    pub max_slowdown: Duration,
    /// Buffered rows that trigger a write.
    pub flush_rows: usize,
    /// How long the store may be unreachable before the run gives up (keeping checkpoints before unwritten data).
    pub store_retry_for: Duration,
    /// Show a progress bar on a terminal.
    pub progress: bool,
}

impl IngestOptions {
    pub fn new(plan: PlanOptions) -> Self {
        Self {
            plan,
            concurrency: 8,
            per_page: 2,
            retry: RetryPolicy::default(),
            throttle_minute: Duration::from_secs(60),
            max_slowdown: Duration::from_secs(2),
            flush_rows: 400_000,
            store_retry_for: Duration::from_secs(120),
            progress: true,
        }
    }
}

/// A page whose token Meta rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reauth {
    pub tenant: String,
    pub practice: PracticeCode,
    pub page: String,
    pub message: String,
}

/// A page stream that could not be fetched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub tenant: String,
    pub practice: PracticeCode,
    pub page: String,
    pub stream: String,
    pub message: String,
}

#[derive(Debug, Default)]
struct Counters {
    requests: AtomicU64,
    retries: AtomicU64,
    throttled_ms: AtomicU64,
    rows_written: AtomicU64,
    errors: AtomicU64,
    bytes: AtomicU64,
}

/// One practice's line in the run summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PracticeSummary {
    pub tenant: String,
    pub record: IngestRunRecord,
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub run_id: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub practices: Vec<PracticeSummary>,
    pub reauth: Vec<Reauth>,
    pub failures: Vec<Failure>,
    /// Graph metrics Meta rejected as invalid in this API version during the run.
    pub retired_metrics: Vec<(String, ApiVersion)>,
    pub rows_written: u64,
    pub requests: u64,
    pub bytes: u64,
    /// Set when the store stayed unavailable: the run stopped, and unwritten data will be fetched again next run.
    pub store_error: Option<String>,
}

impl RunReport {
    /// Whether every page was ingested completely.
    pub fn is_clean(&self) -> bool {
        self.reauth.is_empty() && self.failures.is_empty() && self.store_error.is_none()
    }

    /// The summary as a text table (one line per practice, then the problems).
    pub fn table(&self) -> String {
        let mut out = format!(
            "{:<16} {:<8} {:>8} {:>7} {:>10} {:>10} {:>6} {:>7}  {}\n",
            "tenant", "practice", "requests", "retries", "throttled", "rows", "errors", "reauth", "status"
        );
        for p in &self.practices {
            let r = &p.record;
            out.push_str(&format!(
                "{:<16} {:<8} {:>8} {:>7} {:>9.1}s {:>10} {:>6} {:>7}  {}\n",
                p.tenant,
                r.practice,
                r.requests,
                r.retries,
                r.throttled_ms as f64 / 1000.0,
                r.rows_written,
                r.errors,
                r.pages_needing_reauth,
                r.status
            ));
        }
        for r in &self.reauth {
            out.push_str(&format!("NEEDS RE-AUTHORISATION: {}\n", r.message));
        }
        for f in &self.failures {
            out.push_str(&format!(
                "FAILED: page {} (practice {}, tenant {}) {}: {}\n",
                f.page, f.practice, f.tenant, f.stream, f.message
            ));
        }
        for (m, v) in &self.retired_metrics {
            out.push_str(&format!("RETIRED METRIC: `{m}` is no longer valid in {v}; the rest of the sync went on without it (update the metric catalogue)\n"));
        }
        if let Some(e) = &self.store_error {
            out.push_str(&format!("STORE UNAVAILABLE: {e}\n"));
        }
        out
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("Graph client: {0}")]
    Client(#[from] CallError),
}

/// Data fetched for one window, with the checkpoint it completes.
struct WriteItem {
    scope: TenantScope,
    facts: Vec<PageInsightFact>,
    posts: Vec<Post>,
    snapshots: Vec<PostInsightSnapshot>,
    checkpoint: Checkpoint,
}

struct PageCtx {
    target: Target,
    origin: Origin,
    dead: AtomicBool,
    counters: Arc<Counters>,
}

struct Shared {
    client: GraphClient,
    opts: IngestOptions,
    budget: RateBudget,
    semaphore: Semaphore,
    retired: Mutex<BTreeSet<String>>,
    reauth: Mutex<Vec<Reauth>>,
    failures: Mutex<Vec<Failure>>,
    stop: AtomicBool,
    progress: ProgressBar,
}

pub struct Ingester<S> {
    store: S,
    shared: Arc<Shared>,
}

type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
/// Posts and their insight snapshots from one listing.
type PostBatch = (Vec<Post>, Vec<PostInsightSnapshot>);

impl<S: Store + Clone + 'static> Ingester<S> {
    pub fn new(store: S, client: GraphClient, opts: IngestOptions) -> Self {
        let progress = if opts.progress && std::io::stderr().is_terminal() {
            ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr())
        } else {
            ProgressBar::hidden()
        };
        progress.set_style(
            ProgressStyle::with_template(
                "{spinner} ingest [{bar:32}] {pos}/{len} windows  {msg}  {elapsed_precise} (eta {eta})",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        let shared = Shared {
            budget: RateBudget::new(opts.throttle_minute, opts.max_slowdown),
            semaphore: Semaphore::new(opts.concurrency.max(1)),
            client,
            retired: Mutex::new(BTreeSet::new()),
            reauth: Mutex::new(Vec::new()),
            failures: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
            progress,
            opts,
        };
        Self { store, shared: Arc::new(shared) }
    }

    /// Runs one ingest over `targets` and records it in the store.
    pub async fn run(&self, targets: Vec<Target>) -> Result<RunReport, IngestError> {
        let started_at = Utc::now();
        let run_id =
            format!("{}-{}", started_at.format("%Y%m%dT%H%M%SZ"), &uuid::Uuid::new_v4().simple().to_string()[..8]);
        let opts = &self.shared.opts;
        let mut checkpoints: HashMap<(String, Stream), NaiveDate> = HashMap::new();
        let mut scopes: BTreeMap<String, TenantScope> = BTreeMap::new();
        for t in &targets {
            scopes.entry(t.scope.as_str().to_owned()).or_insert_with(|| t.scope.clone());
        }
        for scope in scopes.values() {
            for cp in self.store.load_checkpoints(scope).await? {
                checkpoints.insert((cp.page.to_string(), cp.stream), cp.through_day);
            }
        }
        let mut pages = Vec::new();
        let mut total = 0u64;
        for target in targets {
            let cps: HashMap<Stream, NaiveDate> = checkpoints
                .iter()
                .filter(|((p, _), _)| p == target.page.as_str())
                .map(|((_, s), d)| (*s, *d))
                .collect();
            let plans = plan_page(&opts.plan, &cps);
            total += plans.iter().map(|p| p.windows.len() as u64).sum::<u64>();
            let origin = Origin {
                practice: target.practice.clone(),
                page: target.page.clone(),
                version: self.shared.client.version(),
                fetched_at: Utc::now(),
            };
            pages.push((
                Arc::new(PageCtx {
                    target,
                    origin,
                    dead: AtomicBool::new(false),
                    counters: Arc::new(Counters::default()),
                }),
                plans,
            ));
        }
        self.shared.progress.set_length(total);
        tracing::info!(run_id, pages = pages.len(), windows = total, today = %opts.plan.today, "ingest starting");

        // A short queue: fetched windows wait in it for the writer, so its length bounds the data held in memory.
        let (tx, rx) = mpsc::channel::<WriteItem>(16);
        let counters: HashMap<String, Arc<Counters>> =
            pages.iter().map(|(p, _)| (p.target.page.to_string(), p.counters.clone())).collect();
        let writer = tokio::spawn(write_loop(self.store.clone(), rx, self.shared.clone(), counters));
        let mut tasks = tokio::task::JoinSet::new();
        for (ctx, plans) in &pages {
            let (ctx, plans, shared, tx) = (ctx.clone(), plans.clone(), self.shared.clone(), tx.clone());
            let span = tracing::info_span!("page", tenant = %ctx.target.scope, practice = %ctx.target.practice, page = %ctx.target.page);
            tasks.spawn(async move { ingest_page(shared, ctx, plans, tx).await }.instrument(span));
        }
        drop(tx);
        while tasks.join_next().await.is_some() {}
        let store_error = match writer.await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e),
            Err(e) => Some(format!("writer task failed: {e}")),
        };
        self.shared.progress.finish_and_clear();
        let finished_at = Utc::now();

        let reauth = self.shared.reauth.lock().expect("lock").clone();
        let failures = self.shared.failures.lock().expect("lock").clone();
        let version = self.shared.client.version();
        let retired_metrics = self.shared.retired.lock().expect("lock").iter().map(|m| (m.clone(), version)).collect();
        let mut by_practice: BTreeMap<(String, PracticeCode), IngestRunRecord> = BTreeMap::new();
        for (ctx, _) in &pages {
            let c = &ctx.counters;
            let tenant = ctx.target.scope.as_str().to_owned();
            let rec =
                by_practice.entry((tenant.clone(), ctx.target.practice.clone())).or_insert_with(|| IngestRunRecord {
                    run_id: run_id.clone(),
                    practice: ctx.target.practice.clone(),
                    started_at,
                    finished_at,
                    requests: 0,
                    retries: 0,
                    throttled_ms: 0,
                    rows_written: 0,
                    errors: 0,
                    pages_needing_reauth: 0,
                    status: "ok".into(),
                    message: String::new(),
                });
            rec.requests += c.requests.load(Ordering::Relaxed);
            rec.retries += c.retries.load(Ordering::Relaxed);
            rec.throttled_ms += c.throttled_ms.load(Ordering::Relaxed);
            rec.rows_written += c.rows_written.load(Ordering::Relaxed);
            rec.errors += c.errors.load(Ordering::Relaxed);
            let page = ctx.target.page.as_str();
            let mut problems: Vec<String> =
                reauth.iter().filter(|r| r.page == page).map(|r| r.message.clone()).collect();
            problems.extend(failures.iter().filter(|f| f.page == page).map(|f| format!("{}: {}", f.stream, f.message)));
            if reauth.iter().any(|r| r.page == page) {
                rec.pages_needing_reauth += 1;
            }
            if !problems.is_empty() {
                rec.status = "failed".into();
                if !rec.message.is_empty() {
                    rec.message.push_str("; ");
                }
                rec.message.push_str(&problems.join("; "));
            }
        }
        if store_error.is_some() {
            for rec in by_practice.values_mut() {
                if rec.status == "ok" {
                    rec.status = "partial".into();
                }
            }
        }
        let practices: Vec<PracticeSummary> =
            by_practice.into_iter().map(|((tenant, _), record)| PracticeSummary { tenant, record }).collect();
        // Record the run (best effort when the store is what failed).
        for (tenant, scope) in &scopes {
            let records: Vec<IngestRunRecord> =
                practices.iter().filter(|p| &p.tenant == tenant).map(|p| p.record.clone()).collect();
            if let Err(e) = self.store.record_run(scope, &records).await {
                tracing::warn!(tenant, error = %e, "could not record the run summary");
            }
        }
        let sum = |f: fn(&IngestRunRecord) -> u64| practices.iter().map(|p| f(&p.record)).sum::<u64>();
        let report = RunReport {
            run_id,
            started_at,
            finished_at,
            rows_written: sum(|r| r.rows_written),
            requests: sum(|r| r.requests),
            bytes: pages.iter().map(|(p, _)| p.counters.bytes.load(Ordering::Relaxed)).sum(),
            practices,
            reauth,
            failures,
            retired_metrics,
            store_error,
        };
        tracing::info!(
            run_id = report.run_id,
            rows = report.rows_written,
            requests = report.requests,
            clean = report.is_clean(),
            "ingest finished"
        );
        Ok(report)
    }
}

fn pacific_midnight(day: NaiveDate) -> i64 {
    end_time_for_day(day - Days::days(1)).timestamp()
}

async fn ingest_page(shared: Arc<Shared>, ctx: Arc<PageCtx>, plans: Vec<StreamPlan>, tx: mpsc::Sender<WriteItem>) {
    let per_page = Arc::new(Semaphore::new(shared.opts.per_page.max(1)));
    let mut streams = tokio::task::JoinSet::new();
    for plan in plans {
        let (shared, ctx, tx, per_page) = (shared.clone(), ctx.clone(), tx.clone(), per_page.clone());
        streams.spawn(
            async move {
                let _permit = per_page.acquire().await;
                ingest_stream(&shared, &ctx, &plan, &tx).await;
            }
            .in_current_span(),
        );
    }
    while streams.join_next().await.is_some() {}
}

async fn ingest_stream(shared: &Shared, ctx: &PageCtx, plan: &StreamPlan, tx: &mpsc::Sender<WriteItem>) {
    for window in &plan.windows {
        if shared.stop.load(Ordering::Relaxed) || ctx.dead.load(Ordering::Relaxed) {
            return;
        }
        let result = match plan.stream {
            Stream::PageInsights(period) => fetch_insights(shared, ctx, plan.metrics.clone(), period, *window)
                .await
                .map(|facts| (facts, Vec::new(), Vec::new())),
            Stream::Posts => {
                fetch_posts(shared, ctx, plan.metrics.clone(), *window).await.map(|(p, s)| (Vec::new(), p, s))
            }
            Stream::PostInsights => Ok((Vec::new(), Vec::new(), Vec::new())),
        };
        match result {
            Ok((facts, posts, snapshots)) => {
                let item = WriteItem {
                    scope: ctx.target.scope.clone(),
                    facts,
                    posts,
                    snapshots,
                    checkpoint: Checkpoint {
                        practice: ctx.target.practice.clone(),
                        page: ctx.target.page.clone(),
                        stream: plan.stream,
                        through_day: window.to,
                        updated_at: Utc::now(),
                    },
                };
                if tx.send(item).await.is_err() {
                    return; // the writer stopped (store unavailable): nothing more can be kept
                }
                shared.progress.inc(1);
            }
            Err(e) => {
                report_failure(shared, ctx, plan.stream, &e);
                return;
            }
        }
    }
}

fn report_failure(shared: &Shared, ctx: &PageCtx, stream: Stream, e: &CallError) {
    ctx.counters.errors.fetch_add(1, Ordering::Relaxed);
    let t = &ctx.target;
    if e.class() == Some(ErrorClass::TokenDead) {
        if !ctx.dead.swap(true, Ordering::Relaxed) {
            let (code, sub) = match e {
                CallError::Graph { error, .. } => {
                    (error.code, error.error_subcode.map(|s| format!("/{s}")).unwrap_or_default())
                }
                _ => (190, String::new()),
            };
            let why = match sub.as_str() {
                "/463" => "expired",
                "/460" => "invalidated by a password change",
                _ => "rejected",
            };
            let message = format!(
                "page {} (practice {}, tenant {}): access token rejected (code {code}{sub}, {why}); re-authorise the page and run again",
                t.page, t.practice, t.scope
            );
            tracing::warn!(tenant = %t.scope, practice = %t.practice, page = %t.page, "{message}");
            shared.reauth.lock().expect("lock").push(Reauth {
                tenant: t.scope.to_string(),
                practice: t.practice.clone(),
                page: t.page.to_string(),
                message,
            });
        }
        return;
    }
    let advice = match e.class() {
        Some(ErrorClass::Permission) => {
            "; grant the page's token read_insights and pages_read_engagement, then run again"
        }
        Some(ErrorClass::BadRequest) => "; this request cannot succeed as sent: please report it",
        _ => "; retries were exhausted: run again later (checkpoints keep what was stored)",
    };
    let message = format!("{e}{advice}");
    tracing::error!(tenant = %t.scope, practice = %t.practice, page = %t.page, stream = %stream, "{message}");
    if e.class() == Some(ErrorClass::Permission) {
        ctx.dead.store(true, Ordering::Relaxed);
    }
    shared.failures.lock().expect("lock").push(Failure {
        tenant: t.scope.to_string(),
        practice: t.practice.clone(),
        page: t.page.to_string(),
        stream: stream.to_string(),
        message,
    });
}

/// One call with the rate budget, bounded concurrency and retries. `f` does the request and the parsing, so a body
/// that does not parse is retried like any transient failure.
async fn call<T, F>(shared: &Shared, ctx: &PageCtx, f: F) -> Result<T, CallError>
where
    F: Fn() -> BoxFut<'static, Result<(T, usize, pulse_graph::Usage), CallError>> + Send + Sync,
{
    let page = ctx.target.page.as_str();
    let retry = &shared.opts.retry;
    let mut attempt = 0;
    let mut throttle_waits = 0;
    loop {
        let wait = shared.budget.wait_before(page);
        if !wait.is_zero() {
            ctx.counters.throttled_ms.fetch_add(wait.as_millis() as u64, Ordering::Relaxed);
            retry.sleep(wait).await;
        }
        if shared.stop.load(Ordering::Relaxed) {
            return Err(CallError::Network("run stopped".into()));
        }
        let result = {
            let _permit = shared.semaphore.acquire().await.expect("semaphore open");
            ctx.counters.requests.fetch_add(1, Ordering::Relaxed);
            f().await
        };
        match result {
            Ok((value, bytes, usage)) => {
                shared.budget.observe(&usage);
                ctx.counters.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
                return Ok(value);
            }
            Err(e) => {
                if let Some(u) = e.usage() {
                    shared.budget.observe(u);
                }
                if let CallError::Graph { class: ErrorClass::Throttled, error, usage } = &e {
                    throttle_waits += 1;
                    let pause = shared.budget.throttled(page, error.code, usage);
                    tracing::debug!(code = error.code, pause_ms = pause.as_millis() as u64, "throttled");
                    if throttle_waits <= 30 {
                        ctx.counters.retries.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    return Err(e);
                }
                attempt += 1;
                if !e.is_retryable() || attempt >= retry.max_attempts {
                    return Err(e);
                }
                ctx.counters.retries.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(attempt, error = %e, "retrying");
                retry.sleep(retry.backoff(attempt - 1, jitter())).await;
            }
        }
    }
}

fn parse_failed(bytes: usize, e: parse::ParseError) -> CallError {
    CallError::Malformed { status: 200, bytes, reason: e.0 }
}

/// Fetches one window of page insights. A metric Meta rejects as invalid is found by splitting the metric set,
/// recorded as retired, and left out; the other metrics are still fetched.
fn fetch_insights<'a>(
    shared: &'a Shared,
    ctx: &'a PageCtx,
    metrics: Vec<&'static GraphMetric>,
    period: Period,
    window: Window,
) -> BoxFut<'a, Result<Vec<PageInsightFact>, CallError>> {
    Box::pin(async move {
        let metrics: Vec<&'static GraphMetric> = {
            let retired = shared.retired.lock().expect("lock");
            metrics.into_iter().filter(|m| !retired.contains(m.name)).collect()
        };
        if metrics.is_empty() {
            return Ok(Vec::new());
        }
        let names: Vec<&'static str> = metrics.iter().map(|m| m.name).collect();
        let origin = Origin { fetched_at: Utc::now(), ..ctx.origin.clone() };
        let client = shared.client.clone();
        let token = ctx.target.token.clone();
        let page = ctx.target.page.to_string();
        let (since, until) = (pacific_midnight(window.from), pacific_midnight(window.to + Days::days(1)));
        let result = call(shared, ctx, move || {
            let (client, token, page, names, origin) =
                (client.clone(), token.clone(), page.clone(), names.clone(), origin.clone());
            Box::pin(async move {
                let Fetched { body, usage, bytes } =
                    client.insights(&token, &page, &names, Some(period.as_str()), Some(since), Some(until)).await?;
                let body: InsightsResponse = body;
                let facts =
                    parse::page_facts(&origin, &body, window.from, window.to).map_err(|e| parse_failed(bytes, e))?;
                Ok((facts, bytes, usage))
            })
        })
        .await;
        match result {
            Err(CallError::Graph { class: ErrorClass::InvalidMetric, .. }) if metrics.len() == 1 => {
                let name = metrics[0].name;
                if shared.retired.lock().expect("lock").insert(name.to_owned()) {
                    tracing::warn!(metric = name, version = %shared.client.version(), "Meta rejected a metric as invalid: recorded as retired for this API version");
                }
                Ok(Vec::new())
            }
            Err(CallError::Graph { class: ErrorClass::InvalidMetric, .. }) => {
                let (a, b) = metrics.split_at(metrics.len() / 2);
                let mut facts = fetch_insights(shared, ctx, a.to_vec(), period, window).await?;
                facts.extend(fetch_insights(shared, ctx, b.to_vec(), period, window).await?);
                Ok(facts)
            }
            other => other,
        }
    })
}

/// Lists the posts created in the window with their lifetime insights (field expansion), following cursors until
/// a page has no `next` or no data.
fn fetch_posts<'a>(
    shared: &'a Shared,
    ctx: &'a PageCtx,
    metrics: Vec<&'static GraphMetric>,
    window: Window,
) -> BoxFut<'a, Result<PostBatch, CallError>> {
    Box::pin(async move {
        let metrics: Vec<&'static GraphMetric> = {
            let retired = shared.retired.lock().expect("lock");
            metrics.into_iter().filter(|m| !retired.contains(m.name)).collect()
        };
        let names: Vec<&str> = metrics.iter().map(|m| m.name).collect();
        let kind_field = if shared.client.version() < ApiVersion::new(3, 3) { "type" } else { "status_type" };
        let mut fields = format!("id,created_time,message,permalink_url,{kind_field}");
        if !names.is_empty() {
            fields.push_str(&format!(",insights.metric({})", names.join(",")));
        }
        let snapshot_day = shared.opts.plan.today - Days::days(1);
        let (since, until) = (pacific_midnight(window.from), pacific_midnight(window.to + Days::days(1)));
        let mut posts = Vec::new();
        let mut snapshots = Vec::new();
        let mut next: Option<String> = None;
        let mut pages = 0;
        loop {
            pages += 1;
            let origin = Origin { fetched_at: Utc::now(), ..ctx.origin.clone() };
            let (client, token, page, fields, link) = (
                shared.client.clone(),
                ctx.target.token.clone(),
                ctx.target.page.to_string(),
                fields.clone(),
                next.clone(),
            );
            let result = call(shared, ctx, move || {
                let (client, token, page, fields, link, origin) =
                    (client.clone(), token.clone(), page.clone(), fields.clone(), link.clone(), origin.clone());
                Box::pin(async move {
                    let fetched: Fetched<PostsResponse> = match &link {
                        Some(l) => client.follow(&token, l).await?,
                        None => client.published_posts(&token, &page, &fields, since, until, 100).await?,
                    };
                    let parsed = parse::posts(&origin, &fetched.body, snapshot_day)
                        .map_err(|e| parse_failed(fetched.bytes, e))?;
                    let next = fetched.body.paging.as_ref().and_then(|p| p.next.clone());
                    let empty = fetched.body.data.is_empty();
                    Ok(((parsed, next, empty), fetched.bytes, fetched.usage))
                })
            })
            .await;
            match result {
                Ok(((page_posts, page_snaps), link, empty)) => {
                    posts.extend(page_posts);
                    snapshots.extend(page_snaps);
                    // Meta may end a listing with an empty page that still has `next`: stop there.
                    if empty || link.is_none() || pages > 10_000 {
                        break;
                    }
                    next = link;
                }
                Err(CallError::Graph { class: ErrorClass::InvalidMetric, .. }) if !metrics.is_empty() => {
                    // One of the expanded insight metrics is retired: find it on a small probe, then list again.
                    isolate_post_metrics(shared, ctx, &metrics, window).await?;
                    return fetch_posts(shared, ctx, metrics, window).await;
                }
                Err(e) => return Err(e),
            }
        }
        Ok((posts, snapshots))
    })
}

/// Finds which of the post metrics Meta rejects by asking for each alone on a one-post listing.
async fn isolate_post_metrics(
    shared: &Shared,
    ctx: &PageCtx,
    metrics: &[&'static GraphMetric],
    window: Window,
) -> Result<(), CallError> {
    let kind_field = if shared.client.version() < ApiVersion::new(3, 3) { "type" } else { "status_type" };
    let (since, until) = (pacific_midnight(window.from), pacific_midnight(window.to + Days::days(1)));
    let mut found = false;
    for m in metrics {
        let fields = format!("id,{kind_field},insights.metric({})", m.name);
        let (client, token, page) = (shared.client.clone(), ctx.target.token.clone(), ctx.target.page.to_string());
        let r = call(shared, ctx, move || {
            let (client, token, page, fields) = (client.clone(), token.clone(), page.clone(), fields.clone());
            Box::pin(async move {
                let f = client.published_posts(&token, &page, &fields, since, until, 1).await?;
                Ok(((), f.bytes, f.usage))
            })
        })
        .await;
        match r {
            Err(CallError::Graph { class: ErrorClass::InvalidMetric, .. }) => {
                found = true;
                if shared.retired.lock().expect("lock").insert(m.name.to_owned()) {
                    tracing::warn!(metric = m.name, version = %shared.client.version(), "Meta rejected a post metric as invalid: recorded as retired");
                }
            }
            Err(e) => return Err(e),
            Ok(()) => {}
        }
    }
    if found {
        Ok(())
    } else {
        Err(CallError::Malformed {
            status: 400,
            bytes: 0,
            reason: "Meta rejected the post metrics but none alone".into(),
        })
    }
}

#[derive(Default)]
struct Buffer {
    facts: Vec<PageInsightFact>,
    posts: Vec<Post>,
    snapshots: Vec<PostInsightSnapshot>,
    checkpoints: HashMap<(String, Stream), Checkpoint>,
    rows_by_page: HashMap<String, u64>,
}

impl Buffer {
    fn rows(&self) -> usize {
        self.facts.len() + self.posts.len() + self.snapshots.len()
    }
}

/// Receives fetched data, writes it in batches, and saves checkpoints after the store acknowledged the data.
async fn write_loop<S: Store>(
    store: S,
    mut rx: mpsc::Receiver<WriteItem>,
    shared: Arc<Shared>,
    counters: HashMap<String, Arc<Counters>>,
) -> Result<(), String> {
    let mut buffers: BTreeMap<String, (TenantScope, Buffer)> = BTreeMap::new();
    let mut buffered = 0usize;
    let mut tick = tokio::time::interval(Duration::from_secs(15));
    tick.tick().await;
    loop {
        let item = tokio::select! {
            item = rx.recv() => item,
            _ = tick.tick() => {
                flush_all(&store, &shared, &mut buffers, &counters).await?;
                buffered = 0;
                continue;
            }
        };
        let Some(item) = item else { break };
        let (_, buf) =
            buffers.entry(item.scope.as_str().to_owned()).or_insert_with(|| (item.scope.clone(), Buffer::default()));
        let rows = item.facts.len() + item.posts.len() + item.snapshots.len();
        *buf.rows_by_page.entry(item.checkpoint.page.to_string()).or_default() += rows as u64;
        buf.facts.extend(item.facts);
        buf.posts.extend(item.posts);
        buf.snapshots.extend(item.snapshots);
        let key = (item.checkpoint.page.to_string(), item.checkpoint.stream);
        match buf.checkpoints.get(&key) {
            Some(old) if old.through_day >= item.checkpoint.through_day => {}
            _ => {
                buf.checkpoints.insert(key, item.checkpoint);
            }
        }
        buffered += rows;
        if buffered >= shared.opts.flush_rows {
            flush_all(&store, &shared, &mut buffers, &counters).await?;
            buffered = 0;
        }
    }
    flush_all(&store, &shared, &mut buffers, &counters).await
}

async fn flush_all<S: Store>(
    store: &S,
    shared: &Shared,
    buffers: &mut BTreeMap<String, (TenantScope, Buffer)>,
    counters: &HashMap<String, Arc<Counters>>,
) -> Result<(), String> {
    for (tenant, (scope, buf)) in buffers.iter_mut() {
        if buf.rows() == 0 && buf.checkpoints.is_empty() {
            continue;
        }
        let rows = buf.rows();
        let started = Instant::now();
        let outcome = async {
            with_store_retry(shared, "page insights", || store.write_page_insights(scope, &buf.facts)).await?;
            with_store_retry(shared, "posts", || store.write_posts(scope, &buf.posts)).await?;
            with_store_retry(shared, "post insight snapshots", || store.write_post_snapshots(scope, &buf.snapshots))
                .await?;
            // Only now, with the data acknowledged, may the checkpoints move.
            let cps: Vec<Checkpoint> = buf.checkpoints.values().cloned().collect();
            with_store_retry(shared, "checkpoints", || store.save_checkpoints(scope, &cps)).await
        }
        .await;
        if let Err(e) = outcome {
            shared.stop.store(true, Ordering::Relaxed);
            return Err(format!(
                "{e}; {rows} fetched rows of tenant {tenant} were not written and their checkpoints were not advanced, so the next run fetches them again"
            ));
        }
        for (page, n) in buf.rows_by_page.drain() {
            if let Some(c) = counters.get(&page) {
                c.rows_written.fetch_add(n, Ordering::Relaxed);
            }
        }
        tracing::debug!(tenant, rows, ms = started.elapsed().as_millis() as u64, "batch written");
        shared.progress.set_message(format!(
            "{} rows written",
            counters.values().map(|c| c.rows_written.load(Ordering::Relaxed)).sum::<u64>()
        ));
        *buf = Buffer::default();
    }
    Ok(())
}

/// Retries a store write while the error is transient, for at most `store_retry_for`.
async fn with_store_retry<'a, F, Fut>(shared: &Shared, what: &str, f: F) -> Result<(), String>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<pulse_store::WriteAck, StoreError>> + 'a,
{
    let started = Instant::now();
    let mut attempt = 0;
    loop {
        match f().await {
            Ok(_) => return Ok(()),
            Err(e) if e.is_transient() && started.elapsed() < shared.opts.store_retry_for => {
                tracing::warn!(what, error = %e, "store write failed; retrying");
                let retry = &shared.opts.retry;
                retry.sleep(retry.backoff(attempt, jitter()).max(retry.base)).await;
                attempt += 1;
            }
            Err(e) => {
                return Err(format!(
                    "writing {what} failed{}: {e}",
                    if e.is_transient() { format!(" for {:?}", started.elapsed()) } else { String::new() }
                ));
            }
        }
    }
}
