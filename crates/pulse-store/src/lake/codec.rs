//! Records to and from Arrow batches, one impl per dataset. The tenant column is stamped on write and checked on read.

use arrow::record_batch::RecordBatch;
use chrono::{Datelike, NaiveDate};
use pulse_domain::{
    Checkpoint, ExportAuditRecord, IngestRunRecord, Lease, PageId, PageInsightFact, Post, PostId, PostInsightSnapshot,
    PracticeCode, StateEvent,
};

use crate::util::{BatchBuilder, Columns, from_micros, graph_metric, i32_to_day, micros, parse_field};
use crate::{Result, StoreError};

/// A record kept in a lake dataset.
pub(crate) trait LakeRecord: Clone + Send + Sync + 'static {
    const DATASET: &'static str;
    type Key: Ord + Clone + Send;
    fn key(&self) -> Self::Key;
    /// Higher wins when two records share a key.
    fn version(&self) -> i64;
    /// The day whose month partitions the record; `None` for unpartitioned datasets.
    fn partition_day(&self) -> Option<NaiveDate>;
    fn to_batch(tenant: &str, rows: &[&Self]) -> RecordBatch;
    fn from_batch(tenant: &str, batch: &RecordBatch) -> Result<Vec<Self>>;
}

pub(crate) fn month_of(day: NaiveDate) -> String {
    format!("{:04}-{:02}", day.year(), day.month())
}

fn check_tenant(what: &str, tenant: &str, batch: &RecordBatch) -> Result<()> {
    let cols = Columns::new(batch, what);
    let tenants = cols.str("tenant_id")?;
    if let Some(other) = tenants.iter().flatten().find(|t| *t != tenant) {
        return Err(StoreError::Invalid {
            what: what.to_owned(),
            reason: format!("a row of tenant `{other}` is in tenant `{tenant}`'s partition"),
        });
    }
    Ok(())
}

impl LakeRecord for PageInsightFact {
    const DATASET: &'static str = "page_insights";
    type Key = (std::sync::Arc<str>, &'static str, &'static str, PageId, NaiveDate);

    /// Shared ids and keys: building a key is reference counts, not copies. The order of its fields is the order of
    /// rows in the files (parts and compacted files are written in key order): totals (`breakdown = ''`) first, then
    /// each metric and period together, so a scan for totals or for a few metrics skips the other row groups by their
    /// statistics ([`super::ROW_GROUP_ROWS`] rows each).
    fn key(&self) -> Self::Key {
        (self.breakdown.clone(), self.metric.as_str(), self.period.as_str(), self.page.clone(), self.day)
    }

    fn version(&self) -> i64 {
        micros(self.fetched_at)
    }

    fn partition_day(&self) -> Option<NaiveDate> {
        Some(self.day)
    }

    fn to_batch(tenant: &str, rows: &[&Self]) -> RecordBatch {
        BatchBuilder::default()
            .str("tenant_id", rows.iter().map(|_| tenant))
            .str("practice_code", rows.iter().map(|r| r.practice.as_str()))
            .str("page_id", rows.iter().map(|r| r.page.as_str()))
            .str("metric", rows.iter().map(|r| r.metric.as_str()))
            .str("graph_metric", rows.iter().map(|r| r.graph_metric))
            .str("period", rows.iter().map(|r| r.period.as_str()))
            .date("day", rows.iter().map(|r| r.day))
            .str("breakdown", rows.iter().map(|r| &*r.breakdown))
            .f64("value", rows.iter().map(|r| r.value))
            .str(
                "api_version",
                rows.iter().map(|r| r.api_version.to_string()).collect::<Vec<_>>().iter().map(String::as_str),
            )
            .ts("fetched_at", rows.iter().map(|r| r.fetched_at))
            .finish()
    }

