//! Row types for RowBinary: `Date` is days since 1970 (u16), `DateTime` seconds since 1970 (u32).

use chrono::{DateTime, NaiveDate, Utc};
use clickhouse::Row;
use pulse_domain::{
    Checkpoint, ExportAuditRecord, IngestRunRecord, Lease, PageInsightFact, Post, PostInsightSnapshot, StateEvent,
};
use serde::{Deserialize, Serialize};

use super::order::{KeyPart, SortKey};
use crate::Result;
use crate::util::{day_to_i32, from_micros, graph_metric, i32_to_day, micros, parse_field};

pub(crate) fn ch_date(day: NaiveDate) -> u16 {
    day_to_i32(day).clamp(0, u16::MAX as i32) as u16
}

/// A day as a sorting key: its `Date` as the server stores it ([`ch_date`], which clamps), so days clamped to one
/// value compare equal here as they do there.
fn day_key<'a>(day: NaiveDate) -> KeyPart<'a> {
    KeyPart::Num(ch_date(day).into())
}

pub(crate) fn ch_datetime(t: DateTime<Utc>) -> u32 {
    t.timestamp().clamp(0, u32::MAX as i64) as u32
}

fn version(t: DateTime<Utc>) -> u64 {
    micros(t).max(0) as u64
}

fn day(d: u16) -> NaiveDate {
    i32_to_day(d as i32)
}

#[derive(Debug, Clone, Row, Serialize)]
pub(crate) struct FactRow<'a> {
    pub tenant_id: &'a str,
    pub practice_code: &'a str,
    pub page_id: &'a str,
    pub metric: &'a str,
    pub graph_metric: &'a str,
    pub period: &'a str,
    pub day: u16,
    pub breakdown: &'a str,
    pub value: f64,
    pub api_version: &'static str,
    pub fetched_at: u32,
    pub version: u64,
}

impl<'a> FactRow<'a> {
    /// The row's place in `ORDER BY (tenant_id, metric, period, day, page_id, breakdown)` (0001_core.sql), without
    /// making the row.
    pub fn sort_key(tenant: &'a str, f: &'a PageInsightFact) -> SortKey<'a> {
        use KeyPart::Str;
        [
            Str(tenant),
            Str(f.metric.as_str()),
            Str(f.period.as_str()),
            day_key(f.day),
            Str(f.page.as_str()),
            Str(&f.breakdown),
        ]
    }

    pub fn new(tenant: &'a str, f: &'a PageInsightFact) -> Self {
        Self {
            tenant_id: tenant,
            practice_code: f.practice.as_str(),
            page_id: f.page.as_str(),
            metric: f.metric.as_str(),
            graph_metric: f.graph_metric,
            period: f.period.as_str(),
            day: ch_date(f.day),
            breakdown: &f.breakdown,
            value: f.value,
            api_version: crate::util::version_text(f.api_version),
            fetched_at: ch_datetime(f.fetched_at),
            version: version(f.fetched_at),
        }
    }
}

#[derive(Debug, Row, Deserialize)]
pub(crate) struct FactOut {
    practice_code: String,
    page_id: String,
    metric: String,
    graph_metric: String,
    period: String,
    day: u16,
    breakdown: String,
    value: f64,
    api_version: String,
    version: u64,
}

const FACT: &str = "page insight fact";

impl FactOut {
    /// The table's key after the tenant: metric, period, day, page, breakdown.
    pub fn sort_key(&self) -> (&str, &str, u16, &str, &str) {
        (&self.metric, &self.period, self.day, &self.page_id, &self.breakdown)
    }

    pub fn into_fact(self) -> Result<PageInsightFact> {
        Ok(PageInsightFact {
            practice: parse_field(FACT, "practice_code", &self.practice_code)?,
            page: parse_field(FACT, "page_id", &self.page_id)?,
            metric: parse_field(FACT, "metric", &self.metric)?,
            graph_metric: graph_metric(FACT, &self.graph_metric)?,
            period: parse_field(FACT, "period", &self.period)?,
            day: day(self.day),
            breakdown: self.breakdown.into(),
            value: self.value,
            api_version: parse_field(FACT, "api_version", &self.api_version)?,
            fetched_at: from_micros(self.version as i64),
        })
    }
}

/// One series of `sql/queries/read_fact_series.sql`: days and values as arrays, in the server's order.
#[derive(Debug, Row, Deserialize)]
pub(crate) struct SeriesOut {
    practice_code: String,
    page_id: String,
    metric: String,
    period: String,
    breakdown: String,
    days: Vec<u16>,
    values: Vec<f64>,
}

