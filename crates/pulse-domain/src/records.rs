//! The records the ingester writes and the pipelines read. They carry no tenant id: the store stamps the tenant
//! from the `TenantScope` it was given, so a record cannot be written into another tenant's data.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::{ApiVersion, CanonicalMetric, DomainError, PageId, Period, PostId, PracticeCode};

/// One value of one page metric: a total (`breakdown` empty) or one cell of a breakdown (`breakdown` = `F.25-34`).
///
/// Identity is (page, metric, period, day, breakdown). Writing the same identity again replaces the value; the one
/// with the latest `fetched_at` wins, so a re-run never doubles a figure and a corrected value supersedes the old.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PageInsightFact {
    pub practice: PracticeCode,
    pub page: PageId,
    pub metric: CanonicalMetric,
    /// The Graph metric name the value came from (it changes across API versions): the catalogue's own string
    /// ([`crate::graph_metric_name`]).
    pub graph_metric: &'static str,
    pub period: Period,
    /// The last Pacific-time day the value covers (see [`crate::time`]).
    pub day: NaiveDate,
    /// Empty for a total, or an age/gender key (`F.25-34`). Shared across a response's facts.
    pub breakdown: Arc<str>,
    pub value: f64,
    pub api_version: ApiVersion,
    pub fetched_at: DateTime<Utc>,
}

impl PageInsightFact {
    pub fn key(&self) -> (&str, CanonicalMetric, Period, NaiveDate, &str) {
        (self.page.as_str(), self.metric, self.period, self.day, &self.breakdown)
    }
}

/// A post as listed by `/{page-id}/published_posts`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Post {
    pub practice: PracticeCode,
    pub page: PageId,
    pub post: PostId,
    pub created_time: DateTime<Utc>,
    /// `photo`, `video`, `link`, `status`, ...
    pub post_type: String,
    pub message: String,
    pub permalink: String,
    pub fetched_at: DateTime<Utc>,
}

/// A post's lifetime value as read on `snapshot_day`; re-read over the post's first weeks to keep its growth curve.
/// Identity is (post, metric, breakdown, snapshot_day).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PostInsightSnapshot {
    pub practice: PracticeCode,
    pub page: PageId,
    pub post: PostId,
    pub metric: CanonicalMetric,
    pub graph_metric: &'static str,
    pub breakdown: Arc<str>,
    pub snapshot_day: NaiveDate,
    pub value: f64,
    pub api_version: ApiVersion,
    pub fetched_at: DateTime<Utc>,
}

/// How a practice's part of an ingest run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Every page and stream fetched and stored.
    Ok,
    /// Stopped early because the store went away: what was acknowledged is kept, the rest is fetched next run.
    Partial,
    /// A page failed or needs re-authorisation.
    Failed,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Ok => "ok",
            RunStatus::Partial => "partial",
            RunStatus::Failed => "failed",
        }
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RunStatus {
    type Err = DomainError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ok" => Ok(RunStatus::Ok),
            "partial" => Ok(RunStatus::Partial),
            "failed" => Ok(RunStatus::Failed),
            _ => Err(DomainError::Stream(format!("run status `{s}`"))),
        }
    }
}

/// What an ingest checkpoint tracks, per page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stream {
    /// Every page metric of a period (checkpoints written before checkpoints were kept per metric).
    PageInsights(Period),
    /// One page metric of a period: checkpoints are kept per metric, so a metric Meta refused in a window holds its
    /// own checkpoint back (and the next run fills the gap) while the others move on.
    PageMetric(Period, CanonicalMetric),
    Posts,
    PostInsights,
}

impl fmt::Display for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stream::PageInsights(p) => write!(f, "page_insights/{p}"),
            Stream::PageMetric(p, m) => write!(f, "page_insights/{p}/{}", m.as_str()),
            Stream::Posts => f.write_str("posts"),
            Stream::PostInsights => f.write_str("post_insights"),
        }
    }
}

impl FromStr for Stream {
    type Err = DomainError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "posts" => Ok(Stream::Posts),
            "post_insights" => Ok(Stream::PostInsights),
            _ => {
                let rest = s.strip_prefix("page_insights/").ok_or_else(|| DomainError::Stream(s.to_owned()))?;
                match rest.split_once('/') {
                    None => rest.parse().map(Stream::PageInsights).map_err(|_| DomainError::Stream(s.to_owned())),
                    Some((period, metric)) => {
                        let period: Period = period.parse().map_err(|_| DomainError::Stream(s.to_owned()))?;
                        let metric: CanonicalMetric = metric.parse().map_err(|_| DomainError::Stream(s.to_owned()))?;
                        Ok(Stream::PageMetric(period, metric))
                    }
                }
            }
        }
    }
}