    fn from_batch(tenant: &str, batch: &RecordBatch) -> Result<Vec<Self>> {
        const W: &str = "page insight fact";
        check_tenant(W, tenant, batch)?;
        let c = Columns::new(batch, W);
        let (practice, page, metric, graph, period) =
            (c.str("practice_code")?, c.str("page_id")?, c.str("metric")?, c.str("graph_metric")?, c.str("period")?);
        let (day, breakdown, value, version, fetched) =
            (c.date("day")?, c.str("breakdown")?, c.f64("value")?, c.str("api_version")?, c.ts("fetched_at")?);
        (0..batch.num_rows())
            .map(|i| {
                Ok(PageInsightFact {
                    practice: parse_field::<PracticeCode>(W, "practice_code", practice.value(i))?,
                    page: parse_field::<PageId>(W, "page_id", page.value(i))?,
                    metric: parse_field(W, "metric", metric.value(i))?,
                    graph_metric: graph_metric(W, graph.value(i))?,
                    period: parse_field(W, "period", period.value(i))?,
                    day: i32_to_day(day.value(i)),
                    breakdown: breakdown.value(i).into(),
                    value: value.value(i),
                    api_version: parse_field(W, "api_version", version.value(i))?,
                    fetched_at: from_micros(fetched.value(i)),
                })
            })
            .collect()
    }
}

impl LakeRecord for Post {
    const DATASET: &'static str = "posts";
    type Key = (String, String);

    fn key(&self) -> Self::Key {
        (self.page.to_string(), self.post.to_string())
    }

    fn version(&self) -> i64 {
        micros(self.fetched_at)
    }

    fn partition_day(&self) -> Option<NaiveDate> {
        Some(self.created_time.date_naive())
    }

    fn to_batch(tenant: &str, rows: &[&Self]) -> RecordBatch {
        BatchBuilder::default()
            .str("tenant_id", rows.iter().map(|_| tenant))
            .str("practice_code", rows.iter().map(|r| r.practice.as_str()))
            .str("page_id", rows.iter().map(|r| r.page.as_str()))
            .str("post_id", rows.iter().map(|r| r.post.as_str()))
            .ts("created_time", rows.iter().map(|r| r.created_time))
            .str("post_type", rows.iter().map(|r| r.post_type.as_str()))
            .str("message", rows.iter().map(|r| r.message.as_str()))
            .str("permalink", rows.iter().map(|r| r.permalink.as_str()))
            .ts("fetched_at", rows.iter().map(|r| r.fetched_at))
            .finish()
    }

    fn from_batch(tenant: &str, batch: &RecordBatch) -> Result<Vec<Self>> {
        const W: &str = "post";
        check_tenant(W, tenant, batch)?;
        let c = Columns::new(batch, W);
        let (practice, page, post, created) =
            (c.str("practice_code")?, c.str("page_id")?, c.str("post_id")?, c.ts("created_time")?);
        let (kind, message, link, fetched) =
            (c.str("post_type")?, c.str("message")?, c.str("permalink")?, c.ts("fetched_at")?);
        (0..batch.num_rows())
            .map(|i| {
                Ok(Post {
                    practice: parse_field(W, "practice_code", practice.value(i))?,
                    page: parse_field(W, "page_id", page.value(i))?,
                    post: parse_field::<PostId>(W, "post_id", post.value(i))?,
                    created_time: from_micros(created.value(i)),
                    post_type: kind.value(i).to_owned(),
                    message: message.value(i).to_owned(),
                    permalink: link.value(i).to_owned(),
                    fetched_at: from_micros(fetched.value(i)),
                })
            })
            .collect()
    }
}