impl SeriesOut {
    /// The series with its days ascending (`groupArray` keeps no order).
    pub fn into_series(self) -> Result<crate::FactSeries> {
        if self.days.len() != self.values.len() {
            return Err(crate::StoreError::Invalid {
                what: "page insight series".to_owned(),
                reason: format!(
                    "page {} has {} days but {} values: the server's answer is malformed",
                    self.page_id,
                    self.days.len(),
                    self.values.len()
                ),
            });
        }
        let mut points: Vec<(u16, f64)> = self.days.into_iter().zip(self.values).collect();
        if !points.is_sorted_by_key(|(d, _)| *d) {
            points.sort_unstable_by_key(|(d, _)| *d);
        }
        Ok(crate::FactSeries {
            practice: parse_field(FACT, "practice_code", &self.practice_code)?,
            page: parse_field(FACT, "page_id", &self.page_id)?,
            metric: parse_field(FACT, "metric", &self.metric)?,
            period: parse_field(FACT, "period", &self.period)?,
            breakdown: self.breakdown,
            days: points.iter().map(|(d, _)| day(*d)).collect(),
            values: points.iter().map(|(_, v)| *v).collect(),
        })
    }
}

#[derive(Debug, Clone, Row, Serialize)]
pub(crate) struct PostRow<'a> {
    pub tenant_id: &'a str,
    pub practice_code: &'a str,
    pub page_id: &'a str,
    pub post_id: &'a str,
    pub created_time: u32,
    pub post_type: &'a str,
    pub message: &'a str,
    pub permalink: &'a str,
    pub fetched_at: u32,
    pub version: u64,
}

impl<'a> PostRow<'a> {
    /// The row's place in `ORDER BY (tenant_id, page_id, post_id)` (0001_core.sql).
    pub fn sort_key(tenant: &'a str, p: &'a Post) -> SortKey<'a> {
        use KeyPart::{Num, Str};
        [Str(tenant), Str(p.page.as_str()), Str(p.post.as_str()), Num(0), Num(0), Num(0)]
    }

    pub fn new(tenant: &'a str, p: &'a Post) -> Self {
        Self {
            tenant_id: tenant,
            practice_code: p.practice.as_str(),
            page_id: p.page.as_str(),
            post_id: p.post.as_str(),
            created_time: ch_datetime(p.created_time),
            post_type: &p.post_type,
            message: &p.message,
            permalink: &p.permalink,
            fetched_at: ch_datetime(p.fetched_at),
            version: version(p.fetched_at),
        }
    }
}

#[derive(Debug, Row, Deserialize)]
pub(crate) struct PostOut {
    practice_code: String,
    page_id: String,
    post_id: String,
    created_time: u32,
    post_type: String,
    message: String,
    permalink: String,
    version: u64,
}

impl PostOut {
    pub fn into_post(self) -> Result<Post> {
        const W: &str = "post";
        Ok(Post {
            practice: parse_field(W, "practice_code", &self.practice_code)?,
            page: parse_field(W, "page_id", &self.page_id)?,
            post: parse_field(W, "post_id", &self.post_id)?,
            created_time: DateTime::from_timestamp(self.created_time as i64, 0).unwrap_or_default(),
            post_type: self.post_type,
            message: self.message,
            permalink: self.permalink,
            fetched_at: from_micros(self.version as i64),
        })
    }
}

#[derive(Debug, Clone, Row, Serialize)]
pub(crate) struct SnapshotRow<'a> {
    pub tenant_id: &'a str,
    pub practice_code: &'a str,
    pub page_id: &'a str,
    pub post_id: &'a str,
    pub metric: &'a str,
    pub graph_metric: &'a str,
    pub breakdown: &'a str,
    pub snapshot_day: u16,
    pub value: f64,
    pub api_version: &'static str,
    pub fetched_at: u32,
    pub version: u64,
}

