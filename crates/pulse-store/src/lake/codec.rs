//! Records to and from Arrow batches, one impl per dataset. The tenant column is stamped on write and checked on read.

use arrow::record_batch::RecordBatch;
use chrono::{Datelike, NaiveDate};
use pulse_domain::{
    Checkpoint, ExportAuditRecord, IngestRunRecord, Lease, PageId, PageInsightFact, Post, PostId, PostInsightSnapshot,
    PracticeCode, StateEvent,
};

use crate::table as T;
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
    /// Parts a partition collects before the write that adds the last one compacts it. The datasets an ingest run
    /// settles at its end (`Store::settle` compacts them) collect more: a backfill writes a part to each partition
    /// per batch, and compacting a partition every 16 of them rewrote it again and again within one run.
    const COMPACT_AT: usize = 16;
    /// The columns of [`key`](Self::key), in its order, and the column of [`version`](Self::version), for a dataset
    /// whose key orders as its columns' values do (strings by their bytes, dates): writes and compactions then merge
    /// rows by identity in Arrow batches, not in a map of records (`dataset::latest_rows`; a compaction still checks
    /// every row as a read does). `None`: merged as records.
    const MERGE_COLUMNS: Option<(&'static [&'static str], &'static str)> = None;
}

pub(crate) fn month_of(day: NaiveDate) -> String {
    format!("{:04}-{:02}", day.year(), day.month())
}

pub(crate) fn check_tenant(what: &str, tenant: &str, batch: &RecordBatch) -> Result<()> {
    let cols = Columns::new(batch, what);
    let tenants = cols.str(T::TENANT_ID)?;
    if let Some(other) = tenants.iter().flatten().find(|t| *t != tenant) {
        return Err(StoreError::Invalid {
            what: what.to_owned(),
            reason: format!("a row of tenant `{other}` is in tenant `{tenant}`'s partition"),
        });
    }
    Ok(())
}

impl LakeRecord for PageInsightFact {
    const DATASET: &'static str = T::page_insights::TABLE.dataset();
    type Key = (std::sync::Arc<str>, &'static str, &'static str, PageId, NaiveDate);
    const COMPACT_AT: usize = 64;
    const MERGE_COLUMNS: Option<(&'static [&'static str], &'static str)> = Some((
        &[
            T::page_insights::BREAKDOWN,
            T::page_insights::METRIC,
            T::page_insights::PERIOD,
            T::page_insights::PAGE_ID,
            T::page_insights::DAY,
        ],
        T::page_insights::FETCHED_AT,
    ));

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
            .str(T::page_insights::TENANT_ID, rows.iter().map(|_| tenant))
            .str(T::page_insights::PRACTICE_CODE, rows.iter().map(|r| r.practice.as_str()))
            .str(T::page_insights::PAGE_ID, rows.iter().map(|r| r.page.as_str()))
            .str(T::page_insights::METRIC, rows.iter().map(|r| r.metric.as_str()))
            .str(T::page_insights::GRAPH_METRIC, rows.iter().map(|r| r.graph_metric))
            .str(T::page_insights::PERIOD, rows.iter().map(|r| r.period.as_str()))
            .date(T::page_insights::DAY, rows.iter().map(|r| r.day))
            .str(T::page_insights::BREAKDOWN, rows.iter().map(|r| &*r.breakdown))
            .f64(T::page_insights::VALUE, rows.iter().map(|r| r.value))
            .str(T::page_insights::API_VERSION, rows.iter().map(|r| crate::util::version_text(r.api_version)))
            .ts(T::page_insights::FETCHED_AT, rows.iter().map(|r| r.fetched_at))
            .finish_for(&T::page_insights::TABLE)
    }

    fn from_batch(tenant: &str, batch: &RecordBatch) -> Result<Vec<Self>> {
        const W: &str = "page insight fact";
        check_tenant(W, tenant, batch)?;
        let c = Columns::new(batch, W);
        let (practice, page, metric, graph, period) = (
            c.str(T::page_insights::PRACTICE_CODE)?,
            c.str(T::page_insights::PAGE_ID)?,
            c.str(T::page_insights::METRIC)?,
            c.str(T::page_insights::GRAPH_METRIC)?,
            c.str(T::page_insights::PERIOD)?,
        );
        let (day, breakdown, value, version, fetched) = (
            c.date(T::page_insights::DAY)?,
            c.str(T::page_insights::BREAKDOWN)?,
            c.f64(T::page_insights::VALUE)?,
            c.str(T::page_insights::API_VERSION)?,
            c.ts(T::page_insights::FETCHED_AT)?,
        );
        (0..batch.num_rows())
            .map(|i| {
                Ok(PageInsightFact {
                    practice: parse_field::<PracticeCode>(W, T::page_insights::PRACTICE_CODE, practice.value(i))?,
                    page: parse_field::<PageId>(W, T::page_insights::PAGE_ID, page.value(i))?,
                    metric: parse_field(W, T::page_insights::METRIC, metric.value(i))?,
                    graph_metric: graph_metric(W, graph.value(i))?,
                    period: parse_field(W, T::page_insights::PERIOD, period.value(i))?,
                    day: i32_to_day(day.value(i)),
                    breakdown: breakdown.value(i).into(),
                    value: value.value(i),
                    api_version: parse_field(W, T::page_insights::API_VERSION, version.value(i))?,
                    fetched_at: from_micros(fetched.value(i)),
                })
            })
            .collect()
    }
}