/// How far a page's stream has been durably stored. Identity is (page, stream); the latest `updated_at` wins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub practice: PracticeCode,
    pub page: PageId,
    pub stream: Stream,
    /// Every day up to and including this one has been acknowledged by the store.
    pub through_day: NaiveDate,
    pub updated_at: DateTime<Utc>,
}

/// One practice's line in an ingest run's summary. Identity is (run_id, practice).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngestRunRecord {
    pub run_id: String,
    pub practice: PracticeCode,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub requests: u64,
    pub retries: u64,
    pub throttled_ms: u64,
    pub rows_written: u64,
    pub errors: u64,
    pub pages_needing_reauth: u32,
    /// `ok`, `partial` or `failed`.
    pub status: RunStatus,
    /// What went wrong, in words, with no secret in it.
    pub message: String,
}

/// One research export as the audit trail keeps it: one record per tenant the export covered, all with the same
/// `export_id`. Appended, never changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportAuditRecord {
    pub export_id: String,
    pub created_at: DateTime<Utc>,
    /// Who asked: `operator` (the CLI, holding the config) or `key <id>` (an API key).
    pub requested_by: String,
    /// Every tenant the export covered, comma-separated.
    pub tenants: String,
    pub project: String,
    /// The purpose or data-sharing agreement reference.
    pub purpose: String,
    pub spec_hash: String,
    /// The export spec, as JSON.
    pub spec: String,
    pub rows: u64,
    /// Each file's SHA-256, as JSON `{name: hash}`.
    pub files: String,
}

/// One event in a tenant's operational journal: scheduled runs, digest deliveries, digest subscriptions. The journal
/// is append-only; the state of a `key` in a `stream` is what its events say, read in order (`at`, then `id`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateEvent {
    /// Unique per event (a UUID): writing the same id twice stores it once.
    pub id: String,
    /// What the events are about: `schedule`, `delivery`, `subscription`.
    pub stream: String,
    /// Which thing in the stream: a schedule's run, a (list, week, recipient) delivery, a (list, recipient).
    pub key: String,
    pub at: DateTime<Utc>,
    /// The event itself, as JSON (the application layer owns its shape).
    pub body: String,
}

/// Who holds a named lease (a lock in the store that expires), and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub name: String,
    /// `host:pid:uuid` of the process holding it.
    pub holder: String,
    pub acquired_at: DateTime<Utc>,
    /// The lease ends here unless renewed; a release sets it to the release time.
    pub expires_at: DateTime<Utc>,
}

impl Lease {
    /// Whether the holder is a process on this host that has exited (its lease can be taken at once rather than
    /// after it expires). Unknown hosts and non-Linux systems count as alive.
    pub fn holder_exited(&self) -> bool {
        holder_exited(&self.holder)
    }
}

/// Whether the process a holder name (`host:pid:…`) stands for is known to be gone: it ran on this machine and its pid
/// is no longer there. A holder on another machine is never judged gone.
pub fn holder_exited(holder: &str) -> bool {
    let mut parts = holder.splitn(3, ':');
    let (Some(host), Some(pid)) = (parts.next(), parts.next()) else { return false };
    if host != this_host() || !cfg!(target_os = "linux") {
        return false;
    }
    pid.parse::<u32>()
        .is_ok_and(|pid| pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists())
}

/// This machine's name, for lease holders (`/etc/hostname`, else `HOSTNAME`, else `localhost`), with the process-id
/// namespace when it can be read (`name~4026531836`): two containers may share a host name, but a pid is only
/// meaningful in its own namespace, so a holder is judged gone only by a process that shares both.
pub fn this_host() -> String {
    let name = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into())
        .replace([':', '~'], "_");
    let namespace = std::fs::read_link("/proc/self/ns/pid").ok().and_then(|l| {
        let l = l.to_string_lossy().into_owned();
        l.strip_prefix("pid:[").and_then(|r| r.strip_suffix(']')).map(str::to_owned)
    });
    match namespace {
        Some(ns) => format!("{name}~{ns}"),
        None => name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_round_trip() {
        for s in [
            Stream::Posts,
            Stream::PostInsights,
            Stream::PageInsights(Period::Day),
            Stream::PageInsights(Period::Days28),
        ] {
            assert_eq!(s.to_string().parse::<Stream>().unwrap(), s);
        }
        assert!("page_insights/month".parse::<Stream>().is_err());
    }
}
