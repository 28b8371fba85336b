//! What every part of a run shares: the options it was given, the Graph client and rate budget, what it has found
//! so far (pages to re-authorise, failures, retired metrics), and each page's context and counters. The executor
//! makes them; calls, fetches and the writer read them. Nothing here imports those parts, so they import it without a
//! loop.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::ProgressBar;
use tokio::sync::Semaphore;

use crate::budget::RateBudget;
use crate::client::GraphClient;
use crate::parse::Origin;
use crate::plan::{PlanOptions, Target};
use crate::retry::RetryPolicy;
use crate::summary::{Failure, Reauth};

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
    /// Where the run record goes when the store cannot take it (the store went away): a JSON file per run.
    pub fallback_record_dir: Option<PathBuf>,
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
            fallback_record_dir: None,
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub requests: AtomicU64,
    pub retries: AtomicU64,
    pub throttled_ms: AtomicU64,
    pub rows_written: AtomicU64,
    pub errors: AtomicU64,
    pub bytes: AtomicU64,
}

pub(crate) struct PageCtx {
    pub target: Target,
    pub origin: Origin,
    pub dead: AtomicBool,
    pub counters: Arc<Counters>,
}

pub(crate) struct Shared {
    pub client: GraphClient,
    pub opts: IngestOptions,
    pub budget: RateBudget,
    pub semaphore: Semaphore,
    pub retired: Mutex<BTreeSet<String>>,
    pub reauth: Mutex<Vec<Reauth>>,
    pub failures: Mutex<Vec<Failure>>,
    pub stop: AtomicBool,
    pub unreachable_logged: AtomicBool,
    pub progress: ProgressBar,
}
