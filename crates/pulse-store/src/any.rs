//! [`AnyStore`]: the backend chosen by configuration, behind the same [`Store`] interface.

use arrow::record_batch::RecordBatch;
use pulse_config::{TenantScope, WriteScope};
use pulse_domain::{
    Checkpoint, ExportAuditRecord, IngestRunRecord, PageInsightFact, Post, PostInsightSnapshot, StateEvent,
};

use crate::clickhouse::ClickHouseStore;
use crate::lake::LakeStore;
use crate::{
    FactFilter, LeaseOutcome, MigrationReport, PostFilter, ReportTable, ReportVariant, Result, Store, WriteAck,
};

#[derive(Clone)]
pub enum AnyStore {
    Lake(LakeStore),
    ClickHouse(Box<ClickHouseStore>),
}

macro_rules! delegate {
    ($self:ident, $s:ident => $call:expr) => {
        match $self {
            AnyStore::Lake($s) => $call,
            AnyStore::ClickHouse($s) => $call,
        }
    };
}

impl Store for AnyStore {
    fn describe(&self) -> String {
        delegate!(self, s => s.describe())
    }

    async fn migrate(&self) -> Result<MigrationReport> {
        delegate!(self, s => s.migrate().await)
    }

    async fn write_page_insights(&self, scope: &WriteScope, facts: &[PageInsightFact]) -> Result<WriteAck> {
        delegate!(self, s => s.write_page_insights(scope, facts).await)
    }

    async fn read_page_insights(&self, scope: &TenantScope, filter: &FactFilter) -> Result<Vec<PageInsightFact>> {
        delegate!(self, s => s.read_page_insights(scope, filter).await)
    }

    async fn read_fact_series(&self, scope: &TenantScope, filter: &FactFilter) -> Result<Vec<crate::FactSeries>> {
        delegate!(self, s => s.read_fact_series(scope, filter).await)
    }

    async fn home_of(&self, scope: &TenantScope) -> Result<Option<String>> {
        delegate!(self, s => s.home_of(scope).await)
    }

    async fn days_fetched_since(
        &self,
        scope: &TenantScope,
        rows: crate::Fetched,
        since: chrono::DateTime<chrono::Utc>,
    ) -> Result<std::collections::BTreeSet<chrono::NaiveDate>> {
        delegate!(self, s => s.days_fetched_since(scope, rows, since).await)
    }

    async fn write_posts(&self, scope: &WriteScope, posts: &[Post]) -> Result<WriteAck> {
        delegate!(self, s => s.write_posts(scope, posts).await)
    }

    async fn read_posts(&self, scope: &TenantScope, filter: &PostFilter) -> Result<Vec<Post>> {
        delegate!(self, s => s.read_posts(scope, filter).await)
    }

    async fn write_post_snapshots(&self, scope: &WriteScope, snapshots: &[PostInsightSnapshot]) -> Result<WriteAck> {
        delegate!(self, s => s.write_post_snapshots(scope, snapshots).await)
    }

    async fn read_post_snapshots(&self, scope: &TenantScope, filter: &PostFilter) -> Result<Vec<PostInsightSnapshot>> {
        delegate!(self, s => s.read_post_snapshots(scope, filter).await)
    }

    async fn save_checkpoints(&self, scope: &WriteScope, checkpoints: &[Checkpoint]) -> Result<WriteAck> {
        delegate!(self, s => s.save_checkpoints(scope, checkpoints).await)
    }

    async fn load_checkpoints(&self, scope: &TenantScope) -> Result<Vec<Checkpoint>> {
        delegate!(self, s => s.load_checkpoints(scope).await)
    }

    async fn record_run(&self, scope: &WriteScope, records: &[IngestRunRecord]) -> Result<WriteAck> {
        delegate!(self, s => s.record_run(scope, records).await)
    }

