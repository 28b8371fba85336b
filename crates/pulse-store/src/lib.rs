//! The store: one narrow interface ([`Store`]) over two backends.
//!
//! - [`lake::LakeStore`], the default: Parquet datasets in a local directory, so a fresh machine needs no server.
//! - [`clickhouse::ClickHouseStore`]: the system of record for real deployments; analysts can point SQL tools at it.
//!
//! Both give the same guarantees, checked by one conformance suite (`tests/conformance.rs`):
//! every call takes a [`TenantScope`], records are stamped with the scope's tenant (a record cannot be written into
//! another tenant's data), and writing a record whose identity already exists replaces it — the latest version wins —
//! so re-ingesting a window never doubles a figure.

mod any;
pub mod clickhouse;
mod error;
pub mod keeper;
pub mod lake;
pub mod lease;
pub mod migrations;
pub mod report;
pub mod table;
mod util;

use std::future::Future;

pub use any::AnyStore;
use arrow::record_batch::RecordBatch;
use chrono::NaiveDate;
pub use error::StoreError;
pub use lease::{LeaseOutcome, LeaseView};
use pulse_config::{TenantScope, WriteScope};
use pulse_domain::{
    CanonicalMetric, Checkpoint, ExportAuditRecord, IngestRunRecord, PageId, PageInsightFact, Period, Post,
    PostInsightSnapshot, PracticeCode, StateEvent,
};
pub use report::{ReportColumn, ReportTable, ReportType, ReportVariant};

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// One practice's page's values of one metric, period and breakdown, by day: page insight facts as a server hands
/// them over in bulk (one record per series rather than per value, see [`Store::read_fact_series`]).
#[derive(Debug, Clone, PartialEq)]
pub struct FactSeries {
    pub practice: PracticeCode,
    pub page: PageId,
    pub metric: CanonicalMetric,
    pub period: Period,
    /// Empty for a total, or an age/gender key (`F.25-34`).
    pub breakdown: String,
    /// Ascending, each day once.
    pub days: Vec<NaiveDate>,
    /// The value of each of `days`.
    pub values: Vec<f64>,
}

/// A series' identity: practice, page, metric, period, breakdown.
type SeriesKey = (PracticeCode, PageId, CanonicalMetric, Period, String);

impl FactSeries {
    /// Groups facts (the latest version of each identity, as [`Store::read_page_insights`] returns them) into
    /// series, in the order of their keys (practice, page, metric, period, breakdown).
    pub fn group(facts: Vec<PageInsightFact>) -> Vec<FactSeries> {
        let mut by: std::collections::BTreeMap<SeriesKey, Vec<(NaiveDate, f64)>> = Default::default();
        for f in facts {
            by.entry((f.practice, f.page, f.metric, f.period, f.breakdown.to_string()))
                .or_default()
                .push((f.day, f.value));
        }
        by.into_iter()
            .map(|((practice, page, metric, period, breakdown), mut points)| {
                points.sort_by_key(|(d, _)| *d);
                FactSeries {
                    practice,
                    page,
                    metric,
                    period,
                    breakdown,
                    days: points.iter().map(|(d, _)| *d).collect(),
                    values: points.iter().map(|(_, v)| *v).collect(),
                }
            })
            .collect()
    }

    /// The series' identity, in the order [`FactSeries::group`] gives them: practice, page, metric, period,
    /// breakdown.
    pub fn key(&self) -> (&PracticeCode, &PageId, CanonicalMetric, Period, &str) {
        (&self.practice, &self.page, self.metric, self.period, &self.breakdown)
    }

    /// How many values.
    pub fn len(&self) -> usize {
        self.days.len()
    }

    pub fn is_empty(&self) -> bool {
        self.days.is_empty()
    }
}

/// Which page insight facts to read. Empty lists mean "all".
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FactFilter {
    pub metrics: Vec<CanonicalMetric>,
    pub periods: Vec<Period>,
    pub practices: Vec<PracticeCode>,
    pub pages: Vec<PageId>,
    /// First covered day, inclusive.
    pub from: Option<NaiveDate>,
    /// Last covered day, inclusive.
    pub to: Option<NaiveDate>,
    /// Only the rows of Sundays, and of every day from this one on (the windows the age-band reports keep: each
    /// week's, and the latest).
    pub sundays_or_from: Option<NaiveDate>,
}

impl FactFilter {
    pub fn days(from: NaiveDate, to: NaiveDate) -> Self {
        Self { from: Some(from), to: Some(to), ..Self::default() }
    }

    pub fn metrics(mut self, metrics: impl IntoIterator<Item = CanonicalMetric>) -> Self {
        self.metrics = metrics.into_iter().collect();
        self
    }

