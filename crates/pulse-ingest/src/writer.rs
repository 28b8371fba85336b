//! The batch writer: receives fetched windows, writes them in batches, and saves checkpoints only after the store
//! acknowledged the data they cover.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use pulse_config::WriteScope;
use pulse_domain::{Checkpoint, PageInsightFact, Post, PostInsightSnapshot, Stream};
use pulse_store::{Store, StoreError, TenantBatch};
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::context::{Counters, Shared};
use crate::retry::jitter;
use crate::summary::StoreFailure;

/// Data fetched for one window, with the checkpoints it completes (none when a metric is missing from it).
pub(crate) struct WriteItem {
    pub scope: WriteScope,
    pub page: String,
    pub facts: Vec<PageInsightFact>,
    pub posts: Vec<Post>,
    pub snapshots: Vec<PostInsightSnapshot>,
    pub checkpoints: Vec<Checkpoint>,
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

type Buffers = BTreeMap<String, (WriteScope, Buffer)>;
type Flushing = tokio::task::JoinHandle<Result<(), StoreFailure>>;

/// Receives fetched data, writes it in batches, and saves checkpoints after the store acknowledged the data.
///
/// A full batch is written in the background while the next one fills, so fetching and parsing go on during an
/// insert; at most one batch is being written at a time (the next waits for it), so batches, and the checkpoints
/// they carry, reach the store in order, and no more than two batches are held in memory.
pub(crate) async fn write_loop<S: Store + Clone + 'static>(
    store: S,
    mut rx: mpsc::Receiver<WriteItem>,
    shared: Arc<Shared>,
    counters: HashMap<String, Arc<Counters>>,
) -> Result<(), StoreFailure> {
    let counters = Arc::new(counters);
    let mut buffers: Buffers = BTreeMap::new();
    let mut buffered = 0usize;
    let mut flushing: Option<Flushing> = None;
    let mut written: BTreeMap<String, WriteScope> = BTreeMap::new();
    let mut tick = tokio::time::interval(Duration::from_secs(15));
    tick.tick().await;
    // Starts writing `buffers` in the background (the batch before it has been settled).
    let flush = |buffers: &mut Buffers, flushing: &mut Option<Flushing>| {
        debug_assert!(flushing.is_none());
        let batch = std::mem::take(buffers);
        let (store, shared, counters) = (store.clone(), shared.clone(), counters.clone());
        *flushing = Some(tokio::spawn(async move { flush_all(&store, &shared, batch, &counters).await }));
    };
    loop {
        let item = tokio::select! {
            item = rx.recv() => item,
            _ = tick.tick() => {
                if buffered > 0 || buffers.values().any(|(_, b)| !b.checkpoints.is_empty()) {
                    settle(flushing.take()).await?;
                    flush(&mut buffers, &mut flushing);
                    buffered = 0;
                }
                continue;
            }
        };
        let Some(item) = item else { break };
        written.entry(item.scope.as_str().to_owned()).or_insert_with(|| item.scope.clone());
        let (_, buf) =
            buffers.entry(item.scope.as_str().to_owned()).or_insert_with(|| (item.scope.clone(), Buffer::default()));
        let rows = item.facts.len() + item.posts.len() + item.snapshots.len();
        *buf.rows_by_page.entry(item.page).or_default() += rows as u64;
        buf.facts.extend(item.facts);
        buf.posts.extend(item.posts);
        buf.snapshots.extend(item.snapshots);
        for cp in item.checkpoints {
            let key = (cp.page.to_string(), cp.stream);
            match buf.checkpoints.get(&key) {
                Some(old) if old.through_day >= cp.through_day => {}
                _ => {
                    buf.checkpoints.insert(key, cp);
                }
            }
        }
        buffered += rows;
        if buffered >= shared.opts.flush_rows {
            // Back-pressure: a full batch waits for the one being written before it starts.
            settle(flushing.take()).await?;
            flush(&mut buffers, &mut flushing);
            buffered = 0;
        }
    }
    settle(flushing.take()).await?;
    let scopes: Vec<WriteScope> = written.into_values().collect();
    flush_all(&store, &shared, buffers, &counters).await?;
    // Everything is acknowledged: a store that appends may fold it now. A failure loses nothing (reads merge).
    for scope in &scopes {
        if let Err(e) = store.settle(scope).await {
            tracing::warn!(tenant = %scope, error = %e, "the store could not compact what this run wrote; reads are unaffected, the next run tries again");
        }
    }
    Ok(())
}

/// Waits for a background batch write.
async fn settle(flushing: Option<Flushing>) -> Result<(), StoreFailure> {
    match flushing {
        None => Ok(()),
        Some(handle) => match handle.await {
            Ok(written) => written,
            Err(e) => Err(StoreFailure::task("batch writer task", &e)),
        },
    }
}

/// Writes a batch: every tenant's data in one [`Store::write_batch`] (ClickHouse: one insert per table and shard),
/// each tenant's checkpoints after its data.
async fn flush_all<S: Store>(
    store: &S,
    shared: &Shared,
    mut buffers: Buffers,
    counters: &HashMap<String, Arc<Counters>>,
) -> Result<(), StoreFailure> {
    buffers.retain(|_, (_, buf)| buf.rows() > 0 || !buf.checkpoints.is_empty());
    if buffers.is_empty() {
        return Ok(());
    }
    let rows: usize = buffers.values().map(|(_, buf)| buf.rows()).sum();
    let started = Instant::now();
    let checkpoints: Vec<Vec<Checkpoint>> =
        buffers.values().map(|(_, buf)| buf.checkpoints.values().cloned().collect()).collect();
    let batch: Vec<TenantBatch<'_>> = buffers
        .values()
        .zip(&checkpoints)
        .map(|((scope, buf), checkpoints)| TenantBatch {
            scope,
            facts: &buf.facts,
            posts: &buf.posts,
            snapshots: &buf.snapshots,
            checkpoints,
        })
        .collect();
    let span = tracing::debug_span!("store_write", tenants = buffers.len(), rows);
    let outcome = with_store_retry(shared, "data", || store.write_batch(&batch)).instrument(span).await;
    drop(batch);
    if let Err((what, waited, error)) = outcome {
        shared.stop.store(true, Ordering::Relaxed);
        let tenants: Vec<&str> = buffers.keys().map(String::as_str).collect();
        let tenant = match tenants.len() {
            n if n > 3 => format!("{} and {} more", tenants[..3].join(", "), n - 3),
            _ => tenants.join(", "),
        };
        return Err(StoreFailure { what, tenant, rows, waited, error });
    }
    for (tenant, (_, buf)) in buffers.iter_mut() {
        metrics::counter!("pulse_ingest_rows_total", "tenant" => tenant.clone()).increment(buf.rows() as u64);
        for (page, n) in buf.rows_by_page.drain() {
            if let Some(c) = counters.get(&page) {
                c.rows_written.fetch_add(n, Ordering::Relaxed);
            }
        }
    }
    tracing::debug!(tenants = buffers.len(), rows, ms = started.elapsed().as_millis() as u64, "batch written");
    shared.progress.set_message(format!(
        "{} rows written",
        counters.values().map(|c| c.rows_written.load(Ordering::Relaxed)).sum::<u64>()
    ));
    Ok(())
}

/// Retries a store write while the error is transient, for at most `store_retry_for`.
async fn with_store_retry<'a, F, Fut>(
    shared: &Shared,
    what: &'static str,
    f: F,
) -> Result<(), (&'static str, Option<Duration>, StoreError)>
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
                let waited = e.is_transient().then(|| started.elapsed());
                return Err((what, waited, e));
            }
        }
    }
}
