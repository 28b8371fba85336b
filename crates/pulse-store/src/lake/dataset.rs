//! Partition files: append-only parts, compaction, merge by identity, and reads that never trust a file blindly.
//!
//! A partition directory holds its compacted rows (`data.parquet`, one row per identity) and the parts written since
//! (`part-<sequence>-<id>.parquet`, each the rows of one write, written atomically and never rewritten). A write
//! costs what it writes, not the size of its partition. Reads merge the compacted file and the parts in write order
//! by identity (the highest version wins, the later write on a tie). When a partition has its dataset's
//! [`LakeRecord::COMPACT_AT`] parts, the write that made it so folds them into a new `data.parquet` (atomically) and
//! then removes them; a crash between the two leaves parts that merge again to the same rows. A lone part already in
//! a compacted file's form becomes the compacted file by a rename ([`promote_single_part`]), and the end of an ingest
//! run compacts a tenant's partitions on several threads ([`Compactions`]). Scans in place ([`checked_files`])
//! compact first, so that what DuckDB or polars read is one file per partition with no duplicate
//! identities. Writes and compactions of facts, posts and post insights merge in Arrow batches by their key columns
//! ([`latest_rows`]); reads, and the other datasets, merge records.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use chrono::{Datelike as _, NaiveDate};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use super::codec::{LakeRecord, month_of};
use crate::{ReportVariant, Result, StoreError};

pub(crate) const DATA_FILE: &str = "data.parquet";
const PART_PREFIX: &str = "part-";

pub(crate) fn tenant_dir(root: &Path, dataset: &str, tenant: &str) -> PathBuf {
    root.join(dataset).join(format!("tenant={tenant}"))
}

fn partition_dir(root: &Path, dataset: &str, tenant: &str, month: Option<&str>) -> PathBuf {
    let dir = tenant_dir(root, dataset, tenant);
    match month {
        Some(m) => dir.join(format!("month={m}")),
        None => dir,
    }
}

/// Writes `batch` to `path` atomically: a temporary file in the same directory, fsync, rename, fsync the directory.
///
/// With `pruned_by` (a dataset's key columns), only those of its string columns get min/max statistics: scans skip
/// row groups by the leading key columns (rows are in key order), while the other strings (tenant, practice, Graph
/// metric name, API version) span every row group, so their statistics would never skip one; computing a string
/// column's statistics costs two comparisons per value (all of them together were 8% of a backfill's samples).
fn write_atomic(path: &Path, batch: &RecordBatch, pruned_by: Option<&[&str]>) -> Result<()> {
    // Datasets' files: ZSTD, small on disk for a year of facts.
    let zstd = Compression::ZSTD(ZstdLevel::try_new(3).expect("a valid level"));
    let mut props = writer_properties(zstd);
    if let Some(keys) = pruned_by {
        for field in batch.schema().fields() {
            if *field.data_type() == arrow::datatypes::DataType::Utf8 && !keys.contains(&field.name().as_str()) {
                props = props.set_column_statistics_enabled(
                    parquet::schema::types::ColumnPath::from(field.name().as_str()),
                    parquet::file::properties::EnabledStatistics::None,
                );
            }
        }
    }
    write_parquet(path, batch, true, props.build())
}

fn writer_properties(compression: Compression) -> parquet::file::properties::WriterPropertiesBuilder {
    WriterProperties::builder().set_compression(compression).set_max_row_group_row_count(Some(super::ROW_GROUP_ROWS))
}

/// Report files: Snappy, cheaper to write and read (an incremental run rewrites some every day; the service reads
/// them after every run) for a larger file.
pub(crate) const REPORT_COMPRESSION: Compression = Compression::SNAPPY;

/// A report file, written atomically as [`write_atomic`].
pub(crate) fn write_report_file(path: &Path, batch: &RecordBatch) -> Result<()> {
    write_parquet(path, batch, true, writer_properties(REPORT_COMPRESSION).build())
}