impl LakeRecord for Post {
    const DATASET: &'static str = T::posts::TABLE.dataset();
    type Key = (String, String);
    const COMPACT_AT: usize = 64;
    const MERGE_COLUMNS: Option<(&'static [&'static str], &'static str)> =
        Some((&[T::posts::PAGE_ID, T::posts::POST_ID], T::posts::FETCHED_AT));

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
            .str(T::posts::TENANT_ID, rows.iter().map(|_| tenant))
            .str(T::posts::PRACTICE_CODE, rows.iter().map(|r| r.practice.as_str()))
            .str(T::posts::PAGE_ID, rows.iter().map(|r| r.page.as_str()))
            .str(T::posts::POST_ID, rows.iter().map(|r| r.post.as_str()))
            .ts(T::posts::CREATED_TIME, rows.iter().map(|r| r.created_time))
            .str(T::posts::POST_TYPE, rows.iter().map(|r| r.post_type.as_str()))
            .str(T::posts::MESSAGE, rows.iter().map(|r| r.message.as_str()))
            .str(T::posts::PERMALINK, rows.iter().map(|r| r.permalink.as_str()))
            .ts(T::posts::FETCHED_AT, rows.iter().map(|r| r.fetched_at))
            .finish_for(&T::posts::TABLE)
    }

    fn from_batch(tenant: &str, batch: &RecordBatch) -> Result<Vec<Self>> {
        const W: &str = "post";
        check_tenant(W, tenant, batch)?;
        let c = Columns::new(batch, W);
        let (practice, page, post, created) = (
            c.str(T::posts::PRACTICE_CODE)?,
            c.str(T::posts::PAGE_ID)?,
            c.str(T::posts::POST_ID)?,
            c.ts(T::posts::CREATED_TIME)?,
        );
        let (kind, message, link, fetched) = (
            c.str(T::posts::POST_TYPE)?,
            c.str(T::posts::MESSAGE)?,
            c.str(T::posts::PERMALINK)?,
            c.ts(T::posts::FETCHED_AT)?,
        );
        (0..batch.num_rows())
            .map(|i| {
                Ok(Post {
                    practice: parse_field(W, T::posts::PRACTICE_CODE, practice.value(i))?,
                    page: parse_field(W, T::posts::PAGE_ID, page.value(i))?,
                    post: parse_field::<PostId>(W, T::posts::POST_ID, post.value(i))?,
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
    const DATASET: &'static str = T::post_insights::TABLE.dataset();
    type Key = (PostId, &'static str, std::sync::Arc<str>, NaiveDate);
    const COMPACT_AT: usize = 64;
    const MERGE_COLUMNS: Option<(&'static [&'static str], &'static str)> = Some((
        &[
            T::post_insights::POST_ID,
            T::post_insights::METRIC,
            T::post_insights::BREAKDOWN,
            T::post_insights::SNAPSHOT_DAY,
        ],
        T::post_insights::FETCHED_AT,
    ));

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
            .str(T::post_insights::TENANT_ID, rows.iter().map(|_| tenant))
            .str(T::post_insights::PRACTICE_CODE, rows.iter().map(|r| r.practice.as_str()))
            .str(T::post_insights::PAGE_ID, rows.iter().map(|r| r.page.as_str()))
            .str(T::post_insights::POST_ID, rows.iter().map(|r| r.post.as_str()))
            .str(T::post_insights::METRIC, rows.iter().map(|r| r.metric.as_str()))
            .str(T::post_insights::GRAPH_METRIC, rows.iter().map(|r| r.graph_metric))
            .str(T::post_insights::BREAKDOWN, rows.iter().map(|r| &*r.breakdown))
            .date(T::post_insights::SNAPSHOT_DAY, rows.iter().map(|r| r.snapshot_day))
            .f64(T::post_insights::VALUE, rows.iter().map(|r| r.value))
            .str(T::post_insights::API_VERSION, rows.iter().map(|r| crate::util::version_text(r.api_version)))
            .ts(T::post_insights::FETCHED_AT, rows.iter().map(|r| r.fetched_at))
            .finish_for(&T::post_insights::TABLE)
    }

    fn from_batch(tenant: &str, batch: &RecordBatch) -> Result<Vec<Self>> {
        const W: &str = "post insight snapshot";
        check_tenant(W, tenant, batch)?;
        let c = Columns::new(batch, W);
        let (practice, page, post, metric, graph) = (
            c.str(T::post_insights::PRACTICE_CODE)?,
            c.str(T::post_insights::PAGE_ID)?,
            c.str(T::post_insights::POST_ID)?,
            c.str(T::post_insights::METRIC)?,
            c.str(T::post_insights::GRAPH_METRIC)?,
        );
        let (breakdown, day, value, version, fetched) = (
            c.str(T::post_insights::BREAKDOWN)?,
            c.date(T::post_insights::SNAPSHOT_DAY)?,
            c.f64(T::post_insights::VALUE)?,
            c.str(T::post_insights::API_VERSION)?,
            c.ts(T::post_insights::FETCHED_AT)?,
        );
        (0..batch.num_rows())
            .map(|i| {
                Ok(PostInsightSnapshot {
                    practice: parse_field(W, T::post_insights::PRACTICE_CODE, practice.value(i))?,
                    page: parse_field(W, T::post_insights::PAGE_ID, page.value(i))?,
                    post: parse_field(W, T::post_insights::POST_ID, post.value(i))?,
                    metric: parse_field(W, T::post_insights::METRIC, metric.value(i))?,
                    graph_metric: graph_metric(W, graph.value(i))?,
                    breakdown: breakdown.value(i).into(),
                    snapshot_day: i32_to_day(day.value(i)),
                    value: value.value(i),
                    api_version: parse_field(W, T::post_insights::API_VERSION, version.value(i))?,
                    fetched_at: from_micros(fetched.value(i)),
                })
            })
            .collect()
    }
}

impl LakeRecord for Checkpoint {
    const DATASET: &'static str = T::checkpoints::TABLE.dataset();
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
            .str(T::checkpoints::TENANT_ID, rows.iter().map(|_| tenant))
            .str(T::checkpoints::PRACTICE_CODE, rows.iter().map(|r| r.practice.as_str()))
            .str(T::checkpoints::PAGE_ID, rows.iter().map(|r| r.page.as_str()))
            .str(
                T::checkpoints::STREAM,
                rows.iter().map(|r| r.stream.to_string()).collect::<Vec<_>>().iter().map(String::as_str),
            )
            .date(T::checkpoints::THROUGH_DAY, rows.iter().map(|r| r.through_day))
            .ts(T::checkpoints::UPDATED_AT, rows.iter().map(|r| r.updated_at))
            .finish_for(&T::checkpoints::TABLE)
    }

    fn from_batch(tenant: &str, batch: &RecordBatch) -> Result<Vec<Self>> {
        const W: &str = "checkpoint";
        check_tenant(W, tenant, batch)?;
        let c = Columns::new(batch, W);
        let (practice, page, stream, through, updated) = (
            c.str(T::checkpoints::PRACTICE_CODE)?,
            c.str(T::checkpoints::PAGE_ID)?,
            c.str(T::checkpoints::STREAM)?,
            c.date(T::checkpoints::THROUGH_DAY)?,
            c.ts(T::checkpoints::UPDATED_AT)?,
        );
        (0..batch.num_rows())
            .map(|i| {
                Ok(Checkpoint {
                    practice: parse_field(W, T::checkpoints::PRACTICE_CODE, practice.value(i))?,
                    page: parse_field(W, T::checkpoints::PAGE_ID, page.value(i))?,
                    stream: parse_field(W, T::checkpoints::STREAM, stream.value(i))?,
                    through_day: i32_to_day(through.value(i)),
                    updated_at: from_micros(updated.value(i)),
                })
            })
            .collect()
    }
}

impl LakeRecord for IngestRunRecord {
    const DATASET: &'static str = T::ingest_runs::TABLE.dataset();
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
            .str(T::ingest_runs::TENANT_ID, rows.iter().map(|_| tenant))
            .str(T::ingest_runs::RUN_ID, rows.iter().map(|r| r.run_id.as_str()))
            .str(T::ingest_runs::PRACTICE_CODE, rows.iter().map(|r| r.practice.as_str()))
            .ts(T::ingest_runs::STARTED_AT, rows.iter().map(|r| r.started_at))
            .ts(T::ingest_runs::FINISHED_AT, rows.iter().map(|r| r.finished_at))
            .u64(T::ingest_runs::REQUESTS, rows.iter().map(|r| r.requests))
            .u64(T::ingest_runs::RETRIES, rows.iter().map(|r| r.retries))
            .u64(T::ingest_runs::THROTTLED_MS, rows.iter().map(|r| r.throttled_ms))
            .u64(T::ingest_runs::ROWS_WRITTEN, rows.iter().map(|r| r.rows_written))
            .u64(T::ingest_runs::ERRORS, rows.iter().map(|r| r.errors))
            .u32(T::ingest_runs::PAGES_NEEDING_REAUTH, rows.iter().map(|r| r.pages_needing_reauth))
            .str(T::ingest_runs::STATUS, rows.iter().map(|r| r.status.as_str()))
            .str(T::ingest_runs::MESSAGE, rows.iter().map(|r| r.message.as_str()))
            .finish_for(&T::ingest_runs::TABLE)
    }

    fn from_batch(tenant: &str, batch: &RecordBatch) -> Result<Vec<Self>> {
        const W: &str = "ingest run";
        check_tenant(W, tenant, batch)?;
        let c = Columns::new(batch, W);
        let (run, practice, started, finished) = (
            c.str(T::ingest_runs::RUN_ID)?,
            c.str(T::ingest_runs::PRACTICE_CODE)?,
            c.ts(T::ingest_runs::STARTED_AT)?,
            c.ts(T::ingest_runs::FINISHED_AT)?,
        );
        let (requests, retries, throttled, rows, errors) = (
            c.u64(T::ingest_runs::REQUESTS)?,
            c.u64(T::ingest_runs::RETRIES)?,
            c.u64(T::ingest_runs::THROTTLED_MS)?,
            c.u64(T::ingest_runs::ROWS_WRITTEN)?,
            c.u64(T::ingest_runs::ERRORS)?,
        );
        let (reauth, status, message) = (
            c.u32(T::ingest_runs::PAGES_NEEDING_REAUTH)?,
            c.str(T::ingest_runs::STATUS)?,
            c.str(T::ingest_runs::MESSAGE)?,
        );
        (0..batch.num_rows())
            .map(|i| {
                Ok(IngestRunRecord {
                    run_id: run.value(i).to_owned(),
                    practice: parse_field(W, T::ingest_runs::PRACTICE_CODE, practice.value(i))?,
                    started_at: from_micros(started.value(i)),
                    finished_at: from_micros(finished.value(i)),
                    requests: requests.value(i),
                    retries: retries.value(i),
                    throttled_ms: throttled.value(i),
                    rows_written: rows.value(i),
                    errors: errors.value(i),
                    pages_needing_reauth: reauth.value(i),
                    status: parse_field(W, T::ingest_runs::STATUS, status.value(i))?,
                    message: message.value(i).to_owned(),
                })
            })
            .collect()
    }
}