impl<'a> SnapshotRow<'a> {
    /// The row's place in `ORDER BY (tenant_id, metric, snapshot_day, post_id, breakdown)` (0001_core.sql).
    pub fn sort_key(tenant: &'a str, s: &'a PostInsightSnapshot) -> SortKey<'a> {
        use KeyPart::{Num, Str};
        [Str(tenant), Str(s.metric.as_str()), day_key(s.snapshot_day), Str(s.post.as_str()), Str(&s.breakdown), Num(0)]
    }

    pub fn new(tenant: &'a str, s: &'a PostInsightSnapshot) -> Self {
        Self {
            tenant_id: tenant,
            practice_code: s.practice.as_str(),
            page_id: s.page.as_str(),
            post_id: s.post.as_str(),
            metric: s.metric.as_str(),
            graph_metric: s.graph_metric,
            breakdown: &s.breakdown,
            snapshot_day: ch_date(s.snapshot_day),
            value: s.value,
            api_version: crate::util::version_text(s.api_version),
            fetched_at: ch_datetime(s.fetched_at),
            version: version(s.fetched_at),
        }
    }
}

#[derive(Debug, Row, Deserialize)]
pub(crate) struct SnapshotOut {
    practice_code: String,
    page_id: String,
    post_id: String,
    metric: String,
    graph_metric: String,
    breakdown: String,
    snapshot_day: u16,
    value: f64,
    api_version: String,
    version: u64,
}

impl SnapshotOut {
    pub fn into_snapshot(self) -> Result<PostInsightSnapshot> {
        const W: &str = "post insight snapshot";
        Ok(PostInsightSnapshot {
            practice: parse_field(W, "practice_code", &self.practice_code)?,
            page: parse_field(W, "page_id", &self.page_id)?,
            post: parse_field(W, "post_id", &self.post_id)?,
            metric: parse_field(W, "metric", &self.metric)?,
            graph_metric: graph_metric(W, &self.graph_metric)?,
            breakdown: self.breakdown.into(),
            snapshot_day: day(self.snapshot_day),
            value: self.value,
            api_version: parse_field(W, "api_version", &self.api_version)?,
            fetched_at: from_micros(self.version as i64),
        })
    }
}

#[derive(Debug, Clone, Row, Serialize)]
pub(crate) struct CheckpointRow<'a> {
    pub tenant_id: &'a str,
    pub practice_code: &'a str,
    pub page_id: &'a str,
    pub stream: String,
    pub through_day: u16,
    pub updated_at: u32,
    pub version: u64,
}

impl<'a> CheckpointRow<'a> {
    pub fn new(tenant: &'a str, c: &'a Checkpoint) -> Self {
        Self {
            tenant_id: tenant,
            practice_code: c.practice.as_str(),
            page_id: c.page.as_str(),
            stream: c.stream.to_string(),
            through_day: ch_date(c.through_day),
            updated_at: ch_datetime(c.updated_at),
            version: version(c.updated_at),
        }
    }
}

#[derive(Debug, Row, Deserialize)]
pub(crate) struct CheckpointOut {
    practice_code: String,
    page_id: String,
    stream: String,
    through_day: u16,
    version: u64,
}

impl CheckpointOut {
    pub fn into_checkpoint(self) -> Result<Checkpoint> {
        const W: &str = "checkpoint";
        Ok(Checkpoint {
            practice: parse_field(W, "practice_code", &self.practice_code)?,
            page: parse_field(W, "page_id", &self.page_id)?,
            stream: parse_field(W, "stream", &self.stream)?,
            through_day: day(self.through_day),
            updated_at: from_micros(self.version as i64),
        })
    }
}

#[derive(Debug, Clone, Row, Serialize)]
pub(crate) struct RunRow<'a> {
    pub tenant_id: &'a str,
    pub run_id: &'a str,
    pub practice_code: &'a str,
    pub started_at: u32,
    pub finished_at: u32,
    pub requests: u64,
    pub retries: u64,
    pub throttled_ms: u64,
    pub rows_written: u64,
    pub errors: u64,
    pub pages_needing_reauth: u32,
    pub status: &'a str,
    pub message: &'a str,
    pub version: u64,
}

impl<'a> RunRow<'a> {
    pub fn new(tenant: &'a str, r: &'a IngestRunRecord) -> Self {
        Self {
            tenant_id: tenant,
            run_id: &r.run_id,
            practice_code: r.practice.as_str(),
            started_at: ch_datetime(r.started_at),
            finished_at: ch_datetime(r.finished_at),
            requests: r.requests,
            retries: r.retries,
            throttled_ms: r.throttled_ms,
            rows_written: r.rows_written,
            errors: r.errors,
            pages_needing_reauth: r.pages_needing_reauth,
            status: r.status.as_str(),
            message: &r.message,
            version: version(r.finished_at),
        }
    }
}

