//! Partition files: atomic replace, merge by identity, and reads that never trust a file blindly.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use chrono::NaiveDate;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use super::codec::{LakeRecord, month_of};
use crate::{ReportVariant, Result, StoreError};

pub(crate) const DATA_FILE: &str = "data.parquet";

pub(crate) fn tenant_dir(root: &Path, dataset: &str, tenant: &str) -> PathBuf {
    root.join(dataset).join(format!("tenant={tenant}"))
}

fn partition_file(root: &Path, dataset: &str, tenant: &str, month: Option<&str>) -> PathBuf {
    let dir = tenant_dir(root, dataset, tenant);
    match month {
        Some(m) => dir.join(format!("month={m}")).join(DATA_FILE),
        None => dir.join(DATA_FILE),
    }
}

/// Writes `batch` to `path` atomically: a temporary file in the same directory, fsync, rename, fsync the directory.
pub(crate) fn write_atomic(path: &Path, batch: &RecordBatch) -> Result<()> {
    let dir = path.parent().expect("partition files live in a directory");
    std::fs::create_dir_all(dir).map_err(|e| StoreError::io(dir, e))?;
    // A dot-prefixed name without the .parquet extension: globbing readers (DuckDB, polars) never see it.
    let tmp = dir.join(format!(".tmp-{}", uuid::Uuid::new_v4()));
    let result = (|| {
        let file = File::create(&tmp).map_err(|e| StoreError::io(&tmp, e))?;
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).expect("valid level")))
            .build();
        let mut writer = ArrowWriter::try_new(file, batch.schema(), Some(props))
            .map_err(|e| StoreError::Invalid { what: path.display().to_string(), reason: e.to_string() })?;
        writer
            .write(batch)
            .map_err(|e| StoreError::Invalid { what: path.display().to_string(), reason: e.to_string() })?;
        let file = writer
            .into_inner()
            .map_err(|e| StoreError::Invalid { what: path.display().to_string(), reason: e.to_string() })?;
        file.sync_all().map_err(|e| StoreError::io(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| StoreError::io(path, e))?;
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Reads a whole Parquet file. A file that cannot be decoded is reported as corrupt, with its path.
pub(crate) fn read_file(path: &Path) -> Result<Vec<RecordBatch>> {
    let corrupt = |reason: String| StoreError::Corrupt { path: path.to_owned(), reason };
    let file = File::open(path).map_err(|e| StoreError::io(path, e))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| corrupt(e.to_string()))?
        .build()
        .map_err(|e| corrupt(e.to_string()))?;
    reader.map(|b| b.map_err(|e| corrupt(e.to_string()))).collect()
}

fn read_records<R: LakeRecord>(path: &Path, tenant: &str) -> Result<Vec<R>> {
    let mut out = Vec::new();
    for batch in read_file(path)? {
        out.extend(
            R::from_batch(tenant, &batch)
                .map_err(|e| StoreError::Corrupt { path: path.to_owned(), reason: e.to_string() })?,
        );
    }
    Ok(out)
}

/// Merges `rows` into their partitions; the highest version of each identity wins (the newer write on a tie).
pub(crate) fn upsert<R: LakeRecord>(root: &Path, tenant: &str, rows: &[R]) -> Result<usize> {
    let mut by_partition: BTreeMap<Option<String>, Vec<&R>> = BTreeMap::new();
    for row in rows {
        by_partition.entry(row.partition_day().map(month_of)).or_default().push(row);
    }
    for (month, new_rows) in by_partition {
        let path = partition_file(root, R::DATASET, tenant, month.as_deref());
        // Read first: a corrupt partition is refused, never overwritten, so nothing already stored is lost.
        let existing = if path.exists() { read_records::<R>(&path, tenant)? } else { Vec::new() };
        let mut merged: BTreeMap<R::Key, R> = existing.into_iter().map(|r| (r.key(), r)).collect();
        for row in new_rows {
            match merged.get(&row.key()) {
                Some(old) if old.version() > row.version() => {}
                _ => {
                    merged.insert(row.key(), row.clone());
                }
            }
        }
        let refs: Vec<&R> = merged.values().collect();
        write_atomic(&path, &R::to_batch(tenant, &refs))?;
    }
    Ok(rows.len())
}

