//! [`LakeStore`]: the [`Store`] interface over the lake's partition files.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;

use arrow::array::{ArrayRef, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use pulse_config::{TenantScope, WriteScope};
use pulse_domain::{
    Checkpoint, ExportAuditRecord, IngestRunRecord, Lease, PageInsightFact, Post, PostInsightSnapshot, StateEvent,
};

use super::codec::LakeRecord;
use super::dataset;
use crate::lease;
use crate::{
    FactFilter, LeaseOutcome, MigrationReport, PostFilter, ReportTable, ReportVariant, Result, Store, StoreError,
    WriteAck,
};

/// The lake format this build writes and reads.
pub const LAKE_FORMAT: u32 = 1;
const MANIFEST: &str = "_pulse_lake.json";

/// The embedded Parquet lake. Cheap to clone; clones share the write lock.
#[derive(Debug, Clone)]
pub struct LakeStore {
    root: Arc<PathBuf>,
    /// Serialises writers in this process; a lock file serialises processes.
    write_lock: Arc<tokio::sync::Mutex<()>>,
}

impl LakeStore {
    /// Opens the lake at `root` (it need not exist yet), refusing one written by a newer Practice Pulse.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        check_manifest(&root)?;
        dataset::remove_orphans(&root)?;
        Ok(Self { root: Arc::new(root), write_lock: Arc::new(tokio::sync::Mutex::new(())) })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A report slice's rows, from the month of `from` on (`None`: all), in storage order: the months' files a
    /// slice stored by month names, or its one whole file.
    async fn read_report_months(
        &self,
        scope: &TenantScope,
        table: &'static ReportTable,
        variant: &ReportVariant,
        from: Option<chrono::NaiveDate>,
    ) -> Result<RecordBatch> {
        let tenant = scope.as_str().to_owned();
        let variant = variant.clone();
        self.blocking(false, move |root| {
            let dir = dataset::report_dir(root, table.name, &tenant, &variant);
            let first = from.map(|d| d.format("%Y-%m").to_string());
            let whole = dataset::report_file(root, table.name, &tenant, &variant);
            let files = match dataset::read_report_months(root, &dir, first.as_deref())? {
                Some(files) => files,
                None => match dataset::read_file(&whole) {
                    Ok(batches) => vec![(whole, batches)],
                    // Never written, or just rewritten by month (the manifest is in place before the whole file goes).
                    Err(StoreError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                        match dataset::read_report_months(root, &dir, first.as_deref())? {
                            Some(files) => files,
                            None => return Ok(table.empty()),
                        }
                    }
                    Err(e) => return Err(e),
                },
            };
            let mut out = Vec::new();
            for (path, batches) in files {
                out.extend(decode_report(table, &tenant, &path, batches)?);
            }
            dataset::concat(table.schema(), &out)
        })
        .await
    }

    async fn blocking<T: Send + 'static>(
        &self,
        write: bool,
        f: impl FnOnce(&Path) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let root = self.root.clone();
        let _guard = if write { Some(self.write_lock.lock().await) } else { None };
        tokio::task::spawn_blocking(move || {
            if write {
                ensure_manifest(&root)?;
                let lock_path = root.join(".lock");
                let lock = File::options()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&lock_path)
                    .map_err(|e| StoreError::io(&lock_path, e))?;
                lock.lock().map_err(|e| StoreError::io(&lock_path, e))?;
                // The marker outlives a writer killed mid-write, telling the next open to look for its temporary
                // files; without it, opening never walks the lake.
                let marker = root.join(dataset::WRITING_MARKER);
                std::fs::write(&marker, b"").map_err(|e| StoreError::io(&marker, e))?;
                let out = f(&root);
                let _ = std::fs::remove_file(&marker);
                let _ = lock.unlock();
                out
            } else {
                f(&root)
            }
        })
        .await
        .map_err(|e| StoreError::Invalid { what: "lake task".into(), reason: e.to_string() })?
    }

    async fn upsert<R: LakeRecord>(&self, scope: &TenantScope, rows: &[R]) -> Result<WriteAck> {
        if rows.is_empty() {
            return Ok(WriteAck::default());
        }
        let tenant = scope.as_str().to_owned();
        let rows = rows.to_vec();
        let n = self.blocking(true, move |root| dataset::upsert(root, &tenant, &rows)).await?;
        Ok(WriteAck { rows: n })
    }

    async fn read<R: LakeRecord>(
        &self,
        scope: &TenantScope,
        from: Option<chrono::NaiveDate>,
        to: Option<chrono::NaiveDate>,
    ) -> Result<Vec<R>> {
        let tenant = scope.as_str().to_owned();
        self.blocking(false, move |root| dataset::read::<R>(root, &tenant, from, to)).await
    }
}