    async fn read_runs(&self, scope: &TenantScope) -> Result<Vec<IngestRunRecord>> {
        delegate!(self, s => s.read_runs(scope).await)
    }

    async fn append_export_audit(&self, scope: &WriteScope, record: &ExportAuditRecord) -> Result<WriteAck> {
        delegate!(self, s => s.append_export_audit(scope, record).await)
    }

    async fn read_export_audit(&self, scope: &TenantScope) -> Result<Vec<ExportAuditRecord>> {
        delegate!(self, s => s.read_export_audit(scope).await)
    }

    async fn append_state(&self, scope: &WriteScope, events: &[StateEvent]) -> Result<WriteAck> {
        delegate!(self, s => s.append_state(scope, events).await)
    }

    async fn read_state(&self, scope: &TenantScope, stream: &str) -> Result<Vec<StateEvent>> {
        delegate!(self, s => s.read_state(scope, stream).await)
    }

    async fn try_lease(
        &self,
        scope: &WriteScope,
        name: &str,
        holder: &str,
        ttl: std::time::Duration,
    ) -> Result<LeaseOutcome> {
        delegate!(self, s => s.try_lease(scope, name, holder, ttl).await)
    }

    async fn lease_holder(&self, scope: &TenantScope, name: &str) -> Result<crate::LeaseView> {
        delegate!(self, s => s.lease_holder(scope, name).await)
    }

    fn lease_trust(&self, ttl: std::time::Duration) -> (std::time::Duration, std::time::Duration) {
        delegate!(self, s => s.lease_trust(ttl))
    }

    async fn release_lease(&self, scope: &WriteScope, name: &str, holder: &str) -> Result<()> {
        delegate!(self, s => s.release_lease(scope, name, holder).await)
    }

    async fn replace_report(
        &self,
        scope: &WriteScope,
        table: &'static ReportTable,
        variant: &ReportVariant,
        batch: &RecordBatch,
    ) -> Result<WriteAck> {
        delegate!(self, s => s.replace_report(scope, table, variant, batch).await)
    }

    async fn sweep_reports(&self) -> Result<usize> {
        delegate!(self, s => s.sweep_reports().await)
    }

    async fn read_report(
        &self,
        scope: &TenantScope,
        table: &'static ReportTable,
        variant: &ReportVariant,
    ) -> Result<RecordBatch> {
        delegate!(self, s => s.read_report(scope, table, variant).await)
    }

    async fn read_report_from(
        &self,
        scope: &TenantScope,
        table: &'static ReportTable,
        variant: &ReportVariant,
        from: chrono::NaiveDate,
    ) -> Result<RecordBatch> {
        delegate!(self, s => s.read_report_from(scope, table, variant, from).await)
    }

    async fn replace_report_from(
        &self,
        scope: &WriteScope,
        table: &'static ReportTable,
        variant: &ReportVariant,
        from: chrono::NaiveDate,
        batch: &RecordBatch,
    ) -> Result<WriteAck> {
        delegate!(self, s => s.replace_report_from(scope, table, variant, from, batch).await)
    }

    async fn fact_files(&self, scope: &TenantScope, filter: &FactFilter) -> Result<Option<Vec<std::path::PathBuf>>> {
        delegate!(self, s => s.fact_files(scope, filter).await)
    }

    async fn write_batch(&self, batch: &[crate::TenantBatch<'_>]) -> Result<WriteAck> {
        delegate!(self, s => s.write_batch(batch).await)
    }

    async fn settle(&self, scope: &WriteScope) -> Result<()> {
        delegate!(self, s => s.settle(scope).await)
    }

    async fn aggregate_report(
        &self,
        scope: &TenantScope,
        table: &'static ReportTable,
        variant: &ReportVariant,
        aggregate: &crate::ReportAggregate,
    ) -> Result<Option<crate::AggregateAnswer>> {
        delegate!(self, s => s.aggregate_report(scope, table, variant, aggregate).await)
    }
}