#[derive(Debug, Row, Deserialize)]
pub(crate) struct RunOut {
    run_id: String,
    practice_code: String,
    started_at: u32,
    #[allow(dead_code)]
    finished_at: u32,
    requests: u64,
    retries: u64,
    throttled_ms: u64,
    rows_written: u64,
    errors: u64,
    pages_needing_reauth: u32,
    status: String,
    message: String,
    version: u64,
}

impl RunOut {
    pub fn into_run(self) -> Result<IngestRunRecord> {
        let ts = |s: u32| DateTime::from_timestamp(s as i64, 0).unwrap_or_default();
        let finished = from_micros(self.version as i64);
        Ok(IngestRunRecord {
            run_id: self.run_id,
            practice: parse_field("ingest run", "practice_code", &self.practice_code)?,
            started_at: ts(self.started_at),
            finished_at: finished,
            requests: self.requests,
            retries: self.retries,
            throttled_ms: self.throttled_ms,
            rows_written: self.rows_written,
            errors: self.errors,
            pages_needing_reauth: self.pages_needing_reauth,
            status: parse_field("ingest run", "status", &self.status)?,
            message: self.message,
        })
    }
}

#[derive(Debug, Clone, Row, Serialize)]
pub(crate) struct SliceRow<'a> {
    pub tenant_id: &'a str,
    pub report: &'a str,
    pub current_version: u64,
    pub rows: u64,
    pub written_at: u32,
    pub version: u64,
}

/// The count, ordinal range and distinct ordinals of some rows of a report slice.
#[derive(Debug, Row, Deserialize)]
pub(crate) struct OrdinalSpan {
    pub n: u64,
    pub lo: u32,
    pub hi: u32,
    pub uniq: u64,
}

/// Whether `n` rows with ordinals from `lo` to `hi`, `uniq` of them distinct, are numbered 0 to n - 1 (none is).
pub(crate) fn numbered_from_zero(n: u64, lo: u32, hi: u32, uniq: u64) -> bool {
    n == 0 || (lo == 0 && u64::from(hi) + 1 == n && uniq == n)
}

/// Of a report slice version: its rows before a day (count, ordinal range, distinct ordinals), all its rows on the
/// server answering, and the rows its pointer recorded when it was written.
#[derive(Debug, Row, Deserialize)]
pub(crate) struct SliceSpan {
    pub n: u64,
    pub lo: u32,
    pub hi: u32,
    pub uniq: u64,
    pub total: u64,
    pub recorded: u64,
}

#[derive(Debug, Row, Serialize, Deserialize)]
pub(crate) struct MigrationRow {
    pub version: u32,
    pub name: String,
    pub checksum: String,
}

#[derive(Debug, Clone, Row, Serialize)]
pub(crate) struct MigrationInsert<'a> {
    pub version: u32,
    pub name: &'a str,
    pub checksum: &'a str,
    pub applied_at: u32,
}

#[derive(Debug, Clone, Row, Serialize)]
pub(crate) struct AuditRow<'a> {
    pub tenant_id: &'a str,
    pub export_id: &'a str,
    pub created_at: u32,
    pub requested_by: &'a str,
    pub tenants: &'a str,
    pub project: &'a str,
    pub purpose: &'a str,
    pub spec_hash: &'a str,
    pub spec: &'a str,
    pub rows: u64,
    pub files: &'a str,
}

impl<'a> AuditRow<'a> {
    pub fn new(tenant: &'a str, r: &'a ExportAuditRecord) -> Self {
        Self {
            tenant_id: tenant,
            export_id: &r.export_id,
            created_at: ch_datetime(r.created_at),
            requested_by: &r.requested_by,
            tenants: &r.tenants,
            project: &r.project,
            purpose: &r.purpose,
            spec_hash: &r.spec_hash,
            spec: &r.spec,
            rows: r.rows,
            files: &r.files,
        }
    }
}

#[derive(Debug, Row, Deserialize)]
pub(crate) struct AuditOut {
    export_id: String,
    created_at: u32,
    requested_by: String,
    tenants: String,
    project: String,
    purpose: String,
    spec_hash: String,
    spec: String,
    rows: u64,
    files: String,
}

impl AuditOut {
    pub fn into_record(self) -> ExportAuditRecord {
        ExportAuditRecord {
            export_id: self.export_id,
            created_at: DateTime::from_timestamp(i64::from(self.created_at), 0).unwrap_or_default(),
            requested_by: self.requested_by,
            tenants: self.tenants,
            project: self.project,
            purpose: self.purpose,
            spec_hash: self.spec_hash,
            spec: self.spec,
            rows: self.rows,
            files: self.files,
        }
    }
}