    pub fn periods(mut self, periods: impl IntoIterator<Item = Period>) -> Self {
        self.periods = periods.into_iter().collect();
        self
    }

    pub fn practices(mut self, practices: impl IntoIterator<Item = PracticeCode>) -> Self {
        self.practices = practices.into_iter().collect();
        self
    }

    /// Only Sundays and the days from `from` on (see [`FactFilter::sundays_or_from`]).
    pub fn sundays_or_from(mut self, from: NaiveDate) -> Self {
        self.sundays_or_from = Some(from);
        self
    }

    /// Whether a day falls in the filter's range (and is a Sunday or late enough, when asked).
    pub fn day_matches(&self, day: NaiveDate) -> bool {
        use chrono::Datelike;
        self.from.is_none_or(|f| day >= f)
            && self.to.is_none_or(|t| day <= t)
            && self.sundays_or_from.is_none_or(|f| day >= f || day.weekday() == chrono::Weekday::Sun)
    }

    pub fn matches(&self, fact: &PageInsightFact) -> bool {
        self.day_matches(fact.day)
            && (self.metrics.is_empty() || self.metrics.contains(&fact.metric))
            && (self.periods.is_empty() || self.periods.contains(&fact.period))
            && (self.practices.is_empty() || self.practices.contains(&fact.practice))
            && (self.pages.is_empty() || self.pages.contains(&fact.page))
    }
}

/// Which posts or post snapshots to read: by day (created day for posts, snapshot day for snapshots).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PostFilter {
    pub practices: Vec<PracticeCode>,
    pub from: Option<NaiveDate>,
    pub to: Option<NaiveDate>,
}

impl PostFilter {
    pub fn day_matches(&self, day: NaiveDate) -> bool {
        self.from.is_none_or(|f| day >= f) && self.to.is_none_or(|t| day <= t)
    }

    pub fn practice_matches(&self, practice: &PracticeCode) -> bool {
        self.practices.is_empty() || self.practices.contains(practice)
    }
}

/// What a write stored. Returned only once the backend has durably accepted the rows, so a caller may advance a
/// checkpoint on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WriteAck {
    pub rows: usize,
}

/// One tenant's part of a batch the ingester writes with [`Store::write_batch`].
#[derive(Debug, Clone, Copy)]
pub struct TenantBatch<'a> {
    pub scope: &'a WriteScope,
    pub facts: &'a [PageInsightFact],
    pub posts: &'a [Post],
    pub snapshots: &'a [PostInsightSnapshot],
    /// Saved only after this tenant's data in the batch was acknowledged.
    pub checkpoints: &'a [Checkpoint],
}

impl TenantBatch<'_> {
    pub fn rows(&self) -> usize {
        self.facts.len() + self.posts.len() + self.snapshots.len()
    }
}

/// The store interface. Everything that reads or writes tenant data goes through it.
pub trait Store: Send + Sync {
    /// Backend and location, for messages (no credentials).
    fn describe(&self) -> String;

    /// Creates or upgrades the schema. Idempotent; refuses a schema written by a newer Practice Pulse.
    fn migrate(&self) -> impl Future<Output = Result<MigrationReport>> + Send;

    fn write_page_insights(
        &self,
        scope: &WriteScope,
        facts: &[PageInsightFact],
    ) -> impl Future<Output = Result<WriteAck>> + Send;

    fn read_page_insights(
        &self,
        scope: &TenantScope,
        filter: &FactFilter,
    ) -> impl Future<Output = Result<Vec<PageInsightFact>>> + Send;

    /// The facts [`Store::read_page_insights`] reads, as series ([`FactSeries`]): a server deduplicates and groups
    /// them where the rows are (`sql/queries/read_fact_series.sql`), so one record per series crosses instead of one
    /// per value. The default groups the rows read.
    fn read_fact_series(
        &self,
        scope: &TenantScope,
        filter: &FactFilter,
    ) -> impl Future<Output = Result<Vec<FactSeries>>> + Send {
        async move { Ok(FactSeries::group(self.read_page_insights(scope, filter).await?)) }
    }

    /// Where a tenant's rows live when the store has more than one place: a cluster's shard (`"shard 2"`), whose
    /// replica serves the tenant's reads. `None` for one server or the lake. Jobs run tenants in different places at
    /// the same time.
    fn home_of(&self, scope: &TenantScope) -> impl Future<Output = Result<Option<String>>> + Send {
        let _ = scope;
        async { Ok(None) }
    }

    fn write_posts(&self, scope: &WriteScope, posts: &[Post]) -> impl Future<Output = Result<WriteAck>> + Send;

