//! The store's one error type. Messages say what happened, to what, and what to do next.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "cannot reach ClickHouse at {url}: {reason}; check that the server is running and that the url, user and \
         password in [store.clickhouse] are right (try `curl {url}/ping`)"
    )]
    Unreachable { url: String, reason: String },
    #[error(
        "no replica of {shard} of ClickHouse cluster `{cluster}` answered: {reason}; that shard \
         holds this tenant's rows, so nothing was written past the last acknowledged batch. Start a replica of it \
         (`SELECT * FROM system.clusters WHERE cluster = '{cluster}'` lists them) and run again"
    )]
    ShardUnreachable { cluster: String, shard: String, reason: String },
    #[error(
        "cluster `{cluster}` named in [store.clickhouse] is not defined on ClickHouse at {url} (it defines: {known}); \
         add it to the server's <remote_servers>, or set cluster to one of those"
    )]
    UnknownCluster { url: String, cluster: String, known: String },
    #[error(
        "cannot use ZooKeeper at {servers} for leases: {reason}; nothing was sent under a lease it could not \
         confirm. Check that ZooKeeper is running and reachable at the address in [store.clickhouse] zookeeper \
         (host:port, comma-separated for an ensemble). Do not remove the setting from one process only: every process \
         of a deployment must take its leases in the same place, or two could send at once"
    )]
    Coordination { servers: String, reason: String },
    #[error("ClickHouse cluster `{cluster}` cannot be used as configured: {problem}")]
    ClusterLayout { cluster: String, problem: String },
    #[error(
        "refused to use {replica} of ClickHouse cluster `{cluster}` at {url}: {reason}, so nothing was sent to it (a \
         tenant's rows must only ever land on its own shard). Fix that replica's entry in \
         [store.clickhouse.replica_urls]; `pulse doctor` shows what each URL answers as"
    )]
    WrongNode { cluster: String, replica: String, url: String, reason: String },
    #[error("ClickHouse at {url} refused `{statement}`: {reason}")]
    Query { url: String, statement: String, reason: String },
    #[error(
        "database `{database}` was migrated by a newer Practice Pulse (schema version {found}; this build knows up to \
         {known}); upgrade pulse, or point [store.clickhouse] database at another database"
    )]
    SchemaTooNew { database: String, found: u32, known: u32 },
    #[error(
        "migration {version} ({name}) applied to `{database}` differs from this build's copy (checksum {applied} vs \
         {expected}); migrations must never be edited after release: add a new one instead"
    )]
    MigrationChanged { database: String, version: u32, name: String, applied: String, expected: String },
    #[error("schema of `{database}` is not migrated (version {found}, need {known}); run `pulse migrate`")]
    NotMigrated { database: String, found: u32, known: u32 },
    #[error(
        "lake file {} is unreadable ({reason}); nothing was changed. Move it aside and re-run ingest for the period it \
         held (its path names the tenant and month)", path.display()
    )]
    Corrupt { path: PathBuf, reason: String },
    #[error("lake at {} was written by a newer Practice Pulse (format {found}, this build reads {known}); upgrade pulse", path.display())]
    LakeTooNew { path: PathBuf, found: u32, known: u32 },
    #[error("lake I/O on {}: {source}; check the directory exists, is writable and has free space", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("report `{table}`: {reason}")]
    Report { table: String, reason: String },
    #[error("stored {what} is invalid: {reason}")]
    Invalid { what: String, reason: String },
}

impl StoreError {
    /// Whether retrying the same call later may succeed (the ingester backs off on these).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            StoreError::Unreachable { .. }
                | StoreError::ShardUnreachable { .. }
                | StoreError::Coordination { .. }
                | StoreError::Io { .. }
        )
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        StoreError::Io { path: path.into(), source }
    }
}