fn check_manifest(root: &Path) -> Result<()> {
    let path = root.join(MANIFEST);
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(());
    };
    let found = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v.get("format").and_then(|f| f.as_u64()))
        .ok_or_else(|| StoreError::Corrupt { path: path.clone(), reason: "not a lake manifest".into() })?;
    if found > LAKE_FORMAT as u64 {
        return Err(StoreError::LakeTooNew { path: root.to_owned(), found: found as u32, known: LAKE_FORMAT });
    }
    Ok(())
}

fn ensure_manifest(root: &Path) -> Result<bool> {
    check_manifest(root)?;
    let path = root.join(MANIFEST);
    if path.exists() {
        return Ok(false);
    }
    std::fs::create_dir_all(root).map_err(|e| StoreError::io(root, e))?;
    let tmp = root.join(format!(".tmp-{}", uuid::Uuid::new_v4()));
    let body = serde_json::json!({ "format": LAKE_FORMAT, "written_by": concat!("pulse ", env!("CARGO_PKG_VERSION")) });
    std::fs::write(&tmp, body.to_string()).map_err(|e| StoreError::io(&tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| StoreError::io(&path, e))?;
    Ok(true)
}

impl Store for LakeStore {
    fn describe(&self) -> String {
        format!("embedded lake at {}", self.root.display())
    }

    async fn migrate(&self) -> Result<MigrationReport> {
        let root = self.root.clone();
        let created = tokio::task::spawn_blocking(move || ensure_manifest(&root))
            .await
            .map_err(|e| StoreError::Invalid { what: "lake task".into(), reason: e.to_string() })??;
        Ok(MigrationReport {
            applied: if created { vec![format!("lake format {LAKE_FORMAT}")] } else { vec![] },
            current_version: LAKE_FORMAT,
        })
    }

    async fn write_page_insights(&self, scope: &WriteScope, facts: &[PageInsightFact]) -> Result<WriteAck> {
        self.upsert(scope, facts).await
    }

    async fn days_fetched_since(
        &self,
        scope: &TenantScope,
        rows: crate::Fetched,
        since: chrono::DateTime<chrono::Utc>,
    ) -> Result<std::collections::BTreeSet<chrono::NaiveDate>> {
        let tenant = scope.as_str().to_owned();
        // A file's time is when it was written, after its rows were fetched: a second of slack for coarse clocks.
        let written = std::time::SystemTime::from(since) - std::time::Duration::from_secs(1);
        let since = crate::util::micros(since);
        self.blocking(false, move |root| {
            use crate::table::{page_insights as F, post_insights as S, posts as P};
            match rows {
                crate::Fetched::Facts => {
                    dataset::days_fetched_since::<PageInsightFact>(root, &tenant, written, since, F::DAY, F::FETCHED_AT)
                }
                crate::Fetched::Posts => {
                    dataset::days_fetched_since::<Post>(root, &tenant, written, since, P::CREATED_TIME, P::FETCHED_AT)
                }
                crate::Fetched::Snapshots => dataset::days_fetched_since::<PostInsightSnapshot>(
                    root,
                    &tenant,
                    written,
                    since,
                    S::SNAPSHOT_DAY,
                    S::FETCHED_AT,
                ),
            }
        })
        .await
    }

    async fn read_page_insights(&self, scope: &TenantScope, filter: &FactFilter) -> Result<Vec<PageInsightFact>> {
        let mut facts: Vec<PageInsightFact> = self.read(scope, filter.from, filter.to).await?;
        facts.retain(|f| filter.matches(f));
        Ok(facts)
    }

    async fn write_posts(&self, scope: &WriteScope, posts: &[Post]) -> Result<WriteAck> {
        self.upsert(scope, posts).await
    }

    async fn read_posts(&self, scope: &TenantScope, filter: &PostFilter) -> Result<Vec<Post>> {
        let mut posts: Vec<Post> = self.read(scope, filter.from, filter.to).await?;
        posts.retain(|p| filter.day_matches(p.created_time.date_naive()) && filter.practice_matches(&p.practice));
        Ok(posts)
    }

    async fn write_post_snapshots(&self, scope: &WriteScope, snapshots: &[PostInsightSnapshot]) -> Result<WriteAck> {
        self.upsert(scope, snapshots).await
    }

    async fn read_post_snapshots(&self, scope: &TenantScope, filter: &PostFilter) -> Result<Vec<PostInsightSnapshot>> {
        let mut snaps: Vec<PostInsightSnapshot> = self.read(scope, filter.from, filter.to).await?;
        snaps.retain(|s| filter.day_matches(s.snapshot_day) && filter.practice_matches(&s.practice));
        Ok(snaps)
    }

    async fn save_checkpoints(&self, scope: &WriteScope, checkpoints: &[Checkpoint]) -> Result<WriteAck> {
        self.upsert(scope, checkpoints).await
    }

    async fn load_checkpoints(&self, scope: &TenantScope) -> Result<Vec<Checkpoint>> {
        self.read(scope, None, None).await
    }

    async fn record_run(&self, scope: &WriteScope, records: &[IngestRunRecord]) -> Result<WriteAck> {
        self.upsert(scope, records).await
    }

    async fn read_runs(&self, scope: &TenantScope) -> Result<Vec<IngestRunRecord>> {
        let mut runs: Vec<IngestRunRecord> = self.read(scope, None, None).await?;
        runs.sort_by(|a, b| b.started_at.cmp(&a.started_at).then_with(|| a.practice.cmp(&b.practice)));
        Ok(runs)
    }

    async fn append_export_audit(&self, scope: &WriteScope, record: &ExportAuditRecord) -> Result<WriteAck> {
        // Keyed by export id: a record is only ever added, never replaced by another export's.
        self.upsert(scope, std::slice::from_ref(record)).await
    }

    async fn read_export_audit(&self, scope: &TenantScope) -> Result<Vec<ExportAuditRecord>> {
        let mut records: Vec<ExportAuditRecord> = self.read(scope, None, None).await?;
        records.sort_by(|a, b| b.created_at.cmp(&a.created_at).then_with(|| a.export_id.cmp(&b.export_id)));
        Ok(records)
    }

    async fn append_state(&self, scope: &WriteScope, events: &[StateEvent]) -> Result<WriteAck> {
        self.upsert(scope, events).await
    }

    async fn read_state(&self, scope: &TenantScope, stream: &str) -> Result<Vec<StateEvent>> {
        let mut events: Vec<StateEvent> = self.read(scope, None, None).await?;
        events.retain(|e| e.stream == stream);
        events.sort_by(|a, b| a.at.cmp(&b.at).then_with(|| a.id.cmp(&b.id)));
        Ok(events)
    }

    async fn try_lease(&self, scope: &WriteScope, name: &str, holder: &str, ttl: Duration) -> Result<LeaseOutcome> {
        let (tenant, name, holder) = (scope.as_str().to_owned(), name.to_owned(), holder.to_owned());
        let ttl = chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX);
        // Read and write under the lake's write lock, which serialises processes: a compare-and-set.
        self.blocking(true, move |root| {
            let now = Utc::now();
            let leases: Vec<Lease> = dataset::read(root, &tenant, None, None)?;
            if let Some(held) = leases.into_iter().find(|l| l.name == name)
                && held.holder != holder
                && lease::live(&held, now)
            {
                return Ok(LeaseOutcome::HeldBy(held));
            }
            let mine = Lease { name, holder, acquired_at: now, expires_at: now + ttl };
            dataset::upsert(root, &tenant, std::slice::from_ref(&mine))?;
            Ok(LeaseOutcome::Acquired(mine))
        })
        .await
    }

    async fn release_lease(&self, scope: &WriteScope, name: &str, holder: &str) -> Result<()> {
        let (tenant, name, holder) = (scope.as_str().to_owned(), name.to_owned(), holder.to_owned());
        self.blocking(true, move |root| {
            let leases: Vec<Lease> = dataset::read(root, &tenant, None, None)?;
            if leases.iter().any(|l| l.name == name && l.holder == holder) {
                let now = Utc::now();
                dataset::upsert(root, &tenant, &[Lease { name, holder, acquired_at: now, expires_at: now }])?;
            }
            Ok(())
        })
        .await
    }

    async fn replace_report(
        &self,
        scope: &WriteScope,
        table: &'static ReportTable,
        variant: &ReportVariant,
        batch: &RecordBatch,
    ) -> Result<WriteAck> {
        table.check(batch)?;
        let tenant = scope.as_str().to_owned();
        let rows = batch.num_rows();
        let with_tenant = prepend_tenant(&tenant, batch)?;
        let variant = variant.clone();
        self.blocking(true, move |root| {
            if table.partition.is_some() {
                let months = by_month(table, &with_tenant)?;
                dataset::write_report_months(&dataset::report_dir(root, table.name, &tenant, &variant), None, &months)
            } else {
                dataset::write_report_file(&dataset::report_file(root, table.name, &tenant, &variant), &with_tenant)
            }
        })
        .await?;
        Ok(WriteAck { rows })
    }

    async fn read_report(
        &self,
        scope: &TenantScope,
        table: &'static ReportTable,
        variant: &ReportVariant,
    ) -> Result<RecordBatch> {
        self.read_report_months(scope, table, variant, None).await
    }

    async fn read_report_from(
        &self,
        scope: &TenantScope,
        table: &'static ReportTable,
        variant: &ReportVariant,
        from: chrono::NaiveDate,
    ) -> Result<RecordBatch> {
        let rows = self.read_report_months(scope, table, variant, Some(from)).await?;
        table.rows_from(&rows, from)
    }

    async fn replace_report_from(
        &self,
        scope: &WriteScope,
        table: &'static ReportTable,
        variant: &ReportVariant,
        from: chrono::NaiveDate,
        batch: &RecordBatch,
    ) -> Result<WriteAck> {
        let tail = crate::check_tail(table, from, batch)?;
        let tenant = scope.as_str().to_owned();
        let rows = tail.num_rows();
        let with_tenant = prepend_tenant(&tenant, &tail)?;
        let owned = variant.clone();
        let by_month_already = self
            .blocking(true, move |root| {
                let dir = dataset::report_dir(root, table.name, &tenant, &owned);
                if dataset::report_manifest(&dir)?.is_none() {
                    return Ok(false);
                }
                let first = from.format("%Y-%m").to_string();
                dataset::write_report_months(&dir, Some(&first), &by_month(table, &with_tenant)?)?;
                Ok(true)
            })
            .await?;
        if !by_month_already {
            // A slice written whole (before reports were stored by month): its rows before `from` and the new
            // ones, written by month from now on.
            let old = self.read_report(scope.read(), table, variant).await?;
            self.replace_report(scope, table, variant, &table.with_tail(&old, from, &tail)?).await?;
        }
        Ok(WriteAck { rows })
    }
    async fn settle(&self, scope: &WriteScope) -> Result<()> {
        let tenant = scope.as_str().to_owned();
        self.blocking(true, move |root| {
            dataset::Compactions::new(root, &tenant)
                .add::<PageInsightFact>(None, None)?
                .add::<Post>(None, None)?
                .add::<PostInsightSnapshot>(None, None)?
                .add::<Checkpoint>(None, None)?
                .run()
        })
        .await
    }

    async fn fact_files(&self, scope: &TenantScope, filter: &FactFilter) -> Result<Option<Vec<PathBuf>>> {
        let tenant = scope.as_str().to_owned();
        let (from, to) = (filter.from, filter.to);
        // Scanned in place, each partition must be one file with one row per identity: its parts are folded in first
        // (under the write lock).
        let files = self
            .blocking(true, move |root| {
                dataset::compact_range::<PageInsightFact>(root, &tenant, from, to)?;
                dataset::checked_files::<PageInsightFact>(root, &tenant, from, to)
            })
            .await?;
        Ok(Some(files))
    }
}