    fn read_posts(&self, scope: &TenantScope, filter: &PostFilter) -> impl Future<Output = Result<Vec<Post>>> + Send;

    fn write_post_snapshots(
        &self,
        scope: &WriteScope,
        snapshots: &[PostInsightSnapshot],
    ) -> impl Future<Output = Result<WriteAck>> + Send;

    fn read_post_snapshots(
        &self,
        scope: &TenantScope,
        filter: &PostFilter,
    ) -> impl Future<Output = Result<Vec<PostInsightSnapshot>>> + Send;

    /// Saves checkpoints. Call only after the data they cover was acknowledged.
    fn save_checkpoints(
        &self,
        scope: &WriteScope,
        checkpoints: &[Checkpoint],
    ) -> impl Future<Output = Result<WriteAck>> + Send;

    fn load_checkpoints(&self, scope: &TenantScope) -> impl Future<Output = Result<Vec<Checkpoint>>> + Send;

    fn record_run(
        &self,
        scope: &WriteScope,
        records: &[IngestRunRecord],
    ) -> impl Future<Output = Result<WriteAck>> + Send;

    /// A tenant's run records, newest run first.
    fn read_runs(&self, scope: &TenantScope) -> impl Future<Output = Result<Vec<IngestRunRecord>>> + Send;

    /// Appends a research export to the tenant's audit trail (append-only: nothing updates or deletes it).
    fn append_export_audit(
        &self,
        scope: &WriteScope,
        record: &ExportAuditRecord,
    ) -> impl Future<Output = Result<WriteAck>> + Send;

    /// A tenant's export audit trail, newest first.
    fn read_export_audit(&self, scope: &TenantScope) -> impl Future<Output = Result<Vec<ExportAuditRecord>>> + Send;

    /// Appends events to the tenant's operational journal (scheduled runs, digest deliveries, subscriptions).
    /// Append-only and idempotent by event id; acknowledged only once durable, so an event written before an action
    /// (a delivery about to be sent) is there after a crash.
    fn append_state(&self, scope: &WriteScope, events: &[StateEvent]) -> impl Future<Output = Result<WriteAck>> + Send;

    /// The tenant's events of one stream, oldest first (by `at`, then `id`).
    fn read_state(&self, scope: &TenantScope, stream: &str) -> impl Future<Output = Result<Vec<StateEvent>>> + Send;

    /// Takes (or renews) the tenant's lease `name` for `holder` for `ttl`, unless another holder has it and is alive
    /// (not expired, and not a process on this host that has exited). Two processes asking at once never both get
    /// it. Time is the machine's clock.
    fn try_lease(
        &self,
        scope: &WriteScope,
        name: &str,
        holder: &str,
        ttl: std::time::Duration,
    ) -> impl Future<Output = Result<LeaseOutcome>> + Send;

    /// How often a holder renews a lease taken for `ttl`, and how long after its last renewal it may still act on it
    /// (after that it stops: the lease may have passed to another). Leases in the store: a third and two thirds of
    /// `ttl`; in a coordination service: of its session timeout, since the lease ends with the session.
    fn lease_trust(&self, ttl: std::time::Duration) -> (std::time::Duration, std::time::Duration) {
        (ttl / 3, ttl * 2 / 3)
    }

    /// Who holds the tenant's lease `name` now, where the store can tell (a coordination service): `pulse status`
    /// then says whether a run started on another host is still going.
    fn lease_holder(&self, scope: &TenantScope, name: &str) -> impl Future<Output = Result<LeaseView>> + Send {
        let _ = (scope, name);
        async { Ok(LeaseView::Unknown) }
    }

    /// Ends `holder`'s lease `name` (a no-op when someone else holds it).
    fn release_lease(&self, scope: &WriteScope, name: &str, holder: &str) -> impl Future<Output = Result<()>> + Send;

    /// Replaces the tenant's whole slice of one variant of a report table with `batch`, atomically: a reader sees
    /// the old slice or the new one, never a mix. Other variants are untouched.
    fn replace_report(
        &self,
        scope: &WriteScope,
        table: &'static ReportTable,
        variant: &ReportVariant,
        batch: &RecordBatch,
    ) -> impl Future<Output = Result<WriteAck>> + Send;

    /// The tenant's current slice of one variant of a report table (possibly empty), in the table's schema
    /// (without `tenant_id`).
    fn read_report(
        &self,
        scope: &TenantScope,
        table: &'static ReportTable,
        variant: &ReportVariant,
    ) -> impl Future<Output = Result<RecordBatch>> + Send;

