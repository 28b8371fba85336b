//! What a run did: per-practice records, the problems found, and the words a person reads at the end.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use pulse_domain::{ApiVersion, IngestRunRecord, PracticeCode, RunStatus};
use pulse_store::StoreError;

/// A page whose token Meta rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reauth {
    pub tenant: String,
    pub practice: PracticeCode,
    pub page: String,
    pub message: String,
}

/// Why a page stream could not be fetched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The Graph API could not be reached at all (connection refused, DNS, TLS, timeout).
    Unreachable,
    /// Meta refused the request (permission, bad request) or retries ran out.
    Refused,
}

/// A page stream that could not be fetched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub tenant: String,
    pub practice: PracticeCode,
    pub page: String,
    pub stream: String,
    pub kind: FailureKind,
    pub message: String,
}

/// One practice's line in the run summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PracticeSummary {
    pub tenant: String,
    pub record: IngestRunRecord,
}

/// What the plan asked for, so an empty run can say why it was empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Planned {
    /// Windows to fetch across all pages.
    pub windows: u64,
    /// The last complete Pacific-time day (the day before `today`).
    pub through: NaiveDate,
    /// The earliest day any window started at.
    pub earliest: Option<NaiveDate>,
}

/// What a run did.
#[derive(Debug)]
pub struct RunReport {
    pub run_id: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub practices: Vec<PracticeSummary>,
    pub reauth: Vec<Reauth>,
    pub failures: Vec<Failure>,
    /// Graph metrics Meta rejected as invalid in this API version during the run. Their checkpoints did not move,
    /// so the next run asks for the missing days again.
    pub retired_metrics: Vec<(String, ApiVersion)>,
    pub rows_written: u64,
    pub requests: u64,
    pub bytes: u64,
    pub planned: Planned,
    /// Where the Graph API is (for the one-line "unreachable" message).
    pub graph_host: String,
    /// Set when the store stayed unavailable: the run stopped, and unwritten data will be fetched again next run.
    pub store_error: Option<StoreFailure>,
}

impl RunReport {
    /// Whether every page was ingested completely.
    pub fn is_clean(&self) -> bool {
        self.reauth.is_empty() && self.failures.is_empty() && self.store_error.is_none()
    }

    /// Whether nothing at all could be fetched because the Graph API was unreachable.
    pub fn graph_unreachable(&self) -> bool {
        !self.failures.is_empty()
            && self.failures.iter().all(|f| f.kind == FailureKind::Unreachable)
            && self.rows_written == 0
    }

    /// A sentence for a run that stored nothing although nothing failed, saying why; `None` otherwise.
    pub fn empty_reason(&self) -> Option<String> {
        if !self.is_clean() || self.rows_written > 0 {
            return None;
        }
        if self.planned.windows == 0 {
            return Some(format!(
                "nothing was due: every page is stored through {}, the last complete US-Pacific day; the next day \
                 becomes due after midnight Pacific",
                self.planned.through
            ));
        }
        let from = self.planned.earliest.map_or_else(String::new, |d| format!(" between {d} and"));
        Some(format!(
            "nothing was stored: the Graph API answered {} requests with no values{from} {}. If the pages' data ends \
             earlier (an inactive page, or a simulated world), pass --today with the first day after it, and --since \
             for where a backfill starts",
            self.requests, self.planned.through
        ))
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
        out.push_str(&self.problems());
        out
    }

    /// The problems, one line each; an unreachable Graph API is one line, not one per page.
    pub fn problems(&self) -> String {
        let mut out = String::new();
        for r in &self.reauth {
            out.push_str(&format!("NEEDS RE-AUTHORISATION: {}\n", r.message));
        }
        if self.graph_unreachable() {
            let pages = self.failures.iter().map(|f| &f.page).collect::<std::collections::BTreeSet<_>>().len();
            out.push_str(&format!(
                "GRAPH API UNREACHABLE: {} ({}); none of {pages} pages could be fetched. Check graph.base_url in the \
                 config and the network, then run again (checkpoints keep what was stored)\n",
                self.graph_host, self.failures[0].message
            ));
        } else {
            for f in &self.failures {
                out.push_str(&format!(
                    "FAILED: page {} (practice {}, tenant {}) {}: {}\n",
                    f.page, f.practice, f.tenant, f.stream, f.message
                ));
            }
        }
        for (m, v) in &self.retired_metrics {
            out.push_str(&format!(
                "METRIC REFUSED: Meta rejected `{m}` as not a valid insights metric in {v}; the rest of the sync went on, \
                 its checkpoints stayed where they were, so the next run asks for those days again (if Meta has \
                 retired it, update the metric catalogue)\n"
            ));
        }
        if let Some(e) = &self.store_error {
            out.push_str(&format!("STORE UNAVAILABLE: {e}\n"));
        }
        out
    }
}