/// The partition files of a tenant's dataset whose month overlaps `[from, to]` (all when unbounded), in month order.
fn partition_files(
    root: &Path,
    dataset: &str,
    tenant: &str,
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
) -> Result<Vec<PathBuf>> {
    let dir = tenant_dir(root, dataset, tenant);
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let direct = dir.join(DATA_FILE);
    if direct.exists() {
        return Ok(vec![direct]);
    }
    let (lo, hi) = (from.map(month_of), to.map(month_of));
    let mut months: Vec<String> = std::fs::read_dir(&dir)
        .map_err(|e| StoreError::io(&dir, e))?
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| entry.file_name().to_str().and_then(|n| n.strip_prefix("month=")).map(str::to_owned))
        // Partition pruning: months outside the range are never opened.
        .filter(|m| lo.as_ref().is_none_or(|lo| m >= lo) && hi.as_ref().is_none_or(|hi| m <= hi))
        .collect();
    months.sort();
    Ok(months
        .into_iter()
        .map(|month| partition_file(root, dataset, tenant, Some(&month)))
        .filter(|path| path.exists())
        .collect())
}

/// Reads a tenant's records whose partition month overlaps `[from, to]` (all months when unbounded).
pub(crate) fn read<R: LakeRecord>(
    root: &Path,
    tenant: &str,
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
) -> Result<Vec<R>> {
    let mut out = Vec::new();
    for path in partition_files(root, R::DATASET, tenant, from, to)? {
        out.extend(read_records::<R>(&path, tenant)?);
    }
    Ok(out)
}

/// A tenant's partition files for `[from, to]`, each checked before anyone scans it in place: the footer decodes
/// and the file has the dataset's columns. A file that fails is named, with what to do about it.
pub(crate) fn checked_files<R: LakeRecord>(
    root: &Path,
    tenant: &str,
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
) -> Result<Vec<PathBuf>> {
    let files = partition_files(root, R::DATASET, tenant, from, to)?;
    let expected = R::to_batch(tenant, &[]).schema();
    for path in &files {
        let corrupt = |reason: String| StoreError::Corrupt { path: path.clone(), reason };
        let file = File::open(path).map_err(|e| StoreError::io(path, e))?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| corrupt(e.to_string()))?;
        let names = |s: &arrow::datatypes::Schema| s.fields().iter().map(|f| f.name().clone()).collect::<Vec<_>>();
        if names(builder.schema()) != names(&expected) {
            return Err(corrupt(format!(
                "columns {:?} are not the lake's {:?}",
                names(builder.schema()),
                names(&expected)
            )));
        }
    }
    Ok(files)
}

/// Where a tenant's slice of one variant of a report table lives.
pub(crate) fn report_file(root: &Path, table: &str, tenant: &str, variant: &ReportVariant) -> PathBuf {
    let dir = tenant_dir(&root.join("reports"), table, tenant);
    if variant.is_main() {
        dir.join(DATA_FILE)
    } else {
        dir.join(format!("variant={}", variant.as_str())).join(DATA_FILE)
    }
}

/// Present while a write is in progress; left behind by a writer that was killed.
pub(crate) const WRITING_MARKER: &str = ".writing";

/// Removes the temporary files a killed writer left behind (`.tmp-*` beside the files they were to replace). Only
/// when a writer did not finish (its marker is still there), and never while another process holds the write lock,
/// since its temporary files are not orphans.
pub(crate) fn remove_orphans(root: &Path) -> Result<usize> {
    let marker = root.join(WRITING_MARKER);
    if !marker.exists() {
        return Ok(0);
    }
    let lock_path = root.join(".lock");
    let lock = match File::options().create(true).truncate(false).write(true).open(&lock_path) {
        Ok(f) => f,
        Err(_) => return Ok(0), // a read-only lake: nothing to clean, and nothing we could
    };
    if lock.try_lock().is_err() {
        return Ok(0);
    }
    let mut removed = 0;
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|e| StoreError::io(&dir, e))?;
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                stack.push(path);
            } else if name.starts_with(".tmp-") {
                std::fs::remove_file(&path).map_err(|e| StoreError::io(&path, e))?;
                tracing::info!(path = %path.display(), "removed a temporary file left by an interrupted write");
                removed += 1;
            }
        }
    }
    let _ = std::fs::remove_file(&marker);
    let _ = lock.unlock();
    Ok(removed)
}

pub(crate) fn concat(schema: Arc<arrow::datatypes::Schema>, batches: &[RecordBatch]) -> Result<RecordBatch> {
    arrow::compute::concat_batches(&schema, batches)
        .map_err(|e| StoreError::Invalid { what: "report".into(), reason: e.to_string() })
}
