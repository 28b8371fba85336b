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
//! <root>/reports/<report>/tenant=<id>/data.parquet
//! ```
//!
//! Each partition file holds one row per identity, already de-duplicated. A write reads the partition, merges the
//! new rows in (latest version wins), writes a temporary file beside it and renames it over the old one, so readers
//! see the old file or the new one and a crash leaves the old one intact.

mod codec;
mod dataset;
mod store;

pub use store::{LAKE_FORMAT, LakeStore};
