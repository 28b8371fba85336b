//! The executor: runs the plan with bounded concurrency and the rate budget (a fixed set of page workers, each page's
//! streams side by side), and hands fetched windows to the writer with the checkpoints they complete.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{Duration as Days, NaiveDate, Utc};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use pulse_config::WriteScope;
use pulse_domain::{Checkpoint, IngestRunRecord, Period, Stream};
use pulse_store::{Store, StoreError};
use tokio::sync::{Semaphore, mpsc};
use tracing::Instrument;

use crate::budget::RateBudget;
use crate::call::report_failure;
use crate::client::{CallError, GraphClient};
use crate::context::{Counters, IngestOptions, PageCtx, Shared};
use crate::fetch::{fetch_insights, fetch_posts};
use crate::parse::Origin;
use crate::plan::{Fetch, StreamPlan, Target, plan_page};
use crate::summary::{PageCounts, Planned, RunReport, StoreFailure, practice_records};
use crate::writer::{WriteItem, write_loop};

/// Pages in progress per call slot (`concurrency`).
const PAGES_PER_CALL_SLOT: usize = 2;

/// Why a run could not even start.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("Graph client: {0}")]
    Client(#[from] CallError),
}

/// Where the run's record ended up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunRecordPlace {
    /// In the store, beside the data.
    Store,
    /// In a local file, because the store could not take it.
    File(PathBuf),
    /// Nowhere: the store refused it and no fallback directory was given (the reason).
    Lost(String),
}

pub struct Ingester<S> {
    store: S,
    shared: Arc<Shared>,
}

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
            unreachable_logged: AtomicBool::new(false),
            progress,
            opts,
        };
        Self { store, shared: Arc::new(shared) }
    }

    /// Runs one ingest over `targets` and records it (in the store, or in the fallback directory when the store
    /// went away).
    pub async fn run(&self, targets: Vec<Target>) -> Result<(RunReport, RunRecordPlace), IngestError> {
        let started_at = Utc::now();
        let run_id =
            format!("{}-{}", started_at.format("%Y%m%dT%H%M%SZ"), &uuid::Uuid::new_v4().simple().to_string()[..8]);
        let opts = &self.shared.opts;
        let mut checkpoints: HashMap<(String, Stream), NaiveDate> = HashMap::new();
        let mut scopes: BTreeMap<String, WriteScope> = BTreeMap::new();
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
        let mut earliest: Option<NaiveDate> = None;
        for target in targets {
            let cps: HashMap<Stream, NaiveDate> = checkpoints
                .iter()
                .filter(|((p, _), _)| p == target.page.as_str())
                .map(|((_, s), d)| (*s, *d))
                .collect();
            let plans = plan_page(&opts.plan, &cps);
            total += plans.iter().map(|p| p.windows.len() as u64).sum::<u64>();
            for first in plans.iter().filter_map(|p| p.windows.first()) {
                earliest = Some(earliest.map_or(first.from, |e| e.min(first.from)));
            }
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
        // Everything the run does is inside its span: pages (with their tenant), their Graph calls, the store writes.
        let run_span = tracing::info_span!("ingest_run", run_id = %run_id);
        let writer = tokio::spawn(
            write_loop(self.store.clone(), rx, self.shared.clone(), counters).instrument(run_span.clone()),
        );
        // Pages in progress at once, each taken from the list by one of a fixed set of workers: a page holds what
        // it fetched until the writer takes it, so this (not the number of pages) bounds the data in hand, and no
        // task exists for a page before its turn. Twice the calls in flight, so that pages paused by Meta's
        // throttling do not idle the rest.
        let pages = Arc::new(pages);
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..(opts.concurrency.max(1) * PAGES_PER_CALL_SLOT).min(pages.len()) {
            let (pages, next, shared, tx) = (pages.clone(), next.clone(), self.shared.clone(), tx.clone());
            tasks.spawn(
                async move {
                    while let Some((ctx, plans)) = pages.get(next.fetch_add(1, Ordering::Relaxed)) {
                        let span = tracing::info_span!("page", tenant = %ctx.target.scope, practice = %ctx.target.practice, page = %ctx.target.page);
                        ingest_page(shared.clone(), ctx.clone(), plans.clone(), tx.clone()).instrument(span).await;
                    }
                }
                .instrument(run_span.clone()),
            );
        }
        drop(tx);
        while tasks.join_next().await.is_some() {}
        let store_error: Option<StoreFailure> = match writer.await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e),
            Err(e) => Some(StoreFailure::task("writer task", &e)),
        };
        self.shared.progress.finish_and_clear();
        let finished_at = Utc::now();

        let reauth = self.shared.reauth.lock().expect("lock").clone();
        let failures = self.shared.failures.lock().expect("lock").clone();
        let version = self.shared.client.version();
        let retired_metrics = self.shared.retired.lock().expect("lock").iter().map(|m| (m.clone(), version)).collect();
        let counts: Vec<PageCounts> = pages
            .iter()
            .map(|(ctx, _)| {
                let c = &ctx.counters;
                PageCounts {
                    tenant: ctx.target.scope.as_str().to_owned(),
                    practice: Some(ctx.target.practice.clone()),
                    page: ctx.target.page.to_string(),
                    requests: c.requests.load(Ordering::Relaxed),
                    retries: c.retries.load(Ordering::Relaxed),
                    throttled_ms: c.throttled_ms.load(Ordering::Relaxed),
                    rows_written: c.rows_written.load(Ordering::Relaxed),
                    errors: c.errors.load(Ordering::Relaxed),
                }
            })
            .collect();
        let practices =
            practice_records(&run_id, started_at, finished_at, &counts, &reauth, &failures, store_error.is_some());
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
            planned: Planned { windows: total, through: opts.plan.today - Days::days(1), earliest },
            graph_host: self.shared.client.host(),
            store_error,
        };
        let place = self.record(&scopes, &report).await;
        tracing::info!(
            run_id = report.run_id,
            rows = report.rows_written,
            requests = report.requests,
            clean = report.is_clean(),
            "ingest finished"
        );
        Ok((report, place))
    }

    /// Records the run in the store; when the store cannot take it, in a local JSON file.
    async fn record(&self, scopes: &BTreeMap<String, WriteScope>, report: &RunReport) -> RunRecordPlace {
        let mut failed = None;
        for (tenant, scope) in scopes {
            let records: Vec<IngestRunRecord> =
                report.practices.iter().filter(|p| &p.tenant == tenant).map(|p| p.record.clone()).collect();
            if let Err(e) = self.store.record_run(scope, &records).await {
                tracing::warn!(tenant, error = %e, "could not record the run in the store");
                failed = Some(e.to_string());
                break;
            }
        }
        let Some(why) = failed else { return RunRecordPlace::Store };
        let Some(dir) = &self.shared.opts.fallback_record_dir else { return RunRecordPlace::Lost(why) };
        let path = dir.join(format!("ingest-run-{}.json", report.run_id));
        let body: Vec<serde_json::Value> =
            report.practices.iter().map(|p| serde_json::json!({ "tenant": p.tenant, "record": p.record })).collect();
        let written = std::fs::create_dir_all(dir)
            .and_then(|_| std::fs::write(&path, serde_json::to_vec_pretty(&body).unwrap_or_default()));
        match written {
            Ok(()) => RunRecordPlace::File(path),
            Err(e) => RunRecordPlace::Lost(format!("{why}; and writing {} failed: {e}", path.display())),
        }
    }
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