impl LakeRecord for PostInsightSnapshot {
    const DATASET: &'static str = "post_insights";
    type Key = (PostId, &'static str, std::sync::Arc<str>, NaiveDate);

    fn key(&self) -> Self::Key {
        (self.post.clone(), self.metric.as_str(), self.breakdown.clone(), self.snapshot_day)
    }

    fn version(&self) -> i64 {
        micros(self.fetched_at)
    }

    fn partition_day(&self) -> Option<NaiveDate> {
        Some(self.snapshot_day)
    }

    fn to_batch(tenant: &str, rows: &[&Self]) -> RecordBatch {
        BatchBuilder::default()
            .str("tenant_id", rows.iter().map(|_| tenant))
            .str("practice_code", rows.iter().map(|r| r.practice.as_str()))
            .str("page_id", rows.iter().map(|r| r.page.as_str()))
            .str("post_id", rows.iter().map(|r| r.post.as_str()))
            .str("metric", rows.iter().map(|r| r.metric.as_str()))
            .str("graph_metric", rows.iter().map(|r| r.graph_metric))
            .str("breakdown", rows.iter().map(|r| &*r.breakdown))
            .date("snapshot_day", rows.iter().map(|r| r.snapshot_day))
            .f64("value", rows.iter().map(|r| r.value))
            .str(
                "api_version",
                rows.iter().map(|r| r.api_version.to_string()).collect::<Vec<_>>().iter().map(String::as_str),
            )
            .ts("fetched_at", rows.iter().map(|r| r.fetched_at))
            .finish()
    }

    fn from_batch(tenant: &str, batch: &RecordBatch) -> Result<Vec<Self>> {
        const W: &str = "post insight snapshot";
        check_tenant(W, tenant, batch)?;
        let c = Columns::new(batch, W);
        let (practice, page, post, metric, graph) =
            (c.str("practice_code")?, c.str("page_id")?, c.str("post_id")?, c.str("metric")?, c.str("graph_metric")?);
        let (breakdown, day, value, version, fetched) =
            (c.str("breakdown")?, c.date("snapshot_day")?, c.f64("value")?, c.str("api_version")?, c.ts("fetched_at")?);
        (0..batch.num_rows())
            .map(|i| {
                Ok(PostInsightSnapshot {
                    practice: parse_field(W, "practice_code", practice.value(i))?,
                    page: parse_field(W, "page_id", page.value(i))?,
                    post: parse_field(W, "post_id", post.value(i))?,
                    metric: parse_field(W, "metric", metric.value(i))?,
                    graph_metric: graph_metric(W, graph.value(i))?,
                    breakdown: breakdown.value(i).into(),
                    snapshot_day: i32_to_day(day.value(i)),
                    value: value.value(i),
                    api_version: parse_field(W, "api_version", version.value(i))?,
                    fetched_at: from_micros(fetched.value(i)),
                })
            })
            .collect()
    }
}

impl LakeRecord for Checkpoint {
    const DATASET: &'static str = "checkpoints";
    type Key = (String, String);

    fn key(&self) -> Self::Key {
        (self.page.to_string(), self.stream.to_string())
    }

    fn version(&self) -> i64 {
        micros(self.updated_at)
    }

    fn partition_day(&self) -> Option<NaiveDate> {
        None
    }

    fn to_batch(tenant: &str, rows: &[&Self]) -> RecordBatch {
        BatchBuilder::default()
            .str("tenant_id", rows.iter().map(|_| tenant))
            .str("practice_code", rows.iter().map(|r| r.practice.as_str()))
            .str("page_id", rows.iter().map(|r| r.page.as_str()))
            .str("stream", rows.iter().map(|r| r.stream.to_string()).collect::<Vec<_>>().iter().map(String::as_str))
            .date("through_day", rows.iter().map(|r| r.through_day))
            .ts("updated_at", rows.iter().map(|r| r.updated_at))
            .finish()
    }

    fn from_batch(tenant: &str, batch: &RecordBatch) -> Result<Vec<Self>> {
        const W: &str = "checkpoint";
        check_tenant(W, tenant, batch)?;
        let c = Columns::new(batch, W);
        let (practice, page, stream, through, updated) =
            (c.str("practice_code")?, c.str("page_id")?, c.str("stream")?, c.date("through_day")?, c.ts("updated_at")?);
        (0..batch.num_rows())
            .map(|i| {
                Ok(Checkpoint {
                    practice: parse_field(W, "practice_code", practice.value(i))?,
                    page: parse_field(W, "page_id", page.value(i))?,
                    stream: parse_field(W, "stream", stream.value(i))?,
                    through_day: i32_to_day(through.value(i)),
                    updated_at: from_micros(updated.value(i)),
                })
            })
            .collect()
    }
}

impl LakeRecord for IngestRunRecord {
    const DATASET: &'static str = "ingest_runs";
    type Key = (String, String);

    fn key(&self) -> Self::Key {
        (self.run_id.clone(), self.practice.to_string())
    }