/// [`write_atomic`], the directory synced only when `sync_dir` (else the caller syncs it after its last rename in
/// it, which makes every rename before it durable too).
fn write_parquet(path: &Path, batch: &RecordBatch, sync_dir: bool, props: WriterProperties) -> Result<()> {
    let dir = path.parent().expect("partition files live in a directory");
    std::fs::create_dir_all(dir).map_err(|e| StoreError::io(dir, e))?;
    // A dot-prefixed name without the .parquet extension: globbing readers (DuckDB, polars) never see it.
    let tmp = dir.join(format!(".tmp-{}", uuid::Uuid::new_v4()));
    let result = (|| {
        let file = File::create(&tmp).map_err(|e| StoreError::io(&tmp, e))?;
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
        if sync_dir && let Ok(d) = File::open(dir) {
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

/// A partition's part files, in write order.
fn parts(dir: &Path) -> Result<Vec<PathBuf>> {
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let mut parts: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| StoreError::io(dir, e))?
        .filter_map(|entry| entry.ok())
        .filter(|entry| {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            name.starts_with(PART_PREFIX) && name.ends_with(".parquet")
        })
        .map(|entry| entry.path())
        .collect();
    parts.sort();
    Ok(parts)
}

/// The name of the next part: a sequence after the last part's (and after the clock), so names sort in write order.
fn next_part(dir: &Path, existing: &[PathBuf]) -> PathBuf {
    let last = existing
        .last()
        .and_then(|p| p.file_name()?.to_str()?.strip_prefix(PART_PREFIX)?.split('-').next()?.parse::<u128>().ok());
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let seq = last.map_or(now, |l| now.max(l + 1));
    dir.join(format!("{PART_PREFIX}{seq:039}-{}.parquet", &uuid::Uuid::new_v4().simple().to_string()[..8]))
}

/// Rows of `files` (the compacted file first, then parts in write order) merged by identity: the highest version
/// wins, the later write on a tie.
fn merge<R: LakeRecord>(tenant: &str, files: &[PathBuf]) -> Result<Vec<R>> {
    let mut merged: BTreeMap<R::Key, R> = BTreeMap::new();
    for path in files {
        for row in read_records::<R>(path, tenant)? {
            match merged.get(&row.key()) {
                Some(old) if old.version() > row.version() => {}
                _ => {
                    merged.insert(row.key(), row);
                }
            }
        }
    }
    Ok(merged.into_values().collect())
}

/// [`merge`] in Arrow batches, for compacting a dataset with [`LakeRecord::MERGE_COLUMNS`]: `files`' rows in the
/// dataset's declared columns, one per identity, in key order. Every file is checked first as a read checks it (the
/// tenant of every row, and every distinct string decoded as a record's field: [`distinct_strings`]), so a file a
/// compaction would fold in is refused with its path, as a read refuses it, and nothing is written or removed.
fn merged_batch<R: LakeRecord>(tenant: &str, files: &[PathBuf]) -> Result<RecordBatch> {
    let (key, version) = R::MERGE_COLUMNS.expect("a dataset merged by its columns");
    let schema = R::to_batch(tenant, &[]).schema();
    let mut batches = Vec::new();
    for path in files {
        for batch in read_file(path)? {
            batches.push(checked_batch::<R>(tenant, path, &schema, &batch)?);
        }
    }
    let partition =
        || files.first().and_then(|f| f.parent()).map_or_else(|| R::DATASET.to_owned(), |d| d.display().to_string());
    let all = arrow::compute::concat_batches(&schema, &batches)
        .map_err(|e| StoreError::Invalid { what: partition(), reason: e.to_string() })?;
    latest_rows(&all, key, version).map_err(|e| StoreError::Invalid { what: partition(), reason: e.to_string() })
}

/// `batch` (read from `path`) in `schema`, the dataset's declared columns, checked as a read checks it: the tenant of
/// every row, and every distinct string decoded as a record's field ([`distinct_strings`]).
fn checked_batch<R: LakeRecord>(
    tenant: &str,
    path: &Path,
    schema: &arrow::datatypes::SchemaRef,
    batch: &RecordBatch,
) -> Result<RecordBatch> {
    let corrupt = |reason: String| StoreError::Corrupt { path: path.to_owned(), reason };
    // By name, in the declared order (a file written before a declaration's order changed merges too), in the
    // declared types (a time in another zone's notation, say).
    let columns = schema
        .fields()
        .iter()
        .map(|f| match batch.column_by_name(f.name()) {
            Some(c) if c.data_type() == f.data_type() => Ok(c.clone()),
            Some(c) => arrow::compute::cast(c, f.data_type()).map_err(|e| {
                corrupt(format!("column `{}` is {}, not {}: {e}", f.name(), c.data_type(), f.data_type()))
            }),
            None => Err(corrupt(format!("has no column `{}`", f.name()))),
        })
        .collect::<Result<Vec<_>>>()?;
    let batch = RecordBatch::try_new(schema.clone(), columns).map_err(|e| corrupt(e.to_string()))?;
    let distinct = distinct_strings(&batch).map_err(|e| corrupt(e.to_string()))?;
    R::from_batch(tenant, &distinct).map_err(|e| corrupt(e.to_string()))?;
    Ok(batch)
}

/// Makes a partition's only file, a part already in the form of a compacted file, its compacted file by renaming it,
/// instead of sorting, encoding and writing the same rows again (it is still read, to be checked); `false` (nothing
/// done) when the partition is not that or the part is not in that form. The part is checked as [`merged_batch`] checks it (an error names it), and must
/// have exactly the dataset's declared columns, in order, with one row per identity in key order: what
/// [`latest_rows`] gives a part written by [`upsert`], and what a read of a lone compacted file takes for granted.
/// A part that is otherwise (hand-placed, or from an older layout) is merged as usual. At the end of a backfill of an
/// eighth of the national scenario, about a sixth of the facts partitions and a quarter of the posts partitions had a
/// single part.
fn promote_single_part<R: LakeRecord>(dir: &Path, tenant: &str, files: &[PathBuf]) -> Result<bool> {
    let (Some((key, _)), [part]) = (R::MERGE_COLUMNS, files) else {
        return Ok(false);
    };
    if part.file_name().is_none_or(|n| n == DATA_FILE) {
        return Ok(false);
    }
    let schema = R::to_batch(tenant, &[]).schema();
    let corrupt = |reason: String| StoreError::Corrupt { path: part.clone(), reason };
    let file = File::open(part).map_err(|e| StoreError::io(part, e))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| corrupt(e.to_string()))?;
    // The file's own schema (a file without rows has no batches to look at), its row groups no larger than a
    // compaction writes (scans skip row groups by statistics), and some rows (an empty part is merged into an empty
    // file of the declared columns).
    let names = |s: &arrow::datatypes::Schema| -> Vec<(String, arrow::datatypes::DataType)> {
        s.fields().iter().map(|f| (f.name().clone(), f.data_type().clone())).collect()
    };
    let metadata = builder.metadata();
    if names(builder.schema()) != names(&schema)
        || metadata.file_metadata().num_rows() == 0
        || metadata.row_groups().iter().any(|g| g.num_rows() as usize > super::ROW_GROUP_ROWS)
    {
        return Ok(false);
    }
    let batches = builder
        .build()
        .map_err(|e| corrupt(e.to_string()))?
        .map(|b| b.map_err(|e| corrupt(e.to_string())))
        .collect::<Result<Vec<_>>>()?;
    for batch in &batches {
        checked_batch::<R>(tenant, part, &schema, batch)?;
    }
    let in_order = || -> std::result::Result<bool, arrow::error::ArrowError> {
        use arrow::row::{RowConverter, SortField};
        let fields = key.iter().map(|k| schema.field_with_name(k).map(|f| SortField::new(f.data_type().clone())));
        let converter = RowConverter::new(fields.collect::<std::result::Result<_, _>>()?)?;
        let mut rows = converter.empty_rows(0, 0);
        for batch in &batches {
            let columns: Vec<_> = key.iter().filter_map(|k| batch.column_by_name(k).cloned()).collect();
            converter.append(&mut rows, &columns)?;
        }
        Ok((1..rows.num_rows()).all(|i| rows.row(i - 1) < rows.row(i)))
    };
    if !in_order().map_err(|e| corrupt(e.to_string()))? {
        return Ok(false);
    }
    let target = dir.join(DATA_FILE);
    std::fs::rename(part, &target).map_err(|e| StoreError::io(&target, e))?;
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(true)
}

/// A batch with each distinct value of `batch`'s string columns: each string column's distinct values in order of
/// first appearance, repeated to the longest such list; every other column repeats its first value. Decoding it into
/// records checks every string of `batch` as decoding `batch` would (a record checks each field on its own, and
/// checks only strings: ids, names, the tenant), for about one comparison per value, since rows in key order bring
/// equal values in runs; decoding every row instead made a national backfill 45% slower in one run (83.9 s against
/// 57.9 s).
fn distinct_strings(batch: &RecordBatch) -> std::result::Result<RecordBatch, arrow::error::ArrowError> {
    use arrow::array::{Array as _, ArrayRef, AsArray as _, StringArray, UInt32Array};
    if batch.num_rows() == 0 {
        return Ok(batch.clone());
    }
    let lists: Vec<Option<Vec<&str>>> = batch
        .columns()
        .iter()
        .map(|column| {
            let strings = column.as_string_opt::<i32>()?;
            let mut seen = std::collections::HashSet::new();
            let mut list = Vec::new();
            let mut last = None;
            for i in 0..strings.len() {
                let value = strings.value(i);
                if last != Some(value) && seen.insert(value) {
                    list.push(value);
                }
                last = Some(value);
            }
            Some(list)
        })
        .collect();
    let rows = lists.iter().flatten().map(Vec::len).max().unwrap_or(1).max(1);
    let first = UInt32Array::from(vec![0u32; rows]);
    let columns = batch
        .columns()
        .iter()
        .zip(&lists)
        .map(|(column, list)| match list {
            Some(list) => {
                Ok(Arc::new(StringArray::from_iter_values((0..rows).map(|i| list[i % list.len()]))) as ArrayRef)
            }
            None => arrow::compute::take(column, &first, None),
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    RecordBatch::try_new(batch.schema(), columns)
}

/// The rows of `batch` (in write order: a later row is a later write), one per identity (the `key` columns): the
/// highest `version` wins, the later write on a tie; in key order. The key columns are compared in Arrow's row
/// format, whose byte order is the values' order, so nothing is decoded into records. The sort is stable and
/// finds runs: a compaction's input, each file already in key order, costs a merge of its files, not a full sort.
fn latest_rows(batch: &RecordBatch, key: &[&str], version: &str) -> std::result::Result<RecordBatch, String> {
    use arrow::array::{Array as _, AsArray as _, UInt32Array};
    use arrow::datatypes::{DataType, Int64Type};
    use arrow::row::{RowConverter, SortField};
    let column = |name: &str| batch.column_by_name(name).cloned().ok_or_else(|| format!("no column `{name}`"));
    let keys = key.iter().map(|k| column(k)).collect::<std::result::Result<Vec<_>, _>>()?;
    let converter = RowConverter::new(keys.iter().map(|c| SortField::new(c.data_type().clone())).collect())
        .map_err(|e| e.to_string())?;
    let rows = converter.convert_columns(&keys).map_err(|e| e.to_string())?;
    let versions = arrow::compute::cast(&column(version)?, &DataType::Int64).map_err(|e| e.to_string())?;
    if versions.null_count() > 0 {
        return Err(format!("`{version}` has empty values"));
    }
    let versions = versions.as_primitive::<Int64Type>().values();
    let mut order: Vec<u32> = (0..batch.num_rows() as u32).collect();
    order.sort_by(|&a, &b| {
        let (a, b) = (a as usize, b as usize);
        rows.row(a).cmp(&rows.row(b)).then(versions[a].cmp(&versions[b]))
    });
    // The last of each key's run: its highest version, and of equal versions the later write (the sort is stable).
    let keep: Vec<u32> = order
        .iter()
        .enumerate()
        .filter(|&(i, &row)| order.get(i + 1).is_none_or(|&next| rows.row(next as usize) != rows.row(row as usize)))
        .map(|(_, &row)| row)
        .collect();
    arrow::compute::take_record_batch(batch, &UInt32Array::from(keep)).map_err(|e| e.to_string())
}

/// The compacted file (when there is one) and the parts of a partition, in merge order.
///
/// The parts are listed before the compacted file is looked for. A compaction writes the new compacted file before
/// it removes the parts it folded in, so a reader that does not hold the write lock sees every row at least once:
/// either in a part it listed or in the compacted file that replaced it (see [`without_the_lock`]).
fn partition_contents(dir: &Path) -> Result<Vec<PathBuf>> {
    let parts = parts(dir)?;
    let base = dir.join(DATA_FILE);
    let mut files = if base.exists() { vec![base] } else { Vec::new() };
    files.extend(parts);
    Ok(files)
}

/// How often a read that does not hold the write lock starts again when a compaction changed the partition under it,
/// before the last attempt, which waits for the lake's lock (shared, so it only waits for a writer in progress).
const READ_ATTEMPTS: u32 = 6;

/// Which file the partition's compacted file is (device and inode), or `None` when it has none. A compaction
/// replaces it by renaming a new file over it, so a different identity means a compaction happened in between.
fn compacted_identity(dir: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata(dir.join(DATA_FILE)).ok().map(|m| (m.dev(), m.ino()))
}

/// Runs a partition read that does not hold the write lock (a digest's status or a report read must not wait for an
/// ingest), as an optimistic read: the compacted file's identity is noted before the parts are listed and checked
/// after everything was read. A compaction renames its new compacted file into place before it removes the parts it
/// folded in, so a read that saw no rename in between read one consistent state of the partition (a part already
/// folded in and read twice has the same rows, which merge by identity). A rename in between, or a listed part gone
/// when it was read, starts the read again, after a short wait that doubles each time; the last attempt holds the
/// lake's lock shared, so no writer can change the partition under it.
fn without_the_lock<T>(root: &Path, dir: &Path, mut read: impl FnMut(&[PathBuf]) -> Result<T>) -> Result<T> {
    for attempt in 1..READ_ATTEMPTS {
        let before = compacted_identity(dir);
        let files = partition_contents(dir)?;
        match read(&files) {
            Err(StoreError::Io { path, source })
                if source.kind() == std::io::ErrorKind::NotFound && files.contains(&path) =>
            {
                tracing::debug!(path = %path.display(), attempt, "a part was compacted while being read; reading again");
            }
            Ok(_) if compacted_identity(dir) != before => {
                tracing::debug!(dir = %dir.display(), attempt, "the partition was compacted while being read; reading again");
            }
            result => return result,
        }
        std::thread::sleep(std::time::Duration::from_millis(5 << attempt));
    }
    let _shared = lake_lock_shared(root);
    read(&partition_contents(dir)?)
}

/// The lake's lock (`<root>/.lock`), shared, for a read that must not overlap a write. It waits for a writer in
/// progress, for at most a minute (a read inside a write of this process would otherwise wait for itself; it never
/// gets here, since no compaction can overlap it); `None` when the lock cannot be had (a read-only lake, no lock file,
/// or still held after a minute): the read then goes ahead without it.
fn lake_lock_shared(root: &Path) -> Option<File> {
    let file = File::open(root.join(".lock")).ok()?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while file.try_lock_shared().is_err() {
        if std::time::Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Some(file)
}

/// Folds a partition's parts into its compacted file. Everything is read before anything is replaced, so a corrupt
/// file is refused with its path and nothing already stored is lost.
fn compact<R: LakeRecord>(dir: &Path, tenant: &str) -> Result<()> {
    let files = partition_contents(dir)?;
    if files.iter().all(|f| f.file_name().is_some_and(|n| n == DATA_FILE))
        || promote_single_part::<R>(dir, tenant, &files)?
    {
        return Ok(());
    }
    let batch = if R::MERGE_COLUMNS.is_some() {
        merged_batch::<R>(tenant, &files)?
    } else {
        let rows = merge::<R>(tenant, &files)?;
        R::to_batch(tenant, &rows.iter().collect::<Vec<_>>())
    };
    write_atomic(&dir.join(DATA_FILE), &batch, R::MERGE_COLUMNS.map(|(key, _)| key))?;
    for part in files.iter().filter(|f| f.file_name().is_some_and(|n| n != DATA_FILE)) {
        std::fs::remove_file(part).map_err(|e| StoreError::io(part, e))?;
    }
    Ok(())
}

/// Appends `rows` to their partitions, one part file per partition; a partition with [`LakeRecord::COMPACT_AT`]
/// parts is then compacted. Rows repeated within `rows` keep the highest version (the later on a tie).
pub(crate) fn upsert<R: LakeRecord>(root: &Path, tenant: &str, rows: &[R]) -> Result<usize> {
    // By month (year and month, named once per partition), each month's rows in write order.
    type Month = Option<(i32, u32)>;
    let mut by_partition: BTreeMap<Month, (Option<String>, Vec<&R>)> = BTreeMap::new();
    for row in rows {
        let day = row.partition_day();
        let (_, partition) =
            by_partition.entry(day.map(|d| (d.year(), d.month()))).or_insert_with(|| (day.map(month_of), Vec::new()));
        partition.push(row);
    }
    for (month, new_rows) in by_partition.into_values() {
        let dir = partition_dir(root, R::DATASET, tenant, month.as_deref());
        std::fs::create_dir_all(&dir).map_err(|e| StoreError::io(&dir, e))?;
        // A partition whose compacted file is corrupt takes no more writes (its footer is read, not its rows): it is
        // reported with its path until someone moves it aside, and never overwritten.
        let base = dir.join(DATA_FILE);
        if base.exists() {
            let file = File::open(&base).map_err(|e| StoreError::io(&base, e))?;
            ParquetRecordBatchReaderBuilder::try_new(file)
                .map_err(|e| StoreError::Corrupt { path: base.clone(), reason: e.to_string() })?;
        }
        let mut existing = parts(&dir)?;
        let part = next_part(&dir, &existing);
        let batch = match R::MERGE_COLUMNS {
            Some((key, version)) => latest_rows(&R::to_batch(tenant, &new_rows), key, version)
                .map_err(|reason| StoreError::Invalid { what: part.display().to_string(), reason })?,
            None => {
                let mut latest: BTreeMap<R::Key, &R> = BTreeMap::new();
                for row in new_rows {
                    match latest.get(&row.key()) {
                        Some(old) if old.version() > row.version() => {}
                        _ => {
                            latest.insert(row.key(), row);
                        }
                    }
                }
                R::to_batch(tenant, &latest.into_values().collect::<Vec<_>>())
            }
        };
        write_atomic(&part, &batch, R::MERGE_COLUMNS.map(|(key, _)| key))?;
        existing.push(part);
        if existing.len() >= R::COMPACT_AT {
            compact::<R>(&dir, tenant)?;
        }
    }
    Ok(rows.len())
}

/// Compacts a tenant's partitions of a dataset that overlap `[from, to]` (as [`Compactions`]).
pub(crate) fn compact_range<R: LakeRecord>(
    root: &Path,
    tenant: &str,
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
) -> Result<()> {
    Compactions::new(root, tenant).add::<R>(from, to)?.run()
}

/// At most this many partitions are compacted at a time (each holds its partition's rows in memory).
const COMPACTION_WORKERS: usize = 4;

/// A tenant's partition compactions, run together on as many threads as the machine has cores (at most
/// [`COMPACTION_WORKERS`]), the largest partitions first. Partitions are independent directories, each compacted as
/// [`compact`] alone does it (under the caller's write lock), so running them at the same time changes nothing a
/// reader sees. The end of an ingest run compacts everything it wrote with nothing else left to do: one partition at a
/// time, it left all cores but one idle. (Together with [`promote_single_part`]: in one session, one run of the
/// national backfill into the lake before took 69.2 s, three after took 60.1–62.1 s; `benches/results/lake-backfill.md`.)
///
/// A failed compaction does not stop the others (none loses rows: reads merge parts); the error reported is the first
/// in partition order, so it does not depend on which thread finished first.
pub(crate) struct Compactions<'a> {
    root: &'a Path,
    tenant: &'a str,
    jobs: Vec<(PathBuf, CompactFn)>,
}

/// [`compact`] for one dataset.
type CompactFn = fn(&Path, &str) -> Result<()>;

impl<'a> Compactions<'a> {
    pub(crate) fn new(root: &'a Path, tenant: &'a str) -> Self {
        Self { root, tenant, jobs: Vec::new() }
    }

    /// Adds the tenant's partitions of `R`'s dataset that overlap `[from, to]`.
    pub(crate) fn add<R: LakeRecord>(mut self, from: Option<NaiveDate>, to: Option<NaiveDate>) -> Result<Self> {
        let dirs = partitions(self.root, R::DATASET, self.tenant, from, to)?;
        self.jobs.extend(dirs.into_iter().map(|dir| (dir, compact::<R> as CompactFn)));
        Ok(self)
    }

    pub(crate) fn run(self) -> Result<()> {
        self.run_on(std::thread::available_parallelism().map_or(1, usize::from).min(COMPACTION_WORKERS))
    }

    /// [`Compactions::run`] on `workers` threads (the calling thread one of them).
    fn run_on(self, workers: usize) -> Result<()> {
        let Self { tenant, mut jobs, .. } = self;
        // A partition added twice is compacted once: two threads must never compact the same partition.
        let mut seen = std::collections::HashSet::new();
        jobs.retain(|(dir, _)| seen.insert(dir.clone()));
        let workers = workers.min(jobs.len()).max(1);
        // The largest first (bytes on disk), so the last to finish is a small one.
        let sizes: Vec<u64> = jobs.iter().map(|(dir, _)| bytes_in(dir)).collect();
        let mut order: Vec<usize> = (0..jobs.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(sizes[i]));
        let next = std::sync::atomic::AtomicUsize::new(0);
        let results: Vec<std::sync::Mutex<Option<Result<()>>>> = jobs.iter().map(|_| Default::default()).collect();
        let work = || {
            while let Some(&i) = order.get(next.fetch_add(1, std::sync::atomic::Ordering::Relaxed)) {
                let (dir, compact) = &jobs[i];
                let result = compact(dir, tenant);
                *results[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(result);
            }
        };
        std::thread::scope(|scope| {
            // The calling thread is one of the workers (on one core, the only one); a thread that cannot be started
            // leaves its share to the others.
            for _ in 1..workers {
                let work = &work;
                if std::thread::Builder::new().name("lake-compaction".into()).spawn_scoped(scope, work).is_err() {
                    break;
                }
            }
            work();
        });
        let mut first = None;
        for (result, (dir, _)) in results.into_iter().zip(&jobs) {
            if let Some(Err(e)) = result.into_inner().unwrap_or_else(|e| e.into_inner()) {
                if first.is_none() {
                    first = Some(e);
                } else {
                    tracing::warn!(partition = %dir.display(), error = %e, "a partition could not be compacted; reads still merge its parts");
                }
            }
        }
        first.map_or(Ok(()), Err)
    }
}

/// The bytes of a directory's files (not below it).
fn bytes_in(dir: &Path) -> u64 {
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries.filter_map(|e| e.ok()?.metadata().ok()).filter(|m| m.is_file()).map(|m| m.len()).sum()
    })
}

/// The partition directories of a tenant's dataset whose month overlaps `[from, to]` (all when unbounded), in month
/// order; an unpartitioned dataset is its tenant directory.
fn partitions(
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
    let mut out = Vec::new();
    if !partition_contents(&dir)?.is_empty() {
        out.push(dir.clone());
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
    out.extend(months.into_iter().map(|month| partition_dir(root, dataset, tenant, Some(&month))));
    Ok(out)
}

/// The files of a tenant's dataset for `[from, to]` (each partition's compacted file and parts).
fn partition_files(
    root: &Path,
    dataset: &str,
    tenant: &str,
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for dir in partitions(root, dataset, tenant, from, to)? {
        files.extend(partition_contents(&dir)?);
    }
    Ok(files)
}

/// Reads a tenant's records whose partition month overlaps `[from, to]` (all months when unbounded), merged by
/// identity within each partition.
pub(crate) fn read<R: LakeRecord>(
    root: &Path,
    tenant: &str,
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
) -> Result<Vec<R>> {
    let mut out = Vec::new();
    for dir in partitions(root, R::DATASET, tenant, from, to)? {
        out.extend(without_the_lock(root, &dir, |files| read_partition::<R>(tenant, files))?);
    }
    Ok(out)
}

/// The rows of a partition's files (its compacted file, then its parts), one per identity.
fn read_partition<R: LakeRecord>(tenant: &str, files: &[PathBuf]) -> Result<Vec<R>> {
    match files {
        // A compacted file alone holds one row per identity already.
        [only] if only.file_name().is_some_and(|n| n == DATA_FILE) => read_records::<R>(only, tenant),
        files => merge::<R>(tenant, files),
    }
}

/// The days of a tenant's rows fetched at or after `since` (`fetched_micros`, in microseconds; `day_column` a date,
/// or a time read as its UTC day), from the partitions
/// with a file modified at or after `modified` (a partition's files are written once, by writes and compactions of
/// its rows, so an older partition holds nothing written since), reading only the `day`, `fetched_at` and
/// `tenant_id` columns of each file and no rows merged: a row a later fetch superseded counts too, as the
/// caller wants (its day changed). Every row's tenant is checked.
pub(crate) fn days_fetched_since<R: LakeRecord>(
    root: &Path,
    tenant: &str,
    modified: std::time::SystemTime,
    fetched_micros: i64,
    day_column: &str,
    fetched_column: &str,
) -> Result<std::collections::BTreeSet<NaiveDate>> {
    let mut out = std::collections::BTreeSet::new();
    for dir in partitions(root, R::DATASET, tenant, None, None)? {
        out.extend(without_the_lock(root, &dir, |files| {
            let mut newest = None;
            for f in files {
                let m = std::fs::metadata(f).and_then(|m| m.modified()).map_err(|e| StoreError::io(f, e))?;
                newest = newest.max(Some(m));
            }
            let mut days = std::collections::BTreeSet::new();
            if newest.is_none_or(|t| t < modified) {
                return Ok(days);
            }
            for f in files {
                let corrupt = |reason: String| StoreError::Corrupt { path: f.to_owned(), reason };
                let file = File::open(f).map_err(|e| StoreError::io(f, e))?;
                let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| corrupt(e.to_string()))?;
                let wanted = [crate::table::TENANT_ID, day_column, fetched_column];
                let mask = parquet::arrow::ProjectionMask::columns(builder.parquet_schema(), wanted);
                let reader = builder.with_projection(mask).build().map_err(|e| corrupt(e.to_string()))?;
                for batch in reader {
                    let batch = batch.map_err(|e| corrupt(e.to_string()))?;
                    super::codec::check_tenant(R::DATASET, tenant, &batch).map_err(|e| corrupt(e.to_string()))?;
                    let c = crate::util::Columns::new(&batch, R::DATASET);
                    let fetched = c.ts(fetched_column)?;
                    let wanted = (0..batch.num_rows()).filter(|i| fetched.value(*i) >= fetched_micros);
                    match c.date(day_column) {
                        Ok(day) => days.extend(wanted.map(|i| crate::util::i32_to_day(day.value(i)))),
                        Err(_) => {
                            let time = c.ts(day_column)?;
                            days.extend(wanted.map(|i| crate::util::from_micros(time.value(i)).date_naive()));
                        }
                    }
                }
            }
            Ok(days)
        })?);
    }
    Ok(out)
}

/// A tenant's partition files for `[from, to]`, each checked before anyone scans it in place: the footer decodes
/// and the file has the dataset's columns. A file that fails is named, with what to do about it. Call
/// [`compact_range`] first: a partition with parts has rows of one identity in several files.
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
        // Read by name, so the order of columns is free (files written before a declaration's order changed).
        let names = |s: &arrow::datatypes::Schema| {
            let mut n = s.fields().iter().map(|f| f.name().clone()).collect::<Vec<_>>();
            n.sort();
            n
        };
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

/// A report slice stored by month: the manifest naming each month's file, in the slice's directory.
const REPORT_MANIFEST: &str = "manifest.json";
const REPORT_PART_PREFIX: &str = "part-";

/// The directory of a tenant's slice of one variant of a report table.
pub(crate) fn report_dir(root: &Path, table: &str, tenant: &str, variant: &ReportVariant) -> PathBuf {
    report_file(root, table, tenant, variant).parent().expect("a report file is in a directory").to_owned()
}

/// A slice's months and each month's file, months ascending; `None` when the slice is not stored by month (one
/// whole file, or never written).
pub(crate) fn report_manifest(dir: &Path) -> Result<Option<Vec<(String, String)>>> {
    let path = dir.join(REPORT_MANIFEST);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StoreError::io(&path, e)),
    };
    let parts: Vec<(String, String)> = serde_json::from_str(&text)
        .map_err(|e| StoreError::Corrupt { path: path.clone(), reason: format!("not a report manifest: {e}") })?;
    // Only names of this directory's part files: a manifest never points elsewhere.
    if let Some((_, bad)) = parts.iter().find(|(_, f)| !f.starts_with(REPORT_PART_PREFIX) || f.contains(['/', '\\'])) {
        return Err(StoreError::Corrupt { path, reason: format!("names `{bad}`, not a part file of its directory") });
    }
    Ok(Some(parts))
}

/// A report file's path and its batches.
pub(crate) type ReportFile = (PathBuf, Vec<RecordBatch>);

/// Reads the files of a slice stored by month, from `from_month` on (`None`: every month), each with its path.
/// A file removed while being read (a writer replaced its month) starts the read again from the new manifest, after
/// a short wait that doubles each time, the last attempt under the lake's lock; `None` when the slice is not stored
/// by month.
pub(crate) fn read_report_months(root: &Path, dir: &Path, from_month: Option<&str>) -> Result<Option<Vec<ReportFile>>> {
    for attempt in 1..=READ_ATTEMPTS {
        // The last attempt holds the lake's lock shared, so no writer replaces a month under it.
        let _shared = if attempt == READ_ATTEMPTS { lake_lock_shared(root) } else { None };
        let Some(parts) = report_manifest(dir)? else { return Ok(None) };
        let mut out = Vec::new();
        let mut gone = None;
        for (month, file) in &parts {
            if from_month.is_some_and(|f| month.as_str() < f) {
                continue;
            }
            let path = dir.join(file);
            match read_file(&path) {
                Ok(batches) => out.push((path, batches)),
                Err(StoreError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                    gone = Some(path);
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        match gone {
            None => return Ok(Some(out)),
            Some(path) if attempt == READ_ATTEMPTS => {
                return Err(StoreError::Corrupt { path, reason: "named by the report manifest but missing".into() });
            }
            Some(_) => std::thread::sleep(std::time::Duration::from_millis(5 << attempt)),
        }
    }
    unreachable!("the last attempt returns")
}

/// Writes a slice by month: `months`' files, then the manifest naming them and the months before `keep_before`
/// kept from the current manifest (`None`: none kept), atomically (a reader sees the old manifest or the new one),
/// then removes the files no manifest names (a whole-slice file written before, replaced months). Call under the
/// lake's write lock.
pub(crate) fn write_report_months(
    dir: &Path,
    keep_before: Option<&str>,
    months: &[(String, RecordBatch)],
) -> Result<()> {
    let mut parts: Vec<(String, String)> = match keep_before {
        Some(before) => {
            report_manifest(dir)?.unwrap_or_default().into_iter().filter(|(m, _)| m.as_str() < before).collect()
        }
        None => Vec::new(),
    };
    for (month, batch) in months {
        let name = format!("{REPORT_PART_PREFIX}{month}-{}.parquet", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        // The manifest's write syncs the directory after these renames.
        write_parquet(&dir.join(&name), batch, false, writer_properties(REPORT_COMPRESSION).build())?;
        parts.push((month.clone(), name));
    }
    parts.sort();
    let body = serde_json::to_vec_pretty(&parts).expect("a manifest serializes");
    write_bytes_atomic(&dir.join(REPORT_MANIFEST), &body)?;
    let named: std::collections::BTreeSet<&str> = parts.iter().map(|(_, f)| f.as_str()).collect();
    for entry in std::fs::read_dir(dir).map_err(|e| StoreError::io(dir, e))?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let stale = name == DATA_FILE || (name.starts_with(REPORT_PART_PREFIX) && !named.contains(name.as_str()));
        if stale && entry.file_type().is_ok_and(|t| t.is_file()) {
            let path = entry.path();
            std::fs::remove_file(&path).map_err(|e| StoreError::io(&path, e))?;
        }
    }
    Ok(())
}

/// Writes `body` to `path` atomically, as [`write_atomic`].
fn write_bytes_atomic(path: &Path, body: &[u8]) -> Result<()> {
    use std::io::Write;
    let dir = path.parent().expect("a file lives in a directory");
    std::fs::create_dir_all(dir).map_err(|e| StoreError::io(dir, e))?;
    let tmp = dir.join(format!(".tmp-{}", uuid::Uuid::new_v4()));
    let result = (|| {
        let mut file = File::create(&tmp).map_err(|e| StoreError::io(&tmp, e))?;
        file.write_all(body).map_err(|e| StoreError::io(&tmp, e))?;
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
        // A report stored by month whose writer stopped before its manifest named the new months' files.
        if let Some(parts) = report_manifest(&dir)? {
            let named: std::collections::BTreeSet<String> = parts.into_iter().map(|(_, f)| f).collect();
            for entry in std::fs::read_dir(&dir).map_err(|e| StoreError::io(&dir, e))?.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with(REPORT_PART_PREFIX) && !named.contains(&name) && entry.path().is_file() {
                    let path = entry.path();
                    std::fs::remove_file(&path).map_err(|e| StoreError::io(&path, e))?;
                    tracing::info!(path = %path.display(), "removed a report file no manifest names (an interrupted write)");
                    removed += 1;
                }
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

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, TimeZone as _, Utc};
    use pulse_domain::{ApiVersion, CanonicalMetric, PageInsightFact, Period};

    /// A small deterministic generator (no dependency for one test).
    struct Lcg(u64);
    impl Lcg {
        fn below(&mut self, n: u64) -> u64 {
            self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (self.0 >> 33) % n
        }
    }

    fn fact(rng: &mut Lcg, value: f64) -> PageInsightFact {
        let metrics = [CanonicalMetric::PageReach, CanonicalMetric::PageEngagedByAgeGender];
        let breakdowns = ["", "F.35-44", "M.65+", "U.18-24"];
        PageInsightFact {
            practice: ["M83001", "M83002"][rng.below(2) as usize].parse().unwrap(),
            page: ["1001", "1002", "20003", "3"][rng.below(4) as usize].parse().unwrap(),
            metric: metrics[rng.below(2) as usize],
            graph_metric: "page_impressions_unique",
            period: [Period::Day, Period::Week][rng.below(2) as usize],
            // Two months, so a write touches two partitions.
            day: NaiveDate::from_ymd_opt(2018, 1, 20).unwrap() + Duration::days(rng.below(20) as i64),
            breakdown: breakdowns[rng.below(4) as usize].into(),
            value,
            api_version: ApiVersion::new(2, 12),
            // Few distinct versions, so ties between writes (and within one write) are common.
            fetched_at: Utc.with_ymd_and_hms(2018, 6, 1, 0, 0, 0).unwrap() + Duration::seconds(rng.below(3) as i64),
        }
    }

    fn post(rng: &mut Lcg, value: f64) -> pulse_domain::Post {
        let page = ["1001", "1002", "20003"][rng.below(3) as usize];
        let n = [1, 2, 10, 11][rng.below(4) as usize];
        pulse_domain::Post {
            practice: "M83001".parse().unwrap(),
            page: page.parse().unwrap(),
            post: format!("{page}_{n}").parse().unwrap(),
            // A post's time is its own (its month is its partition): posts 1 and 2 in January, 10 and 11 in February.
            created_time: Utc.with_ymd_and_hms(2018, 1, 20, 0, 0, 0).unwrap() + Duration::days(n as i64),
            post_type: "video".into(),
            message: value.to_string(),
            permalink: String::new(),
            fetched_at: Utc.with_ymd_and_hms(2018, 6, 1, 0, 0, 0).unwrap() + Duration::seconds(rng.below(3) as i64),
        }
    }

    fn snapshot(rng: &mut Lcg, value: f64) -> pulse_domain::PostInsightSnapshot {
        let page = ["1001", "20003"][rng.below(2) as usize];
        pulse_domain::PostInsightSnapshot {
            practice: "M83001".parse().unwrap(),
            page: page.parse().unwrap(),
            post: format!("{page}_{}", [1, 2, 10][rng.below(3) as usize]).parse().unwrap(),
            metric: [CanonicalMetric::PostReach, CanonicalMetric::PostVideoViews][rng.below(2) as usize],
            graph_metric: "post_impressions_unique",
            breakdown: ["", "F.35-44", "M.65+"][rng.below(3) as usize].into(),
            snapshot_day: NaiveDate::from_ymd_opt(2018, 1, 20).unwrap() + Duration::days(rng.below(20) as i64),
            value,
            api_version: ApiVersion::new(2, 12),
            fetched_at: Utc.with_ymd_and_hms(2018, 6, 1, 0, 0, 0).unwrap() + Duration::seconds(rng.below(3) as i64),
        }
    }

    /// The Arrow merge (writes, compactions) against the rule stated for records: for every identity, the highest
    /// version, and of equal versions the later write; the compacted files in key order, one row per key. Each
    /// generated row is told apart by a value of its own, and versions are few, so ties are common.
    fn the_arrow_merge_keeps_what_the_record_merge_keeps<R: LakeRecord + PartialEq + std::fmt::Debug>(
        generate: impl Fn(&mut Lcg, f64) -> R,
    ) {
        for seed in 0..4 {
            let dir = tempfile::tempdir().unwrap();
            let mut rng = Lcg(seed);
            let mut model: BTreeMap<R::Key, R> = BTreeMap::new();
            let mut value = 0.0;
            let by_key = |a: &R, b: &R| a.key().cmp(&b.key());
            // Enough writes to cross the compaction threshold at least once.
            for write in 0..(R::COMPACT_AT + 5) {
                let rows: Vec<R> = (0..1 + rng.below(40))
                    .map(|_| {
                        value += 1.0;
                        generate(&mut rng, value)
                    })
                    .collect();
                for row in &rows {
                    match model.get(&row.key()) {
                        Some(old) if old.version() > row.version() => {}
                        _ => {
                            model.insert(row.key(), row.clone());
                        }
                    }
                }
                upsert(dir.path(), "alpha", &rows).unwrap();
                if write % 8 == 0 || write == R::COMPACT_AT {
                    let mut read = read::<R>(dir.path(), "alpha", None, None).unwrap();
                    read.sort_by(by_key);
                    assert!(read.iter().eq(model.values()), "seed {seed}, write {write}: what a read merges");
                }
            }
            compact_range::<R>(dir.path(), "alpha", None, None).unwrap();
            let mut all = Vec::new();
            for file in checked_files::<R>(dir.path(), "alpha", None, None).unwrap() {
                assert!(file.ends_with(DATA_FILE), "{file:?}");
                let rows = read_records::<R>(&file, "alpha").unwrap();
                assert!(
                    rows.windows(2).all(|w| w[0].key() < w[1].key()),
                    "seed {seed}: {file:?} in key order, one per key"
                );
                all.extend(rows);
            }
            all.sort_by(by_key);
            assert!(all.iter().eq(model.values()), "seed {seed}: what compaction keeps");
        }
    }

    #[test]
    fn the_arrow_merge_of_facts_keeps_what_the_record_merge_keeps() {
        the_arrow_merge_keeps_what_the_record_merge_keeps(fact);
    }

    #[test]
    fn the_arrow_merge_of_posts_keeps_what_the_record_merge_keeps() {
        the_arrow_merge_keeps_what_the_record_merge_keeps(post);
    }

    #[test]
    fn the_arrow_merge_of_post_insights_keeps_what_the_record_merge_keeps() {
        the_arrow_merge_keeps_what_the_record_merge_keeps(snapshot);
    }

    /// Scans skip row groups by the key columns' statistics, which are kept; the other strings have none.
    #[test]
    fn facts_files_keep_statistics_on_their_key_columns() {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = Lcg(3);
        let rows: Vec<PageInsightFact> = (0..50).map(|i| fact(&mut rng, i as f64)).collect();
        upsert(dir.path(), "alpha", &rows).unwrap();
        compact_range::<PageInsightFact>(dir.path(), "alpha", None, None).unwrap();
        let files = checked_files::<PageInsightFact>(dir.path(), "alpha", None, None).unwrap();
        assert!(!files.is_empty());
        for file in files {
            let reader = parquet::file::reader::SerializedFileReader::new(File::open(&file).unwrap()).unwrap();
            use parquet::file::reader::FileReader as _;
            let group = reader.metadata().row_group(0);
            let stats = |name: &str| {
                group.columns().iter().find(|c| c.column_path().string() == name).unwrap().statistics().is_some()
            };
            for key in PageInsightFact::MERGE_COLUMNS.unwrap().0 {
                assert!(stats(key), "{file:?}: `{key}` has statistics");
            }
            for other in ["tenant_id", "practice_code", "graph_metric", "api_version"] {
                assert!(!stats(other), "{file:?}: `{other}` has none");
            }
            assert!(stats("value") && stats("fetched_at"), "numbers and times keep theirs (cheap)");
        }
    }

    /// A part with a value no fact takes (a metric this build does not know) stops its partition's compaction, with
    /// the part named, as a read stops; nothing is folded or removed.
    #[test]
    fn an_arrow_compaction_refuses_a_value_no_record_takes() {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = Lcg(11);
        let rows: Vec<PageInsightFact> = (0..20).map(|i| fact(&mut rng, i as f64)).collect();
        let first = &rows[0];
        let target = partition_dir(dir.path(), PageInsightFact::DATASET, "alpha", Some(&month_of(first.day)));
        // Five rows of one good fact, the third's metric unknown: a bad value between equal good ones.
        let good = PageInsightFact::to_batch("alpha", &[first; 5]);
        let mut columns = good.columns().to_vec();
        let metric = good.schema().index_of(crate::table::page_insights::METRIC).unwrap();
        let known = first.metric.as_str();
        let metrics = [known, known, "page_unknown_metric", known, known];
        columns[metric] = Arc::new(arrow::array::StringArray::from(metrics.to_vec()));
        let bad = RecordBatch::try_new(good.schema(), columns).unwrap();
        write_atomic(&target.join("part-0-bad.parquet"), &bad, None).unwrap();
        // Later good writes to the same partition.
        upsert(dir.path(), "alpha", &rows).unwrap();
        let before = parts(&target).unwrap();
        let err = compact_range::<PageInsightFact>(dir.path(), "alpha", None, None).unwrap_err();
        assert!(
            matches!(&err, StoreError::Corrupt { path, reason } if path.ends_with("part-0-bad.parquet") && reason.contains("page_unknown_metric")),
            "{err:?}"
        );
        assert_eq!(parts(&target).unwrap(), before, "nothing folded, nothing removed");
        assert!(!target.join(DATA_FILE).exists());
    }

    #[test]
    fn distinct_strings_has_each_value_once() {
        use arrow::array::{AsArray as _, Int64Array, StringArray};
        let batch = RecordBatch::try_from_iter([
            ("s", Arc::new(StringArray::from(vec!["a", "a", "b", "a", "c", "c", "b"])) as arrow::array::ArrayRef),
            ("t", Arc::new(StringArray::from(vec!["x", "x", "x", "x", "x", "y", "x"]))),
            ("n", Arc::new(Int64Array::from(vec![5, 6, 7, 8, 9, 10, 11]))),
        ])
        .unwrap();
        let distinct = distinct_strings(&batch).unwrap();
        let strings = |i: usize| distinct.column(i).as_string::<i32>().iter().flatten().collect::<Vec<_>>();
        assert_eq!(strings(0), ["a", "b", "c"]);
        assert_eq!(strings(1), ["x", "y", "x"]);
        assert_eq!(distinct.column(2).as_primitive::<arrow::datatypes::Int64Type>().values().to_vec(), [5, 5, 5]);
    }

    /// A row of another tenant in a partition stops its compaction, with the file named, and nothing is removed.
    #[test]
    fn an_arrow_compaction_refuses_a_foreign_row() {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = Lcg(7);
        let rows: Vec<PageInsightFact> = (0..20).map(|i| fact(&mut rng, i as f64)).collect();
        upsert(dir.path(), "alpha", &rows).unwrap();
        // Another tenant's rows written into alpha's partitions (what a misplaced copy would do).
        let month = |r: &PageInsightFact| month_of(r.day);
        let target = partition_dir(dir.path(), PageInsightFact::DATASET, "alpha", Some(&month(&rows[0])));
        let foreign: Vec<&PageInsightFact> = rows.iter().filter(|r| month(r) == month(&rows[0])).collect();
        let foreign = PageInsightFact::to_batch("beta", &foreign);
        write_atomic(&target.join("part-9-foreign.parquet"), &foreign, None).unwrap();
        let before = parts(&target).unwrap();
        let err = compact_range::<PageInsightFact>(dir.path(), "alpha", None, None).unwrap_err();
        assert!(
            matches!(&err, StoreError::Corrupt { path, reason } if path.ends_with("part-9-foreign.parquet") && reason.contains("beta")),
            "{err:?}"
        );
        assert_eq!(parts(&target).unwrap(), before, "nothing folded, nothing removed");
    }

    /// The facts partitions under `root` for tenant alpha, each with its part files.
    fn facts_partitions(root: &Path) -> Vec<(PathBuf, Vec<PathBuf>)> {
        partitions(root, PageInsightFact::DATASET, "alpha", None, None)
            .unwrap()
            .into_iter()
            .map(|dir| {
                let parts = parts(&dir).unwrap();
                (dir, parts)
            })
            .collect()
    }

    /// The January rows of `n` generated facts (one partition).
    fn january_facts(seed: u64, n: usize) -> Vec<PageInsightFact> {
        let mut rng = Lcg(seed);
        (0..n).map(|i| fact(&mut rng, i as f64)).filter(|r| r.day.month() == 1).collect()
    }

    #[test]
    fn a_lone_part_in_compacted_form_becomes_the_compacted_file_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = Lcg(21);
        // Repeated keys within the write (few versions, so ties too): the part keeps one row per key.
        let rows: Vec<PageInsightFact> = (0..300).map(|i| fact(&mut rng, i as f64)).collect();
        upsert(dir.path(), "alpha", &rows).unwrap();
        let before = read::<PageInsightFact>(dir.path(), "alpha", None, None).unwrap();
        let partitions = facts_partitions(dir.path());
        assert_eq!(partitions.len(), 2, "two months");
        // The same file (a rewrite of the same rows would have the same bytes, but not the same inode).
        use std::os::unix::fs::MetadataExt as _;
        let inode = |path: &Path| std::fs::metadata(path).unwrap().ino();
        let files: Vec<(Vec<u8>, u64)> = partitions
            .iter()
            .map(|(_, parts)| {
                assert_eq!(parts.len(), 1);
                (std::fs::read(&parts[0]).unwrap(), inode(&parts[0]))
            })
            .collect();
        compact_range::<PageInsightFact>(dir.path(), "alpha", None, None).unwrap();
        for ((dir, _), (bytes, ino)) in partitions.iter().zip(&files) {
            assert!(parts(dir).unwrap().is_empty(), "{dir:?}: the part is gone");
            let data = dir.join(DATA_FILE);
            assert_eq!(
                (&std::fs::read(&data).unwrap(), inode(&data)),
                (bytes, *ino),
                "{dir:?}: renamed, not rewritten"
            );
        }
        assert_eq!(read::<PageInsightFact>(dir.path(), "alpha", None, None).unwrap(), before);
    }

    /// Posts and post snapshots too: a write's lone part per partition (repeated keys within the write, so it keeps
    /// one row per key) is renamed into the compacted file, the same inode, and reads the same rows.
    #[test]
    fn a_lone_part_of_posts_or_snapshots_becomes_the_compacted_file_unchanged() {
        lone_parts_are_renamed(post);
        lone_parts_are_renamed(snapshot);
    }

    fn lone_parts_are_renamed<R: LakeRecord + PartialEq + std::fmt::Debug>(generate: impl Fn(&mut Lcg, f64) -> R) {
        use std::os::unix::fs::MetadataExt as _;
        let dir = tempfile::tempdir().unwrap();
        let mut rng = Lcg(29);
        let rows: Vec<R> = (0..80).map(|i| generate(&mut rng, i as f64)).collect();
        upsert(dir.path(), "alpha", &rows).unwrap();
        let before = read::<R>(dir.path(), "alpha", None, None).unwrap();
        let partitions = partitions(dir.path(), R::DATASET, "alpha", None, None).unwrap();
        assert!(!partitions.is_empty());
        let inodes: Vec<u64> = partitions
            .iter()
            .map(|p| {
                let parts = parts(p).unwrap();
                assert_eq!(parts.len(), 1, "{p:?}: one part");
                std::fs::metadata(&parts[0]).unwrap().ino()
            })
            .collect();
        compact_range::<R>(dir.path(), "alpha", None, None).unwrap();
        for (p, ino) in partitions.iter().zip(inodes) {
            assert!(parts(p).unwrap().is_empty(), "{p:?}: the part is gone");
            assert_eq!(std::fs::metadata(p.join(DATA_FILE)).unwrap().ino(), ino, "{p:?}: renamed, not rewritten");
        }
        assert_eq!(read::<R>(dir.path(), "alpha", None, None).unwrap(), before, "{}", R::DATASET);
    }

    #[test]
    fn a_lone_part_out_of_key_order_or_with_a_repeated_key_is_merged_not_renamed() {
        for repeated in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let rows = january_facts(5, 200);
            let mut model: BTreeMap<_, PageInsightFact> = BTreeMap::new();
            for row in &rows {
                match model.get(&LakeRecord::key(row)) {
                    Some(old) if LakeRecord::version(old) > LakeRecord::version(row) => {}
                    _ => {
                        model.insert(LakeRecord::key(row), row.clone());
                    }
                }
            }
            let mut placed: Vec<PageInsightFact> = model.values().cloned().collect();
            if repeated {
                // In key order, but one identity twice: the later (higher) version must win, once.
                let mut newer = placed[3].clone();
                newer.fetched_at += Duration::hours(1);
                newer.value = -1.0;
                *model.values_mut().nth(3).unwrap() = newer.clone();
                placed.insert(4, newer);
            } else {
                placed.reverse();
            }
            let target = partition_dir(dir.path(), PageInsightFact::DATASET, "alpha", Some("2018-01"));
            let part = target.join("part-1-placed.parquet");
            let placed: Vec<&PageInsightFact> = placed.iter().collect();
            write_atomic(&part, &PageInsightFact::to_batch("alpha", &placed), None).unwrap();
            let bytes = std::fs::read(&part).unwrap();
            compact_range::<PageInsightFact>(dir.path(), "alpha", None, None).unwrap();
            assert!(parts(&target).unwrap().is_empty());
            assert_ne!(
                std::fs::read(target.join(DATA_FILE)).unwrap(),
                bytes,
                "repeated {repeated}: merged, not renamed"
            );
            let compacted = read_records::<PageInsightFact>(&target.join(DATA_FILE), "alpha").unwrap();
            assert!(
                compacted.windows(2).all(|w| LakeRecord::key(&w[0]) < LakeRecord::key(&w[1])),
                "repeated {repeated}: key order, one per key"
            );
            assert!(compacted.iter().eq(model.values()), "repeated {repeated}");
        }
    }

    #[test]
    fn a_lone_part_of_another_tenant_is_refused_not_renamed() {
        let dir = tempfile::tempdir().unwrap();
        let rows = january_facts(8, 50);
        let target = partition_dir(dir.path(), PageInsightFact::DATASET, "alpha", Some("2018-01"));
        let mut latest: BTreeMap<_, &PageInsightFact> = BTreeMap::new();
        for row in &rows {
            latest.insert(LakeRecord::key(row), row);
        }
        let foreign = PageInsightFact::to_batch("beta", &latest.into_values().collect::<Vec<_>>());
        write_atomic(&target.join("part-1-foreign.parquet"), &foreign, None).unwrap();
        let err = compact_range::<PageInsightFact>(dir.path(), "alpha", None, None).unwrap_err();
        assert!(
            matches!(&err, StoreError::Corrupt { path, reason } if path.ends_with("part-1-foreign.parquet") && reason.contains("beta")),
            "{err:?}"
        );
        assert!(target.join("part-1-foreign.parquet").exists() && !target.join(DATA_FILE).exists());
    }

    #[test]
    fn compactions_run_together_finish_every_good_partition_and_report_the_first_failure_in_partition_order() {
        // On one core (the calling thread alone), two, and more threads than partitions; a dataset added twice.
        for workers in [1, 2, 8] {
            compactions_finish_every_good_partition(workers);
        }
    }

    fn compactions_finish_every_good_partition(workers: usize) {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = Lcg(13);
        // Six months of facts, each partition with three parts.
        for write in 0..3 {
            let rows: Vec<PageInsightFact> = (0..400)
                .map(|i| {
                    let mut f = fact(&mut rng, (write * 1000 + i) as f64);
                    f.day = NaiveDate::from_ymd_opt(2018, 1 + (i % 6) as u32, 1 + rng.below(28) as u32).unwrap();
                    f
                })
                .collect();
            upsert(dir.path(), "alpha", &rows).unwrap();
        }
        let expected = read::<PageInsightFact>(dir.path(), "alpha", None, None).unwrap();
        let months = facts_partitions(dir.path());
        assert_eq!(months.len(), 6);
        // Bad parts in the fifth and the second month: the second month's is the error reported.
        for (month, name) in [(4, "part-9-bad-later.parquet"), (1, "part-9-bad-first.parquet")] {
            let good = PageInsightFact::to_batch("alpha", &[&expected[0]]);
            let foreign = PageInsightFact::to_batch("beta", &[&expected[0]]);
            assert_eq!(good.schema(), foreign.schema());
            write_atomic(&months[month].0.join(name), &foreign, None).unwrap();
        }
        let err = Compactions::new(dir.path(), "alpha")
            .add::<PageInsightFact>(None, None)
            .unwrap()
            .add::<PageInsightFact>(None, None)
            .unwrap()
            .run_on(workers)
            .unwrap_err();
        assert!(
            matches!(&err, StoreError::Corrupt { path, .. } if path.ends_with("part-9-bad-first.parquet")),
            "{workers} workers: {err:?}"
        );
        for (i, (month, _)) in months.iter().enumerate() {
            let left = parts(month).unwrap();
            if i == 1 || i == 4 {
                assert_eq!(left.len(), 4, "{workers} workers, month {i}: nothing folded, nothing removed");
            } else {
                assert!(left.is_empty(), "{workers} workers, month {i}: compacted although another partition failed");
                assert!(month.join(DATA_FILE).exists());
            }
        }
        // Everything written is still read (the failed partitions by merging their good parts; the bad part is
        // refused, as a read refuses it).
        for name in ["part-9-bad-later.parquet", "part-9-bad-first.parquet"] {
            let month = if name.contains("first") { &months[1].0 } else { &months[4].0 };
            std::fs::remove_file(month.join(name)).unwrap();
        }
        assert_eq!(read::<PageInsightFact>(dir.path(), "alpha", None, None).unwrap(), expected);
        compact_range::<PageInsightFact>(dir.path(), "alpha", None, None).unwrap();
        assert_eq!(read::<PageInsightFact>(dir.path(), "alpha", None, None).unwrap(), expected);
    }

    /// Partitions are compacted largest first (bytes on disk), whatever order they were added in, so the last to
    /// finish is a small one; on one worker the order is exactly that.
    #[test]
    fn partitions_are_compacted_largest_first() {
        static DONE: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());
        fn record(dir: &Path, _tenant: &str) -> Result<()> {
            DONE.lock().unwrap().push(dir.to_owned());
            Ok(())
        }
        let root = tempfile::tempdir().unwrap();
        // Added in month order; sizes 300, 5,000 (two files), 0 (empty) and 1,200 bytes.
        let sizes: [&[usize]; 4] = [&[300], &[4_000, 1_000], &[], &[1_200]];
        let mut dirs = Vec::new();
        for (i, files) in sizes.iter().enumerate() {
            let dir = root.path().join(format!("month=2026-0{}", i + 1));
            std::fs::create_dir_all(&dir).unwrap();
            for (j, len) in files.iter().enumerate() {
                std::fs::write(dir.join(format!("part-{j}.parquet")), vec![0u8; *len]).unwrap();
            }
            dirs.push(dir);
        }
        let jobs = dirs.iter().map(|d| (d.clone(), record as CompactFn)).collect();
        Compactions { root: root.path(), tenant: "alpha", jobs }.run_on(1).unwrap();
        let done = std::mem::take(&mut *DONE.lock().unwrap());
        assert_eq!(done, vec![dirs[1].clone(), dirs[3].clone(), dirs[0].clone(), dirs[2].clone()]);
    }

    /// A read without the lock, with a compaction by rename landing at each point of it: after the read listed the
    /// partition's lone part and before it opens it (the part is gone), and after it read the part and before it
    /// checks the compacted file's identity (which changed). Either way the read starts again and returns every row
    /// once.
    #[test]
    fn a_read_without_the_lock_is_not_fooled_by_a_compaction_that_renames_a_part() {
        for compact_after_reading in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let rows = january_facts(17, 200);
            upsert(dir.path(), "alpha", &rows).unwrap();
            let expected = read::<PageInsightFact>(dir.path(), "alpha", None, None).unwrap();
            let target = partition_dir(dir.path(), PageInsightFact::DATASET, "alpha", Some("2018-01"));
            let lone = parts(&target).unwrap();
            assert_eq!(lone.len(), 1);
            use std::os::unix::fs::MetadataExt as _;
            let inode = std::fs::metadata(&lone[0]).unwrap().ino();
            let mut attempts = Vec::new();
            let read = without_the_lock(dir.path(), &target, |files| {
                attempts.push(files.to_vec());
                if attempts.len() == 1 && !compact_after_reading {
                    compact::<PageInsightFact>(&target, "alpha").unwrap();
                }
                let read = read_partition::<PageInsightFact>("alpha", files);
                if attempts.len() == 1 && compact_after_reading {
                    compact::<PageInsightFact>(&target, "alpha").unwrap();
                }
                read
            })
            .unwrap();
            assert!(parts(&target).unwrap().is_empty());
            assert_eq!(std::fs::metadata(target.join(DATA_FILE)).unwrap().ino(), inode, "renamed, not rewritten");
            assert_eq!(attempts, [lone, vec![target.join(DATA_FILE)]], "after reading: {compact_after_reading}");
            assert_eq!(read, expected, "after reading: {compact_after_reading}");
        }
    }

    /// Every key of one January partition for the given pages (31 days, 2 metrics, 2 periods, 4 breakdowns: 496 rows
    /// a page; four pages are more than a read's batch of 1,024 rows), in key order.
    fn january_in_key_order(pages: &[String]) -> Vec<PageInsightFact> {
        let mut rows = Vec::new();
        for page in pages {
            for metric in [CanonicalMetric::PageReach, CanonicalMetric::PageEngagedByAgeGender] {
                for period in [Period::Day, Period::Week] {
                    for breakdown in ["", "F.35-44", "M.65+", "U.18-24"] {
                        for day in 1..=31 {
                            rows.push(PageInsightFact {
                                practice: "M83001".parse().unwrap(),
                                page: page.parse().unwrap(),
                                metric,
                                graph_metric: "page_impressions_unique",
                                period,
                                day: NaiveDate::from_ymd_opt(2018, 1, day).unwrap(),
                                breakdown: breakdown.into(),
                                value: rows.len() as f64,
                                api_version: ApiVersion::new(2, 12),
                                fetched_at: Utc.with_ymd_and_hms(2018, 6, 1, 0, 0, 0).unwrap(),
                            });
                        }
                    }
                }
            }
        }
        rows.sort_by(|a, b| LakeRecord::key(a).cmp(&LakeRecord::key(b)));
        rows
    }

    /// Places `rows` as the lone part of alpha's January facts partition (`props` as a compaction writes, or others),
    /// compacts, and says whether the part was renamed (the compacted file is the part's inode), after checking that
    /// the compacted file holds `expected`, in key order.
    fn compacts_by_rename(
        rows: &[PageInsightFact],
        props: Option<WriterProperties>,
        expected: &[PageInsightFact],
    ) -> bool {
        use std::os::unix::fs::MetadataExt as _;
        let dir = tempfile::tempdir().unwrap();
        let target = partition_dir(dir.path(), PageInsightFact::DATASET, "alpha", Some("2018-01"));
        let part = target.join("part-1-placed.parquet");
        let batch = PageInsightFact::to_batch("alpha", &rows.iter().collect::<Vec<_>>());
        match props {
            None => write_atomic(&part, &batch, PageInsightFact::MERGE_COLUMNS.map(|(key, _)| key)).unwrap(),
            Some(props) => write_parquet(&part, &batch, true, props).unwrap(),
        }
        let inode = std::fs::metadata(&part).unwrap().ino();
        compact_range::<PageInsightFact>(dir.path(), "alpha", None, None).unwrap();
        assert!(parts(&target).unwrap().is_empty());
        let data = target.join(DATA_FILE);
        let compacted = read_records::<PageInsightFact>(&data, "alpha").unwrap();
        assert!(compacted.iter().eq(expected), "the compacted rows");
        let builder = ParquetRecordBatchReaderBuilder::try_new(File::open(&data).unwrap()).unwrap();
        assert!(builder.metadata().row_groups().iter().all(|g| g.num_rows() as usize <= super::super::ROW_GROUP_ROWS));
        std::fs::metadata(&data).unwrap().ino() == inode
    }

    #[test]
    fn a_lone_part_is_checked_for_key_order_across_the_batches_a_read_gives() {
        let pages: Vec<String> = ["1001", "1002", "20003", "3"].map(String::from).to_vec();
        let sorted = january_in_key_order(&pages);
        assert!(sorted.len() > 1024 + 1);
        assert!(compacts_by_rename(&sorted, None, &sorted), "in key order over two batches: renamed");
        // Out of order only across the first batch boundary: each batch is in order on its own.
        let mut swapped = sorted.clone();
        swapped.swap(1023, 1024);
        assert!(!compacts_by_rename(&swapped, None, &sorted), "out of order across batches: merged");
    }

    #[test]
    fn a_lone_part_with_row_groups_larger_than_a_compaction_writes_is_rewritten() {
        // 9 pages: 4,464 rows; row groups of at most 1,000 rows are kept, one row group of all of them is not.
        let pages: Vec<String> = (1..=9).map(|p| format!("{}", 1000 + p)).collect();
        let sorted = january_in_key_order(&pages);
        let with_groups = |rows: usize| {
            WriterProperties::builder()
                .set_compression(Compression::SNAPPY)
                .set_max_row_group_row_count(Some(rows))
                .build()
        };
        assert!(compacts_by_rename(&sorted, Some(with_groups(1_000)), &sorted));
        // The limit a compaction writes with, exceeded: a part from another writer.
        let rows = super::super::ROW_GROUP_ROWS;
        let many: Vec<String> = (1..=(rows / 496 + 2)).map(|p| format!("{}", 1000 + p)).collect();
        let big = january_in_key_order(&many);
        assert!(big.len() > rows);
        assert!(!compacts_by_rename(&big, Some(with_groups(big.len())), &big), "one row group of {}", big.len());
    }

    #[test]
    fn an_empty_lone_part_of_other_columns_is_merged_into_an_empty_file_of_the_declared_columns() {
        use std::os::unix::fs::MetadataExt as _;
        let dir = tempfile::tempdir().unwrap();
        let target = partition_dir(dir.path(), PageInsightFact::DATASET, "alpha", Some("2018-01"));
        let schema = Arc::new(arrow::datatypes::Schema::new(vec![arrow::datatypes::Field::new(
            "x",
            arrow::datatypes::DataType::Int64,
            false,
        )]));
        let empty = RecordBatch::new_empty(schema);
        let part = target.join("part-1-empty.parquet");
        write_atomic(&part, &empty, None).unwrap();
        let inode = std::fs::metadata(&part).unwrap().ino();
        compact_range::<PageInsightFact>(dir.path(), "alpha", None, None).unwrap();
        let data = target.join(DATA_FILE);
        assert_ne!(std::fs::metadata(&data).unwrap().ino(), inode, "not renamed");
        let builder = ParquetRecordBatchReaderBuilder::try_new(File::open(&data).unwrap()).unwrap();
        assert_eq!(builder.schema().fields(), PageInsightFact::to_batch("alpha", &[]).schema().fields());
        assert!(read::<PageInsightFact>(dir.path(), "alpha", None, None).unwrap().is_empty());
    }
}