#[derive(Debug, Clone, Row, Serialize)]
pub(crate) struct StateRow<'a> {
    pub tenant_id: &'a str,
    pub stream: &'a str,
    pub key: &'a str,
    pub at_us: u64,
    pub id: &'a str,
    pub body: &'a str,
}

impl<'a> StateRow<'a> {
    pub fn new(tenant: &'a str, e: &'a StateEvent) -> Self {
        Self { tenant_id: tenant, stream: &e.stream, key: &e.key, at_us: version(e.at), id: &e.id, body: &e.body }
    }
}

#[derive(Debug, Row, Deserialize)]
pub(crate) struct StateOut {
    id: String,
    key: String,
    at_us: u64,
    body: String,
}

impl StateOut {
    pub fn into_event(self, stream: &str) -> StateEvent {
        StateEvent {
            id: self.id,
            stream: stream.to_owned(),
            key: self.key,
            at: from_micros(self.at_us as i64),
            body: self.body,
        }
    }
}

#[derive(Debug, Clone, Row, Serialize, Deserialize)]
pub(crate) struct LeaseRow {
    pub tenant_id: String,
    pub name: String,
    pub holder: String,
    pub acquired_us: u64,
    pub expires_us: u64,
}

impl LeaseRow {
    pub fn new(tenant: &str, l: &Lease) -> Self {
        Self {
            tenant_id: tenant.to_owned(),
            name: l.name.clone(),
            holder: l.holder.clone(),
            acquired_us: version(l.acquired_at),
            expires_us: version(l.expires_at),
        }
    }
}

#[derive(Debug, Row, Deserialize)]
pub(crate) struct LeaseOut {
    holder: String,
    acquired_us: u64,
    expires_us: u64,
}

impl LeaseOut {
    pub fn into_lease(self, name: &str) -> Lease {
        Lease {
            name: name.to_owned(),
            holder: self.holder,
            acquired_at: from_micros(self.acquired_us as i64),
            expires_at: from_micros(self.expires_us as i64),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::{self, CoreTable};

    fn written(table: &CoreTable) -> Vec<&'static str> {
        table.clickhouse_columns().into_iter().map(|(n, _)| n).collect()
    }

    /// Every row struct written to a core table has the declaration's columns in its order; every row struct read
    /// names only declared columns (the migrations' row is only read: it is inserted by SQL with `now()`) (`crates/pulse-store/src/table.rs` is the one declaration).
    #[test]
    fn row_structs_match_the_table_declarations() {
        let writes: [(&[&str], &CoreTable); 9] = [
            (FactRow::COLUMN_NAMES, &table::page_insights::TABLE),
            (PostRow::COLUMN_NAMES, &table::posts::TABLE),
            (SnapshotRow::COLUMN_NAMES, &table::post_insights::TABLE),
            (CheckpointRow::COLUMN_NAMES, &table::checkpoints::TABLE),
            (RunRow::COLUMN_NAMES, &table::ingest_runs::TABLE),
            (AuditRow::COLUMN_NAMES, &table::export_audit::TABLE),
            (StateRow::COLUMN_NAMES, &table::state_events::TABLE),
            (LeaseRow::COLUMN_NAMES, &table::leases::TABLE),
            (SliceRow::COLUMN_NAMES, &table::report_slices::TABLE),
        ];
        for (columns, table) in writes {
            assert_eq!(columns, written(table).as_slice(), "{}", table.name);
        }
        let reads: [(&[&str], &CoreTable); 9] = [
            (MigrationRow::COLUMN_NAMES, &table::schema_migrations::TABLE),
            (FactOut::COLUMN_NAMES, &table::page_insights::TABLE),
            (PostOut::COLUMN_NAMES, &table::posts::TABLE),
            (SnapshotOut::COLUMN_NAMES, &table::post_insights::TABLE),
            (CheckpointOut::COLUMN_NAMES, &table::checkpoints::TABLE),
            (RunOut::COLUMN_NAMES, &table::ingest_runs::TABLE),
            (AuditOut::COLUMN_NAMES, &table::export_audit::TABLE),
            (StateOut::COLUMN_NAMES, &table::state_events::TABLE),
            (LeaseOut::COLUMN_NAMES, &table::leases::TABLE),
        ];
        for (columns, table) in reads {
            let declared = written(table);
            let unknown: Vec<&&str> = columns.iter().filter(|c| !declared.contains(c)).collect();
            assert!(unknown.is_empty(), "{} reads undeclared columns {unknown:?}", table.name);
        }
    }
}