/// Per-practice counters collected by the executor, before they become records.
#[derive(Debug, Clone, Default)]
pub(crate) struct PageCounts {
    pub tenant: String,
    pub practice: Option<PracticeCode>,
    pub page: String,
    pub requests: u64,
    pub retries: u64,
    pub throttled_ms: u64,
    pub rows_written: u64,
    pub errors: u64,
}

/// Folds page counters and problems into one record per practice.
pub(crate) fn practice_records(
    run_id: &str,
    started_at: DateTime<Utc>,
    finished_at: DateTime<Utc>,
    pages: &[PageCounts],
    reauth: &[Reauth],
    failures: &[Failure],
    store_failed: bool,
) -> Vec<PracticeSummary> {
    let mut by_practice: BTreeMap<(String, PracticeCode), IngestRunRecord> = BTreeMap::new();
    for c in pages {
        let Some(practice) = c.practice.clone() else { continue };
        let rec = by_practice.entry((c.tenant.clone(), practice.clone())).or_insert_with(|| IngestRunRecord {
            run_id: run_id.to_owned(),
            practice,
            started_at,
            finished_at,
            requests: 0,
            retries: 0,
            throttled_ms: 0,
            rows_written: 0,
            errors: 0,
            pages_needing_reauth: 0,
            status: RunStatus::Ok,
            message: String::new(),
        });
        rec.requests += c.requests;
        rec.retries += c.retries;
        rec.throttled_ms += c.throttled_ms;
        rec.rows_written += c.rows_written;
        rec.errors += c.errors;
        let mut problems: Vec<String> = reauth.iter().filter(|r| r.page == c.page).map(|r| r.message.clone()).collect();
        problems.extend(failures.iter().filter(|f| f.page == c.page).map(|f| format!("{}: {}", f.stream, f.message)));
        if reauth.iter().any(|r| r.page == c.page) {
            rec.pages_needing_reauth += 1;
        }
        if !problems.is_empty() {
            rec.status = RunStatus::Failed;
            if !rec.message.is_empty() {
                rec.message.push_str("; ");
            }
            rec.message.push_str(&problems.join("; "));
        }
    }
    if store_failed {
        for rec in by_practice.values_mut() {
            if rec.status == RunStatus::Ok {
                rec.status = RunStatus::Partial;
            }
        }
    }
    by_practice.into_iter().map(|((tenant, _), record)| PracticeSummary { tenant, record }).collect()
}

/// Why the writer stopped: the store refused or stayed unreachable.
#[derive(Debug, thiserror::Error)]
#[error(
    "writing {what} for tenant {tenant} failed{}: {error}; {rows} fetched rows were not written (or not all of \
     them) and no checkpoint was advanced past data the store did not acknowledge, so the next run fetches them again",
    .waited.map(|w| format!(" for {:.0?}", w)).unwrap_or_default()
)]
pub struct StoreFailure {
    pub what: &'static str,
    /// The tenant, or the tenants of the batch (comma-separated).
    pub tenant: String,
    pub rows: usize,
    /// How long transient errors were retried, when they were.
    pub waited: Option<Duration>,
    pub error: StoreError,
}

impl StoreFailure {
    /// A writer task that panicked or was cancelled: nothing after its last acknowledged batch was written.
    pub(crate) fn task(what: &str, e: &tokio::task::JoinError) -> Self {
        StoreFailure {
            what: "data",
            tenant: String::new(),
            rows: 0,
            waited: None,
            error: StoreError::Invalid { what: what.into(), reason: e.to_string() },
        }
    }
}