impl LakeRecord for ExportAuditRecord {
    const DATASET: &'static str = T::export_audit::TABLE.dataset();
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
            .str(T::export_audit::TENANT_ID, rows.iter().map(|_| tenant))
            .str(T::export_audit::EXPORT_ID, rows.iter().map(|r| r.export_id.as_str()))
            .ts(T::export_audit::CREATED_AT, rows.iter().map(|r| r.created_at))
            .str(T::export_audit::REQUESTED_BY, rows.iter().map(|r| r.requested_by.as_str()))
            .str(T::export_audit::TENANTS, rows.iter().map(|r| r.tenants.as_str()))
            .str(T::export_audit::PROJECT, rows.iter().map(|r| r.project.as_str()))
            .str(T::export_audit::PURPOSE, rows.iter().map(|r| r.purpose.as_str()))
            .str(T::export_audit::SPEC_HASH, rows.iter().map(|r| r.spec_hash.as_str()))
            .str(T::export_audit::SPEC, rows.iter().map(|r| r.spec.as_str()))
            .u64(T::export_audit::ROWS, rows.iter().map(|r| r.rows))
            .str(T::export_audit::FILES, rows.iter().map(|r| r.files.as_str()))
            .finish_for(&T::export_audit::TABLE)
    }

    fn from_batch(tenant: &str, batch: &RecordBatch) -> Result<Vec<Self>> {
        const W: &str = "export audit record";
        check_tenant(W, tenant, batch)?;
        let c = Columns::new(batch, W);
        let (id, created, by, tenants) = (
            c.str(T::export_audit::EXPORT_ID)?,
            c.ts(T::export_audit::CREATED_AT)?,
            c.str(T::export_audit::REQUESTED_BY)?,
            c.str(T::export_audit::TENANTS)?,
        );
        let (project, purpose, hash, spec) = (
            c.str(T::export_audit::PROJECT)?,
            c.str(T::export_audit::PURPOSE)?,
            c.str(T::export_audit::SPEC_HASH)?,
            c.str(T::export_audit::SPEC)?,
        );
        let (rows, files) = (c.u64(T::export_audit::ROWS)?, c.str(T::export_audit::FILES)?);
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
    const DATASET: &'static str = T::state_events::TABLE.dataset();
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
            .str(T::state_events::TENANT_ID, rows.iter().map(|_| tenant))
            .str(T::state_events::STREAM, rows.iter().map(|r| r.stream.as_str()))
            .str(T::state_events::KEY, rows.iter().map(|r| r.key.as_str()))
            .ts(T::state_events::AT, rows.iter().map(|r| r.at))
            .str(T::state_events::ID, rows.iter().map(|r| r.id.as_str()))
            .str(T::state_events::BODY, rows.iter().map(|r| r.body.as_str()))
            .finish_for(&T::state_events::TABLE)
    }

    fn from_batch(tenant: &str, batch: &RecordBatch) -> Result<Vec<Self>> {
        const W: &str = "state event";
        check_tenant(W, tenant, batch)?;
        let c = Columns::new(batch, W);
        let (id, stream, key, at, body) = (
            c.str(T::state_events::ID)?,
            c.str(T::state_events::STREAM)?,
            c.str(T::state_events::KEY)?,
            c.ts(T::state_events::AT)?,
            c.str(T::state_events::BODY)?,
        );
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
    const DATASET: &'static str = T::leases::TABLE.dataset();
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
            .str(T::leases::TENANT_ID, rows.iter().map(|_| tenant))
            .str(T::leases::NAME, rows.iter().map(|r| r.name.as_str()))
            .str(T::leases::HOLDER, rows.iter().map(|r| r.holder.as_str()))
            .ts(T::leases::ACQUIRED_AT, rows.iter().map(|r| r.acquired_at))
            .ts(T::leases::EXPIRES_AT, rows.iter().map(|r| r.expires_at))
            .finish_for(&T::leases::TABLE)
    }

    fn from_batch(tenant: &str, batch: &RecordBatch) -> Result<Vec<Self>> {
        const W: &str = "lease";
        check_tenant(W, tenant, batch)?;
        let c = Columns::new(batch, W);
        let (name, holder, acquired, expires) = (
            c.str(T::leases::NAME)?,
            c.str(T::leases::HOLDER)?,
            c.ts(T::leases::ACQUIRED_AT)?,
            c.ts(T::leases::EXPIRES_AT)?,
        );
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