/// Fetches a stream's windows in order. A metric missing from one window (Meta refused it) keeps its checkpoint
/// where it was for the rest of the run, so a later window cannot carry it past the gap.
async fn ingest_stream(shared: &Shared, ctx: &PageCtx, plan: &StreamPlan, tx: &mpsc::Sender<WriteItem>) {
    let mut missing: HashSet<(Period, &'static str)> = HashSet::new();
    let mut posts_incomplete = false;
    for window in &plan.windows {
        if shared.stop.load(Ordering::Relaxed) || ctx.dead.load(Ordering::Relaxed) {
            return;
        }
        let checkpoint = |stream: Stream| Checkpoint {
            practice: ctx.target.practice.clone(),
            page: ctx.target.page.clone(),
            stream,
            through_day: window.to,
            updated_at: Utc::now(),
        };
        let result = match plan.fetch {
            Fetch::PageInsights => fetch_insights(shared, ctx, plan.metrics.clone(), *window).await.map(|f| {
                for &(period, m) in &plan.metrics {
                    if !f.delivered.iter().any(|&(p, d)| p == period && d.name == m.name) {
                        missing.insert((period, m.name));
                    }
                }
                let cps = plan
                    .metrics
                    .iter()
                    .filter(|(period, m)| !missing.contains(&(*period, m.name)))
                    .map(|(period, m)| checkpoint(Stream::PageMetric(*period, m.canonical)))
                    .collect();
                (f.facts, Vec::new(), Vec::new(), cps)
            }),
            Fetch::Posts => {
                let metrics = plan.metrics.iter().map(|(_, m)| *m).collect();
                fetch_posts(shared, ctx, metrics, *window).await.map(|p| {
                    posts_incomplete |= !p.complete;
                    let cps = if posts_incomplete { Vec::new() } else { vec![checkpoint(Stream::Posts)] };
                    (Vec::new(), p.posts, p.snapshots, cps)
                })
            }
        };
        match result {
            Ok((facts, posts, snapshots, checkpoints)) => {
                let item = WriteItem {
                    scope: ctx.target.scope.clone(),
                    page: ctx.target.page.to_string(),
                    facts,
                    posts,
                    snapshots,
                    checkpoints,
                };
                if tx.send(item).await.is_err() {
                    return; // the writer stopped (store unavailable): nothing more can be kept
                }
                shared.progress.inc(1);
            }
            Err(e) => {
                report_failure(shared, ctx, &plan.label(), &e);
                return;
            }
        }
    }
}