/// A partitioned report's rows (with `tenant_id`) split by month, each month's rows in storage order.
fn by_month(table: &'static ReportTable, with_tenant: &RecordBatch) -> Result<Vec<(String, RecordBatch)>> {
    // The tenant column first: the table's own columns follow it.
    let own = with_tenant
        .project(&(1..with_tenant.num_columns()).collect::<Vec<_>>())
        .map_err(|e| StoreError::Report { table: table.name.into(), reason: e.to_string() })?;
    let months = table.by_month(
        &RecordBatch::try_new(table.schema(), own.columns().to_vec())
            .map_err(|e| StoreError::Report { table: table.name.into(), reason: e.to_string() })?,
    )?;
    months
        .into_iter()
        .map(|(m, b)| {
            let tenant = with_tenant.column(0).slice(0, b.num_rows());
            let mut columns = vec![tenant];
            columns.extend(b.columns().iter().cloned());
            RecordBatch::try_new(with_tenant.schema(), columns)
                .map(|b| (m, b))
                .map_err(|e| StoreError::Report { table: table.name.into(), reason: e.to_string() })
        })
        .collect()
}

/// A report file's batches in the table's schema: the tenant checked and dropped, columns the table gained since
/// the file was written added (as ClickHouse's defaults).
fn decode_report(
    table: &ReportTable,
    tenant: &str,
    path: &Path,
    batches: Vec<RecordBatch>,
) -> Result<Vec<RecordBatch>> {
    let mut out = Vec::with_capacity(batches.len());
    for b in batches {
        let tenants = b
            .column_by_name("tenant_id")
            .and_then(|c| c.as_any().downcast_ref::<StringArray>().cloned())
            .ok_or_else(|| StoreError::Corrupt { path: path.to_owned(), reason: "no tenant_id column".into() })?;
        if tenants.iter().flatten().any(|t| t != tenant) {
            return Err(StoreError::Corrupt { path: path.to_owned(), reason: "rows of another tenant".into() });
        }
        let projected = b
            .project(&(1..b.num_columns()).collect::<Vec<_>>())
            .map_err(|e| StoreError::Corrupt { path: path.to_owned(), reason: e.to_string() })?;
        let projected = match RecordBatch::try_new(table.schema(), projected.columns().to_vec()) {
            Ok(b) => b,
            Err(e) => table.widen(projected.columns(), projected.num_rows()).ok_or_else(|| StoreError::Corrupt {
                path: path.to_owned(),
                reason: format!("not in the shape of {}: {e}", table.name),
            })?,
        };
        out.push(projected);
    }
    Ok(out)
}

fn prepend_tenant(tenant: &str, batch: &RecordBatch) -> Result<RecordBatch> {
    let mut fields = vec![Arc::new(Field::new("tenant_id", DataType::Utf8, false))];
    fields.extend(batch.schema().fields().iter().cloned());
    let mut columns: Vec<ArrayRef> =
        vec![Arc::new(StringArray::from_iter_values((0..batch.num_rows()).map(|_| tenant)))];
    columns.extend(batch.columns().iter().cloned());
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
        .map_err(|e| StoreError::Invalid { what: "report".into(), reason: e.to_string() })
}