    /// The tenant's rows of one variant of a partitioned report table ([`ReportTable::partition`]) on or after
    /// `from`, in the table's schema and storage order. The default reads the whole slice; the lake reads only the
    /// months from `from`'s on.
    fn read_report_from(
        &self,
        scope: &TenantScope,
        table: &'static ReportTable,
        variant: &ReportVariant,
        from: NaiveDate,
    ) -> impl Future<Output = Result<RecordBatch>> + Send {
        async move { table.rows_from(&self.read_report(scope, table, variant).await?, from) }
    }

    /// Replaces the tenant's rows of one variant of a partitioned report table on or after `from` (the first day of
    /// a partition, [`ReportTable::partition_start`]) with `batch`, whose rows must all be on or after `from`,
    /// atomically as [`Store::replace_report`]; the rows before `from` stay. Answers the rows it wrote. The default
    /// reads the whole slice and replaces it (ClickHouse); the lake writes only the months from `from`'s on.
    fn replace_report_from(
        &self,
        scope: &WriteScope,
        table: &'static ReportTable,
        variant: &ReportVariant,
        from: NaiveDate,
        batch: &RecordBatch,
    ) -> impl Future<Output = Result<WriteAck>> + Send {
        async move {
            let tail = check_tail(table, from, batch)?;
            let old = self.read_report(scope.read(), table, variant).await?;
            // The rows written: the whole slice.
            self.replace_report(scope, table, variant, &table.with_tail(&old, from, &tail)?).await
        }
    }

    /// Deletes the rows of report slices superseded since the last sweep, for every tenant this store replaced
    /// reports of; answers how many slices it asked to delete. Readers never see superseded rows (they follow the
    /// slice pointers), so this is housekeeping: a jobs run sweeps once at its end. The default has nothing to sweep
    /// (the lake removes a replaced report's files as it replaces them); ClickHouse sends one delete per table for
    /// all of them, and sweeps by itself when many are pending.
    fn sweep_reports(&self) -> impl Future<Output = Result<usize>> + Send {
        async { Ok(0) }
    }

    /// Where the backend keeps facts as local Parquet files: the files holding the scope's page insight facts for
    /// the filter's days, each checked (readable footer, the lake's columns, no other tenant's directory), for
    /// scanning in place. `None` when the backend is a server: read through [`Store::read_fact_series`].
    fn fact_files(
        &self,
        scope: &TenantScope,
        filter: &FactFilter,
    ) -> impl Future<Output = Result<Option<Vec<std::path::PathBuf>>>> + Send;

