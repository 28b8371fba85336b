//! The embedded lake: Parquet datasets under one directory, the default store.
//!
//! Layout (Hive-style, so DuckDB, polars and pyarrow read it as partitioned datasets):
//!
//! ```text
//! <root>/_pulse_lake.json                                   format version
//! <root>/page_insights/tenant=<id>/month=<YYYY-MM>/data.parquet
//! <root>/posts/tenant=<id>/month=<YYYY-MM>/data.parquet     (month of created_time)
//! <root>/post_insights/tenant=<id>/month=<YYYY-MM>/data.parquet  (month of snapshot_day)
//! <root>/checkpoints/tenant=<id>/data.parquet
//! <root>/ingest_runs/tenant=<id>/data.parquet
//! <root>/reports/<report>/tenant=<id>/data.parquet            (reports stored whole)
//! <root>/reports/<report>/tenant=<id>/manifest.json            (reports stored by month: weekly reach, age bands)
//! <root>/reports/<report>/tenant=<id>/part-<YYYY-MM>-<id>.parquet
//! ```
//! (a named variant of a report is beside them, under `variant=<name>/`).
//!
//! A report stored by month is the files its `manifest.json` names, a month each, read in month order. A replacement
//! writes new files for the months it replaces, then the manifest (atomically: readers see the old slice or the new
//! one), then removes the files no longer named; an incremental jobs run replaces only the months it recomputed.
//!
//! A write appends: each partition it touches gets a new part file (`part-<sequence>-<id>.parquet`, written to a
//! temporary file and renamed, so a crash leaves no half file), and nothing already stored is read or rewritten, so a
//! write costs what it writes. Reads merge a partition's `data.parquet` and its parts by identity (the highest
//! version wins). A partition is compacted into a new `data.parquet` (atomically, then its parts removed) when it
//! has 16 parts (64 for facts, posts and post insights, which the run's end compacts anyway), when the ingester
//! finishes a run (`Store::settle`), and before its files are scanned in place (`Store::fact_files`): between runs
//! every partition is one file with one row per identity, which is what DuckDB, polars and pyarrow see.

mod codec;
mod dataset;
mod store;

pub use store::{LAKE_FORMAT, LakeStore};

/// Rows per Parquet row group in the lake's files. Rows are written in key order (for facts: totals first, then by
/// metric and period), so with row groups this small a scan that wants the totals, or the breakdowns of a few
/// metrics, skips most row groups by their min/max statistics without decoding them
/// (`benches/results/pipelines-vs-duckdb.md`).
pub const ROW_GROUP_ROWS: usize = 16_384;