    fn version(&self) -> i64 {
        micros(self.finished_at)
    }

    fn partition_day(&self) -> Option<NaiveDate> {
        None
    }

    fn to_batch(tenant: &str, rows: &[&Self]) -> RecordBatch {
        BatchBuilder::default()
            .str("tenant_id", rows.iter().map(|_| tenant))
            .str("run_id", rows.iter().map(|r| r.run_id.as_str()))
            .str("practice_code", rows.iter().map(|r| r.practice.as_str()))
            .ts("started_at", rows.iter().map(|r| r.started_at))
            .ts("finished_at", rows.iter().map(|r| r.finished_at))
            .u64("requests", rows.iter().map(|r| r.requests))
            .u64("retries", rows.iter().map(|r| r.retries))
            .u64("throttled_ms", rows.iter().map(|r| r.throttled_ms))
            .u64("rows_written", rows.iter().map(|r| r.rows_written))
            .u64("errors", rows.iter().map(|r| r.errors))
            .u32("pages_needing_reauth", rows.iter().map(|r| r.pages_needing_reauth))
            .str("status", rows.iter().map(|r| r.status.as_str()))
            .str("message", rows.iter().map(|r| r.message.as_str()))
            .finish()
    }

    fn from_batch(tenant: &str, batch: &RecordBatch) -> Result<Vec<Self>> {
        const W: &str = "ingest run";
        check_tenant(W, tenant, batch)?;
        let c = Columns::new(batch, W);
        let (run, practice, started, finished) =
            (c.str("run_id")?, c.str("practice_code")?, c.ts("started_at")?, c.ts("finished_at")?);
        let (requests, retries, throttled, rows, errors) =
            (c.u64("requests")?, c.u64("retries")?, c.u64("throttled_ms")?, c.u64("rows_written")?, c.u64("errors")?);
        let (reauth, status, message) = (c.u32("pages_needing_reauth")?, c.str("status")?, c.str("message")?);
        (0..batch.num_rows())
            .map(|i| {
                Ok(IngestRunRecord {
                    run_id: run.value(i).to_owned(),
                    practice: parse_field(W, "practice_code", practice.value(i))?,
                    started_at: from_micros(started.value(i)),
                    finished_at: from_micros(finished.value(i)),
                    requests: requests.value(i),
                    retries: retries.value(i),
                    throttled_ms: throttled.value(i),
                    rows_written: rows.value(i),
                    errors: errors.value(i),
                    pages_needing_reauth: reauth.value(i),
                    status: parse_field(W, "status", status.value(i))?,
                    message: message.value(i).to_owned(),
                })
            })
            .collect()
    }
}

impl LakeRecord for ExportAuditRecord {
    const DATASET: &'static str = "export_audit";
    type Key = String;

    fn key(&self) -> Self::Key {
        self.export_id.clone()
    }

    fn version(&self) -> i64 {
        micros(self.created_at)
    }

    fn partition_day(&self) -> Option<NaiveDate> {
        None
    }

    fn to_batch(tenant: &str, rows: &[&Self]) -> RecordBatch {
        BatchBuilder::default()
            .str("tenant_id", rows.iter().map(|_| tenant))
            .str("export_id", rows.iter().map(|r| r.export_id.as_str()))
            .ts("created_at", rows.iter().map(|r| r.created_at))
            .str("requested_by", rows.iter().map(|r| r.requested_by.as_str()))
            .str("tenants", rows.iter().map(|r| r.tenants.as_str()))
            .str("project", rows.iter().map(|r| r.project.as_str()))
            .str("purpose", rows.iter().map(|r| r.purpose.as_str()))
            .str("spec_hash", rows.iter().map(|r| r.spec_hash.as_str()))
            .str("spec", rows.iter().map(|r| r.spec.as_str()))
            .u64("rows", rows.iter().map(|r| r.rows))
            .str("files", rows.iter().map(|r| r.files.as_str()))
            .finish()
    }