    /// Writes several tenants' facts, posts and snapshots, and each tenant's checkpoints only once that tenant's data
    /// was acknowledged. The default goes tenant by tenant, table by table. A backend may put every tenant's rows of
    /// a table in one write (ClickHouse: one insert per table and shard, far cheaper for the server than an insert
    /// per tenant). On an error some tenants' data and checkpoints may have been written; every write here is
    /// idempotent (a row written again replaces itself), so the caller retries or re-fetches the whole batch.
    fn write_batch(&self, batch: &[TenantBatch<'_>]) -> impl Future<Output = Result<WriteAck>> + Send {
        async move {
            let mut rows = 0;
            for b in batch {
                rows += self.write_page_insights(b.scope, b.facts).await?.rows;
                rows += self.write_posts(b.scope, b.posts).await?.rows;
                rows += self.write_post_snapshots(b.scope, b.snapshots).await?.rows;
                self.save_checkpoints(b.scope, b.checkpoints).await?;
            }
            Ok(WriteAck { rows })
        }
    }

    /// A writer has finished a run of writes for `scope` (the ingester, at the end of a run). A backend that
    /// appends may fold what was appended now (the lake compacts the tenant's partitions that have parts, so that
    /// files read in place hold one row per identity). Nothing written is lost if it fails: reads merge regardless.
    fn settle(&self, _scope: &WriteScope) -> impl Future<Output = Result<()>> + Send {
        async { Ok(()) }
    }

    /// The days of the scope's rows of one kind fetched at or after `since` (rows a later fetch superseded
    /// included): a fact's day, a post's created day (UTC) or a snapshot's day. What an incremental pipelines run
    /// recomputes, and how far back it reads posts and snapshots. The default reads every row; backends answer from
    /// less (ClickHouse: one DISTINCT over two columns; the lake: two columns of the partitions written since).
    fn days_fetched_since(
        &self,
        scope: &TenantScope,
        rows: Fetched,
        since: chrono::DateTime<chrono::Utc>,
    ) -> impl Future<Output = Result<std::collections::BTreeSet<NaiveDate>>> + Send {
        async move {
            Ok(match rows {
                Fetched::Facts => {
                    let facts = self.read_page_insights(scope, &FactFilter::default()).await?;
                    facts.iter().filter(|f| f.fetched_at >= since).map(|f| f.day).collect()
                }
                Fetched::Posts => {
                    let posts = self.read_posts(scope, &PostFilter::default()).await?;
                    posts.iter().filter(|p| p.fetched_at >= since).map(|p| p.created_time.date_naive()).collect()
                }
                Fetched::Snapshots => {
                    let snapshots = self.read_post_snapshots(scope, &PostFilter::default()).await?;
                    snapshots.iter().filter(|s| s.fetched_at >= since).map(|s| s.snapshot_day).collect()
                }
            })
        }
    }

    /// Runs `aggregate` over the tenant's current slice of a report table where the data lives (a server store's
    /// GROUP BY), or answers `None` when this backend does not (the caller aggregates [`Store::read_report`]'s
    /// batch itself, which is as fast for a local file). Same figures either way: the analyst query checks it.
    fn aggregate_report(
        &self,
        _scope: &TenantScope,
        _table: &'static ReportTable,
        _variant: &ReportVariant,
        _aggregate: &ReportAggregate,
    ) -> impl Future<Output = Result<Option<AggregateAnswer>>> + Send {
        async { Ok(None) }
    }
}

/// Checks a batch for [`Store::replace_report_from`]: a partitioned table, `from` a partition's first day, every row
/// on or after it; the batch in storage order.
pub fn check_tail(table: &ReportTable, from: NaiveDate, batch: &RecordBatch) -> Result<RecordBatch> {
    table.check(batch)?;
    let wrong = |reason: String| StoreError::Report { table: table.name.into(), reason };
    if table.partition_start(from) != from {
        return Err(wrong(format!("{from} is not the first day of a partition")));
    }
    if table.rows_from(batch, from)?.num_rows() != batch.num_rows() {
        return Err(wrong(format!("rows before {from} in a replacement of the rows from {from}")));
    }
    table.in_storage_order(batch)
}

/// Which rows [`Store::days_fetched_since`] asks about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fetched {
    /// Page insight facts, by day.
    Facts,
    /// Posts, by the UTC day they were created.
    Posts,
    /// Post insight snapshots, by snapshot day.
    Snapshots,
}

/// An aggregation over one report slice: rows in a day range and passing the filters, grouped, summed.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportAggregate {
    /// Columns the groups are keyed by, in order; a date column keys as `YYYY-MM-DD`.
    pub group_by: Vec<&'static str>,
    /// The date column of the range and of the distinct-days count.
    pub date_column: &'static str,
    /// The inclusive day range on the date column (`None`: unbounded on that side).
    pub from: Option<NaiveDate>,
    pub to: Option<NaiveDate>,
    /// Instead of `from`/`to`: the last this many days of the slice (ending on its last day).
    pub last_days: Option<u32>,
    /// Every filter must hold for a row to count.
    pub filters: Vec<ColumnFilter>,
    /// Columns summed per group; a group's sum is null when every value in it is null.
    pub sums: Vec<&'static str>,
    /// A weight per value of a key column (a practice's registered patients), summed over the distinct values in
    /// each group; the group's weight is null when any of its values has no weight.
    pub weights: Option<(&'static str, Vec<(String, f64)>)>,
}

/// A filter on one column's value (as text; a date column as `YYYY-MM-DD`).
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnFilter {
    pub column: &'static str,
    pub op: ColumnFilterOp,
    pub values: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnFilterOp {
    /// The value is one of the values.
    In,
    /// The value is none of the values.
    NotIn,
    /// The value contains one of the values, ignoring case.
    Contains,
}

/// What [`Store::aggregate_report`] answers.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AggregateAnswer {
    /// The first and last day of the date column over the whole slice (before the range and filters); read only
    /// when the range is not given whole (`last_days`, or an open side).
    pub first_day: Option<NaiveDate>,
    pub last_day: Option<NaiveDate>,
    pub groups: Vec<AggregateGroup>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AggregateGroup {
    /// The group's values of `group_by`, in order.
    pub keys: Vec<String>,
    /// The sums, in the order of `sums`.
    pub sums: Vec<Option<f64>>,
    /// Distinct days of the date column in the group.
    pub days: u64,
    /// The summed weight (`None`: no weights asked, or a value without one).
    pub weight: Option<f64>,
    /// The group's first and last day of the date column.
    pub first: Option<NaiveDate>,
    pub last: Option<NaiveDate>,
}

/// What `migrate` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationReport {
    pub applied: Vec<String>,
    pub current_version: u32,
}
