//! The ClickHouse backend, through the `clickhouse` crate over HTTP.
//!
//! Facts are inserted as RowBinary (validation off, which ClickHouse 18.16 needs) into ReplacingMergeTree tables and
//! read as each identity's latest version (`GROUP BY` the identity with `argMax(.., version)`, which on 18.16 is
//! much faster than FINAL; the pipelines read facts as series grouped in the server), so an identity written twice
//! reads back once. The SQL lives in `sql/` and is checked on old and current ClickHouse by CI.

pub mod cluster;
mod order;
pub mod placement;
mod rowbinary;
mod rows;
mod store;

pub use store::{ClickHouseSettings, ClickHouseStore};