    fn from_batch(tenant: &str, batch: &RecordBatch) -> Result<Vec<Self>> {
        const W: &str = "export audit record";
        check_tenant(W, tenant, batch)?;
        let c = Columns::new(batch, W);
        let (id, created, by, tenants) =
            (c.str("export_id")?, c.ts("created_at")?, c.str("requested_by")?, c.str("tenants")?);
        let (project, purpose, hash, spec) =
            (c.str("project")?, c.str("purpose")?, c.str("spec_hash")?, c.str("spec")?);
        let (rows, files) = (c.u64("rows")?, c.str("files")?);
        Ok((0..batch.num_rows())
            .map(|i| ExportAuditRecord {
                export_id: id.value(i).to_owned(),
                created_at: from_micros(created.value(i)),
                requested_by: by.value(i).to_owned(),
                tenants: tenants.value(i).to_owned(),
                project: project.value(i).to_owned(),
                purpose: purpose.value(i).to_owned(),
                spec_hash: hash.value(i).to_owned(),
                spec: spec.value(i).to_owned(),
                rows: rows.value(i),
                files: files.value(i).to_owned(),
            })
            .collect())
    }
}

impl LakeRecord for StateEvent {
    const DATASET: &'static str = "state_events";
    type Key = String;

    fn key(&self) -> Self::Key {
        self.id.clone()
    }

    fn version(&self) -> i64 {
        micros(self.at)
    }

    fn partition_day(&self) -> Option<NaiveDate> {
        None
    }

    fn to_batch(tenant: &str, rows: &[&Self]) -> RecordBatch {
        BatchBuilder::default()
            .str("tenant_id", rows.iter().map(|_| tenant))
            .str("id", rows.iter().map(|r| r.id.as_str()))
            .str("stream", rows.iter().map(|r| r.stream.as_str()))
            .str("key", rows.iter().map(|r| r.key.as_str()))
            .ts("at", rows.iter().map(|r| r.at))
            .str("body", rows.iter().map(|r| r.body.as_str()))
            .finish()
    }

    fn from_batch(tenant: &str, batch: &RecordBatch) -> Result<Vec<Self>> {
        const W: &str = "state event";
        check_tenant(W, tenant, batch)?;
        let c = Columns::new(batch, W);
        let (id, stream, key, at, body) = (c.str("id")?, c.str("stream")?, c.str("key")?, c.ts("at")?, c.str("body")?);
        Ok((0..batch.num_rows())
            .map(|i| StateEvent {
                id: id.value(i).to_owned(),
                stream: stream.value(i).to_owned(),
                key: key.value(i).to_owned(),
                at: from_micros(at.value(i)),
                body: body.value(i).to_owned(),
            })
            .collect())
    }
}

impl LakeRecord for Lease {
    const DATASET: &'static str = "leases";
    type Key = String;

    fn key(&self) -> Self::Key {
        self.name.clone()
    }

    /// The newest claim or release of a name wins (they are written under the lake's write lock, each stamped
    /// with the time it was made).
    fn version(&self) -> i64 {
        micros(self.acquired_at)
    }

    fn partition_day(&self) -> Option<NaiveDate> {
        None
    }

    fn to_batch(tenant: &str, rows: &[&Self]) -> RecordBatch {
        BatchBuilder::default()
            .str("tenant_id", rows.iter().map(|_| tenant))
            .str("name", rows.iter().map(|r| r.name.as_str()))
            .str("holder", rows.iter().map(|r| r.holder.as_str()))
            .ts("acquired_at", rows.iter().map(|r| r.acquired_at))
            .ts("expires_at", rows.iter().map(|r| r.expires_at))
            .finish()
    }

    fn from_batch(tenant: &str, batch: &RecordBatch) -> Result<Vec<Self>> {
        const W: &str = "lease";
        check_tenant(W, tenant, batch)?;
        let c = Columns::new(batch, W);
        let (name, holder, acquired, expires) =
            (c.str("name")?, c.str("holder")?, c.ts("acquired_at")?, c.ts("expires_at")?);
        Ok((0..batch.num_rows())
            .map(|i| Lease {
                name: name.value(i).to_owned(),
                holder: holder.value(i).to_owned(),
                acquired_at: from_micros(acquired.value(i)),
                expires_at: from_micros(expires.value(i)),
            })
            .collect())
    }
}
