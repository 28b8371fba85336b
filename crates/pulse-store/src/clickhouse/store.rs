//! [`ClickHouseStore`]: the [`Store`] interface over ClickHouse.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use arrow::record_batch::RecordBatch;
use chrono::{NaiveDate, Utc};
use clickhouse::Client;
use pulse_config::{TenantScope, WriteScope};
use pulse_domain::{
    CanonicalMetric, Checkpoint, ExportAuditRecord, IngestRunRecord, Lease, PageInsightFact, Period, Post,
    PostInsightSnapshot, StateEvent,
};
use serde::ser::SerializeTuple;
use tokio::sync::OnceCell;

use super::cluster::{Answered, CLUSTER_ROWS, ClusterRow, LOCAL_SHARDS, Layout, NODE_NAME, Replica, Shard};
use super::order::{self, SortKey};
use super::rows::*;
use crate::lease;
use crate::migrations::{self, Topology, queries};
use crate::{
    FactFilter, LeaseOutcome, MigrationReport, PostFilter, ReportTable, ReportVariant, Result, Store, StoreError,
    WriteAck,
};

/// How to reach ClickHouse. The password is a resolved secret: it is sent in a header, never shown.
#[derive(Clone)]
pub struct ClickHouseSettings {
    pub url: String,
    pub database: String,
    pub user: String,
    pub password: Option<String>,
    /// `Some(name)` renders the DDL for a cluster, and reads and writes each tenant on its shard.
    pub cluster: Option<String>,
    /// On a cluster: replicas' HTTP URLs by `host:tcp_port`, where they are not `url`'s scheme and port on the
    /// replica's host.
    pub replica_urls: BTreeMap<String, String>,
    /// A coordination service (ZooKeeper or ClickHouse Keeper, `host:port[,host:port…]`) for leases; without one,
    /// leases are claim rows in ClickHouse settled by waiting.
    pub zookeeper: Option<String>,
}

impl std::fmt::Debug for ClickHouseSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClickHouseSettings")
            .field("url", &self.url)
            .field("database", &self.database)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("cluster", &self.cluster)
            .field("replica_urls", &self.replica_urls)
            .field("zookeeper", &self.zookeeper)
            .finish()
    }
}

#[derive(Clone)]
pub struct ClickHouseStore {
    /// Bound to the database.
    client: Client,
    /// Not bound to a database, for CREATE DATABASE.
    server: Client,
    settings: Arc<ClickHouseSettings>,
    schema_checked: Arc<OnceCell<()>>,
    /// On a cluster: its shards and a client for each replica, read once from `system.clusters`.
    routes: Arc<OnceCell<Routes>>,
    /// Leases in a coordination service, when configured.
    keeper: Option<crate::keeper::Keeper>,
    /// Report slice versions superseded and not yet deleted (table, tenant, version), shared by the store's clones:
    /// deleted together by [`Store::sweep_reports`], one mutation per table, not one per replacement.
    superseded: Arc<Mutex<Vec<Superseded>>>,
}

/// A superseded report slice version: its table, tenant and version.
type Superseded = (&'static str, String, u64);

/// Superseded report slices pending deletion beyond which a replacement deletes them itself (a writer that never
/// sweeps still leaves a bounded number behind).
const SWEEP_AT: usize = 256;

/// How the store reaches a cluster's shards.
pub(super) struct Routes {
    pub(super) layout: Layout,
    /// A client (bound to the database) per replica, by shard number, in the definition's order.
    pub(super) clients: HashMap<u32, Vec<Client>>,
    /// The replica in use on each shard (absent: not chosen yet in this process).
    in_use: Mutex<HashMap<u32, usize>>,
    /// Each tenant's sharding key, `cityHash64(tenant_id)` as the server computes it.
    tenant_keys: Mutex<HashMap<String, u64>>,
}

/// How long connecting waits for a replica to say what it is before leaving the check to its first use.
const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// A failure on the way to a shard: the client's own (a network failure moves to the next replica) or the store's.
pub(super) enum Either {
    Client(clickhouse::error::Error),
    Store(StoreError),
}

/// A client for the server at `url` with the configured credentials (the password goes in a header).
fn connect(settings: &ClickHouseSettings, url: &str) -> Client {
    let client = Client::default().with_url(url).with_user(&settings.user).with_validation(false);
    match &settings.password {
        Some(password) => client.with_password(password),
        None => client,
    }
}

/// Days outside every range we store, for unbounded filters (ClickHouse 18.16's Date ends in 2105).
const MIN_DAY: &str = "1970-01-01";
const MAX_DAY: &str = "2105-12-31";

/// A list bound as a SQL tuple, `('a', 'b')`, for `x IN ?` (an array literal is not accepted by 18.16 there).
struct InList<'a>(&'a [&'a str]);

impl serde::Serialize for InList<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // An empty tuple is not valid SQL; callers guard it with a flag, so any single value will do.
        let values: &[&str] = if self.0.is_empty() { &[""] } else { self.0 };
        let mut t = s.serialize_tuple(values.len())?;
        for v in values {
            t.serialize_element(v)?;
        }
        t.end()
    }
}

fn day_param(day: Option<NaiveDate>, default: &str) -> String {
    day.map_or_else(|| default.to_owned(), |d| d.format("%Y-%m-%d").to_string())
}

impl ClickHouseStore {
    pub fn new(settings: ClickHouseSettings) -> Self {
        let server = connect(&settings, &settings.url);
        let client = server.clone().with_database(&settings.database);
        let keeper = settings
            .zookeeper
            .as_deref()
            .filter(|z| !z.trim().is_empty())
            .map(|z| crate::keeper::Keeper::new(z, &settings.database));
        Self {
            client,
            server,
            keeper,
            settings: Arc::new(settings),
            schema_checked: Arc::new(OnceCell::new()),
            routes: Arc::new(OnceCell::new()),
            superseded: Arc::new(Mutex::new(Vec::new())),
        }
    }

    pub fn database(&self) -> &str {
        &self.settings.database
    }

    /// Asks the server to log every query this store sends (to one server, not a cluster's replicas) in
    /// `system.query_log` under `query_id`, with its profile events: for finding what an insert cost the server.
    /// The queries must then go one at a time (the server refuses a second running query with the same id).
    pub fn with_query_log(mut self, query_id: &str) -> Self {
        for client in [&mut self.client, &mut self.server] {
            *client = client.clone().with_setting("log_queries", "1").with_setting("query_id", query_id);
        }
        self
    }

    /// Whether the store is configured for a cluster.
    pub fn is_cluster(&self) -> bool {
        self.cluster_name().is_some()
    }

    /// The schema version the database is at, and the one this build knows.
    pub async fn schema_version(&self) -> Result<(u32, u32)> {
        let found = self.applied().await?.iter().map(|m| m.version).max().unwrap_or(0);
        Ok((found, migrations::latest()))
    }

    pub(super) fn cluster_name(&self) -> Option<&str> {
        self.settings.cluster.as_deref().filter(|c| !c.is_empty())
    }

    fn topology(&self) -> Topology {
        match self.cluster_name() {
            Some(name) => Topology::Cluster { name: name.to_owned(), database: self.settings.database.clone() },
            None => Topology::Single,
        }
    }

    /// The cluster's layout as the server the store talks to defines it, each replica with the URL the store would
    /// use for it (not yet checked: see [`Self::routes`]).
    pub(super) async fn read_layout(&self, name: &str) -> Result<Layout> {
        let rows = self
            .server
            .query(CLUSTER_ROWS)
            .bind(name)
            .fetch_all::<ClusterRow>()
            .await
            .map_err(|e| self.error(CLUSTER_ROWS, e))?;
        match Layout::from_rows(name, rows, |row| self.replica_url(row)) {
            Some(layout) => Ok(layout),
            None => {
                let sql = "SELECT DISTINCT cluster FROM system.clusters ORDER BY cluster";
                let known: Vec<String> = self.server.query(sql).fetch_all().await.map_err(|e| self.error(sql, e))?;
                Err(StoreError::UnknownCluster {
                    url: self.settings.url.clone(),
                    cluster: name.to_owned(),
                    known: if known.is_empty() { "none".into() } else { known.join(", ") },
                })
            }
        }
    }

    /// A client (bound to the database) for a replica.
    pub(super) fn replica_client(&self, replica: &Replica) -> Client {
        connect(&self.settings, &replica.url).with_database(&self.settings.database)
    }

    /// What the node behind `client` says it is (network failures as they come, for the caller to judge).
    pub(super) async fn answered(&self, client: &Client, cluster: &str) -> clickhouse::error::Result<Answered> {
        let local: Vec<(u32, u32)> = client.query(LOCAL_SHARDS).bind(cluster).fetch_all().await?;
        let (host, macros): (String, String) = client.query(NODE_NAME).fetch_one().await?;
        Ok(Answered { local, host, macros })
    }

    /// The cluster's shards and replica clients, read from the server once and checked (`None` on a single server):
    /// refused when two replicas resolve to one URL, when a replica's URL answers as another shard or replica, or
    /// when two replicas' URLs reach the same node. A replica that does not answer now is checked each time it is
    /// used, as every replica is (see [`Self::on_shard`]).
    pub(super) async fn routes(&self) -> Result<Option<&Routes>> {
        let Some(name) = self.cluster_name() else { return Ok(None) };
        self.routes
            .get_or_try_init(|| async {
                let layout = self.read_layout(name).await?;
                let layout_error = |problem: String| StoreError::ClusterLayout { cluster: name.to_owned(), problem };
                if let Some(problem) = super::cluster::shared_urls_problem(&layout) {
                    return Err(layout_error(problem));
                }
                let mut nodes: BTreeMap<(String, String), &Replica> = BTreeMap::new();
                for replica in layout.replicas() {
                    let client = self.replica_client(replica);
                    let probe = tokio::time::timeout(PROBE_TIMEOUT, self.answered(&client, name)).await;
                    let answered = match probe {
                        Ok(Ok(answered)) => answered,
                        Ok(Err(e @ (clickhouse::error::Error::Network(_) | clickhouse::error::Error::TimedOut))) => {
                            tracing::warn!(
                                replica = %replica.describe(), url = %replica.url, error = %e,
                                "replica not answering; it is checked before it is used"
                            );
                            continue;
                        }
                        Err(_) => {
                            tracing::warn!(
                                replica = %replica.describe(), url = %replica.url,
                                "replica did not answer in time; it is checked before it is used"
                            );
                            continue;
                        }
                        Ok(Err(e)) => return Err(self.error_at(&replica.url, LOCAL_SHARDS, e)),
                    };
                    if let Some(reason) = answered.mismatch(replica) {
                        return Err(self.wrong_node(name, replica, reason));
                    }
                    if !answered.macros.is_empty() {
                        let key = (answered.host.clone(), answered.macros.clone());
                        if let Some(other) = nodes.insert(key, replica) {
                            return Err(layout_error(format!(
                                "{} at {} and {} at {} reach the same node ({}); give each replica the URL of its own \
                                 node in [store.clickhouse.replica_urls]",
                                other.describe(),
                                other.url,
                                replica.describe(),
                                replica.url,
                                answered.describe()
                            )));
                        }
                    }
                }
                let clients = layout
                    .shards
                    .iter()
                    .map(|shard| (shard.num, shard.replicas.iter().map(|r| self.replica_client(r)).collect()))
                    .collect();
                Ok(Routes { layout, clients, in_use: Mutex::default(), tenant_keys: Mutex::default() })
            })
            .await
            .map(Some)
    }

    pub(super) fn wrong_node(&self, cluster: &str, replica: &Replica, reason: String) -> StoreError {
        StoreError::WrongNode {
            cluster: cluster.to_owned(),
            replica: replica.describe(),
            url: replica.url.clone(),
            reason,
        }
    }

    /// Checks that the node answering at `client` is on `replica`'s shard before a statement goes there. Network
    /// failures come back as they are (the caller moves to the next replica); a node of another shard is refused.
    pub(super) async fn verify_node(
        &self,
        routes: &Routes,
        replica: &Replica,
        client: &Client,
    ) -> std::result::Result<(), Either> {
        let local: Vec<(u32, u32)> =
            client.query(LOCAL_SHARDS).bind(routes.layout.name.as_str()).fetch_all().await.map_err(Either::Client)?;
        let answered = Answered { local, host: String::new(), macros: String::new() };
        match answered.mismatch(replica) {
            None => Ok(()),
            Some(reason) => Err(Either::Store(self.wrong_node(&routes.layout.name, replica, reason))),
        }
    }

    /// A replica's HTTP URL: configured by its `host:port`, or `url`'s scheme and port on the replica's host.
    fn replica_url(&self, row: &ClusterRow) -> String {
        let address = format!("{}:{}", row.host_name, row.port);
        if let Some(url) = self.settings.replica_urls.get(&address) {
            return url.clone();
        }
        let url = self.settings.url.trim_end_matches('/');
        let (scheme, rest) = url.split_once("://").unwrap_or(("http", url));
        let port = rest.rsplit_once(':').map(|(_, p)| p).filter(|p| p.chars().all(|c| c.is_ascii_digit()));
        match port {
            Some(port) => format!("{scheme}://{}:{port}", row.host_name),
            None => format!("{scheme}://{}", row.host_name),
        }
    }

    /// The shard that holds `tenant`'s rows (`None` on a single server).
    pub async fn shard_of(&self, tenant: &str) -> Result<Option<Shard>> {
        let Some(routes) = self.routes().await? else { return Ok(None) };
        Ok(Some(self.shard_in(routes, tenant).await?.clone()))
    }

    pub(super) async fn shard_in<'a>(&self, routes: &'a Routes, tenant: &str) -> Result<&'a Shard> {
        let cached = routes.tenant_keys.lock().unwrap_or_else(|p| p.into_inner()).get(tenant).copied();
        let key = match cached {
            Some(key) => key,
            None => {
                let sql = "SELECT cityHash64(?)";
                let key: u64 = self.server.query(sql).bind(tenant).fetch_one().await.map_err(|e| self.error(sql, e))?;
                routes.tenant_keys.lock().unwrap_or_else(|p| p.into_inner()).insert(tenant.to_owned(), key);
                key
            }
        };
        Ok(routes.layout.shard_for(key))
    }

    /// The replica of `shard` this process uses: chosen on first use as the first, in the definition's order, that
    /// answers and has no replication backlog in this database (a replica just back from an outage is still
    /// fetching what the others took meanwhile); failing that, the first that answers.
    pub(super) async fn replica_in_use(&self, routes: &Routes, shard: &Shard) -> usize {
        if let Some(&i) = routes.in_use.lock().unwrap_or_else(|p| p.into_inner()).get(&shard.num) {
            return i;
        }
        let sql = "SELECT toUInt64(count()) FROM system.replicas WHERE database = ? AND queue_size > 0";
        let mut answering = None;
        for (i, client) in routes.clients[&shard.num].iter().enumerate() {
            match client.query(sql).bind(self.settings.database.as_str()).fetch_one::<u64>().await {
                Ok(0) => {
                    answering = Some(i);
                    break;
                }
                Ok(_) => answering = answering.or(Some(i)),
                Err(_) => {}
            }
        }
        let chosen = answering.unwrap_or(0);
        routes.in_use.lock().unwrap_or_else(|p| p.into_inner()).entry(shard.num).or_insert(chosen);
        chosen
    }

    /// Runs `op` with a client for `tenant`'s rows: on a single server, the server; on a cluster, the replica in use
    /// on the tenant's shard, moving to the shard's next replica (and staying there) when one does not answer. `op`
    /// addresses tables as `local(name)` gives them.
    async fn on_shard<T, F, Fut>(&self, tenant: &str, statement: &str, op: F) -> Result<T>
    where
        F: Fn(Client) -> Fut,
        Fut: std::future::Future<Output = clickhouse::error::Result<T>>,
    {
        let Some(routes) = self.routes().await? else {
            return op(self.client.clone()).await.map_err(|e| self.error(statement, e));
        };
        let shard = self.shard_in(routes, tenant).await?;
        self.on_given_shard(routes, shard, statement, op).await
    }

    /// Runs `op` once on the replica in use on `shard` (checked first, as every statement is), without moving to
    /// another replica on failure: for a statement that must not be sent twice.
    pub(super) async fn on_replica_in_use<T, F, Fut>(
        &self,
        routes: &Routes,
        shard: &Shard,
        statement: &str,
        op: F,
    ) -> Result<T>
    where
        F: FnOnce(Client) -> Fut,
        Fut: std::future::Future<Output = clickhouse::error::Result<T>>,
    {
        let i = self.replica_in_use(routes, shard).await;
        let (replica, client) = (&shard.replicas[i], &routes.clients[&shard.num][i]);
        match self.verify_node(routes, replica, client).await {
            Ok(()) => op(client.clone()).await.map_err(|e| self.error_at(&replica.url, statement, e)),
            Err(Either::Client(e)) => Err(self.error_at(&replica.url, statement, e)),
            Err(Either::Store(e)) => Err(e),
        }
    }

    /// As [`Self::on_shard`], on a shard named by the caller.
    pub(super) async fn on_given_shard<T, F, Fut>(
        &self,
        routes: &Routes,
        shard: &Shard,
        statement: &str,
        op: F,
    ) -> Result<T>
    where
        F: Fn(Client) -> Fut,
        Fut: std::future::Future<Output = clickhouse::error::Result<T>>,
    {
        let clients = &routes.clients[&shard.num];
        let start = self.replica_in_use(routes, shard).await;
        let mut failures = Vec::new();
        for k in 0..clients.len() {
            let i = (start + k) % clients.len();
            let replica = &shard.replicas[i];
            // The node answering must be on this shard, every time: a URL is never trusted for a tenant's rows.
            let result = match self.verify_node(routes, replica, &clients[i]).await {
                Ok(()) => op(clients[i].clone()).await,
                Err(Either::Client(e)) => Err(e),
                Err(Either::Store(e)) => return Err(e),
            };
            match result {
                Ok(v) => {
                    if k > 0 {
                        routes.in_use.lock().unwrap_or_else(|p| p.into_inner()).insert(shard.num, i);
                        tracing::warn!(
                            shard = shard.num,
                            replica = %shard.replicas[i].url,
                            "moved to the next replica of the shard: {}",
                            failures.join("; ")
                        );
                    }
                    return Ok(v);
                }
                Err(e @ (clickhouse::error::Error::Network(_) | clickhouse::error::Error::TimedOut)) => {
                    failures.push(format!("{}: {e}", shard.replicas[i].url));
                }
                Err(e) => return Err(self.error_at(&shard.replicas[i].url, statement, e)),
            }
        }
        Err(StoreError::ShardUnreachable {
            cluster: routes.layout.name.clone(),
            shard: shard.describe(),
            reason: failures.join("; "),
        })
    }

    /// The table the store reads and writes a tenant's rows in: on a cluster, the shard's local table.
    fn local(&self, table: &str) -> String {
        match self.cluster_name() {
            Some(_) => format!("{table}_local"),
            None => table.to_owned(),
        }
    }

    /// `sql` reading `tables` from their local twins on a cluster.
    fn localised(&self, sql: &str, tables: &[&str]) -> String {
        let mut out = sql.to_owned();
        for table in tables {
            out = out.replace(&format!("FROM {table} "), &format!("FROM {} ", self.local(table)));
            out = out.replace(&format!("FROM {table}\n"), &format!("FROM {}\n", self.local(table)));
        }
        out
    }

    fn error(&self, statement: &str, e: clickhouse::error::Error) -> StoreError {
        self.error_at(&self.settings.url, statement, e)
    }

    /// As [`Self::error`], for a statement sent to the server at `url` (a cluster's replica).
    pub(super) fn error_at(&self, url: &str, statement: &str, e: clickhouse::error::Error) -> StoreError {
        let url = url.to_owned();
        let statement: String = statement.split_whitespace().collect::<Vec<_>>().join(" ").chars().take(160).collect();
        match e {
            clickhouse::error::Error::Network(_) | clickhouse::error::Error::TimedOut => {
                StoreError::Unreachable { url, reason: e.to_string() }
            }
            other => {
                let reason = other.to_string();
                if reason.contains("Code: 81") || reason.contains("UNKNOWN_DATABASE") {
                    return StoreError::NotMigrated {
                        database: self.settings.database.clone(),
                        found: 0,
                        known: migrations::latest(),
                    };
                }
                StoreError::Query { url, statement, reason }
            }
        }
    }

    async fn exec(&self, client: &Client, sql: &str) -> Result<()> {
        client.query(sql).execute().await.map_err(|e| self.error(sql, e))
    }

    async fn applied(&self) -> Result<Vec<MigrationRow>> {
        let exists: u64 = self
            .server
            .query("SELECT count() FROM system.tables WHERE database = ? AND name = 'schema_migrations'")
            .bind(self.settings.database.as_str())
            .fetch_one()
            .await
            .map_err(|e| self.error("SELECT count() FROM system.tables", e))?;
        if exists == 0 {
            return Ok(Vec::new());
        }
        self.client
            .query(queries::SCHEMA_VERSION)
            .fetch_all::<MigrationRow>()
            .await
            .map_err(|e| self.error(queries::SCHEMA_VERSION, e))
    }

    /// Refuses to read or write a database that is not at this build's schema version.
    pub(super) async fn ready(&self) -> Result<()> {
        self.schema_checked
            .get_or_try_init(|| async {
                let applied = self.applied().await?;
                let found = applied.iter().map(|m| m.version).max().unwrap_or(0);
                let known = migrations::latest();
                let database = self.settings.database.clone();
                if found > known {
                    return Err(StoreError::SchemaTooNew { database, found, known });
                }
                if found < known {
                    return Err(StoreError::NotMigrated { database, found, known });
                }
                Ok(())
            })
            .await
            .map(|_| ())
    }

    /// Inserts rows of row type `R` (named with `'static`; the rows themselves may borrow) in one INSERT.
    async fn insert_rows<'r, R: clickhouse::RowWrite + 'static>(
        &self,
        tenant: &str,
        table: &str,
        rows: impl Iterator<Item = R::Value<'r>> + Clone,
    ) -> Result<usize> {
        self.ready().await?;
        let target = self.local(table);
        let statement = format!("INSERT INTO {target}");
        // Rows are made as they are sent (no copy of the batch); a retry on another replica makes them again.
        let (rows, target) = (&rows, target.as_str());
        self.on_shard(tenant, &statement, move |client| async move {
            let mut insert = client.insert::<R>(target).await?;
            let mut n = 0;
            for row in rows.clone() {
                insert.write(&row).await?;
                n += 1;
            }
            // `end` returns once the server has acknowledged the whole insert (on a cluster: the shard's replica).
            insert.end().await?;
            Ok(n)
        })
        .await
    }

    /// Runs a named query that reads one tenant's rows of `table` (on a cluster: on its shard alone).
    async fn fetch_tenant<T>(
        &self,
        tenant: &str,
        table: &str,
        sql: &str,
        bind: impl Fn(clickhouse::query::Query) -> clickhouse::query::Query,
    ) -> Result<Vec<T>>
    where
        T: clickhouse::RowOwned + clickhouse::RowRead,
    {
        self.ready().await?;
        let sql = self.localised(sql, &[table]);
        let (sql_ref, bind) = (sql.as_str(), &bind);
        self.on_shard(tenant, &sql, move |client| async move { bind(client.query(sql_ref)).fetch_all::<T>().await })
            .await
    }
}

impl ClickHouseStore {
    /// Runs a named query over page insight facts (`read_page_insights.sql`, `read_fact_series.sql`: the same
    /// parameters in the same order) on the tenant's server, bound from `filter`.
    async fn fetch_facts<T>(&self, scope: &TenantScope, filter: &FactFilter, sql: &str) -> Result<Vec<T>>
    where
        T: clickhouse::RowOwned + clickhouse::RowRead,
    {
        let (metrics, periods) = fact_filter_lists(filter);
        let practices: Vec<&str> = filter.practices.iter().map(|p| p.as_str()).collect();
        let pages: Vec<&str> = filter.pages.iter().map(|p| p.as_str()).collect();
        self.fetch_tenant(scope.as_str(), "page_insights", sql, |q| {
            q.bind(scope.as_str())
                .bind(InList(&metrics))
                .bind(InList(&periods))
                .bind(day_param(filter.from, MIN_DAY))
                .bind(day_param(filter.to, MAX_DAY))
                .bind(u8::from(!pages.is_empty()))
                .bind(InList(&pages))
                .bind(u8::from(filter.sundays_or_from.is_some()))
                .bind(day_param(filter.sundays_or_from, MIN_DAY))
                .bind(u8::from(!practices.is_empty()))
                .bind(InList(&practices))
        })
        .await
    }
}

/// A fact filter's metrics and periods as the named queries bind them (an empty list is every one).
fn fact_filter_lists(filter: &FactFilter) -> (Vec<&'static str>, Vec<&'static str>) {
    let metrics = if filter.metrics.is_empty() {
        CanonicalMetric::ALL.iter().map(|m| m.as_str()).collect()
    } else {
        filter.metrics.iter().map(|m| m.as_str()).collect()
    };
    let periods = if filter.periods.is_empty() {
        Period::ALL.iter().map(|p| p.as_str()).collect()
    } else {
        filter.periods.iter().map(|p| p.as_str()).collect()
    };
    (metrics, periods)
}

/// The items of one table for every tenant of a batch group, each with its tenant, in the table's key order (the
/// rows are made from them as they are sent).
fn batch_rows<'a, T: 'a>(
    group: &'a [&'a crate::TenantBatch<'a>],
    items: fn(&'a crate::TenantBatch<'a>) -> &'a [T],
    key: fn(&'a str, &'a T) -> SortKey<'a>,
) -> impl Iterator<Item = (&'a str, &'a T)> + Clone + 'a {
    in_key_order(group.iter().map(|b| (b.scope.as_str(), items(b))).collect(), key)
}

/// Each tenant's items, all in the order of their table's sorting key (`order.rs`): the server then finds each block
/// of the insert sorted and skips its own sort. Nothing is copied: the order is an index per item.
fn in_key_order<'a, T: 'a>(
    parts: Vec<(&'a str, &'a [T])>,
    key: fn(&'a str, &'a T) -> SortKey<'a>,
) -> impl Iterator<Item = (&'a str, &'a T)> + Clone + 'a {
    let starts: Vec<usize> = parts
        .iter()
        .scan(0, |n, (_, items)| {
            let start = *n;
            *n += items.len();
            Some(start)
        })
        .collect();
    let total = parts.iter().map(|(_, items)| items.len()).sum::<usize>();
    let at = move |i: usize| {
        let part = starts.partition_point(|&start| start <= i) - 1;
        let (tenant, items) = parts[part];
        (tenant, &items[i - starts[part]])
    };
    // Without an order (a key wider than 128 bits, or more rows than a u32 counts), the rows go as given.
    let order = order::key_order(total, |i| {
        let (tenant, item) = at(i);
        key(tenant, item)
    });
    (0..total).map(move |i| at(order.as_ref().map_or(i, |order| order[i] as usize)))
}

fn checkpoint_rows<'a>(
    group: &'a [&'a crate::TenantBatch<'a>],
) -> impl Iterator<Item = CheckpointRow<'a>> + Clone + 'a {
    group.iter().flat_map(|b| b.checkpoints.iter().map(move |c| CheckpointRow::new(b.scope.as_str(), c)))
}

/// How long a lease claim waits for concurrent claims to become visible before replaying them.
const LEASE_SETTLE: std::time::Duration = std::time::Duration::from_millis(300);

impl ClickHouseStore {
    /// The lease in force for `name`, replayed from the last day's claims (leases are minutes long).
    async fn lease_in_force(&self, scope: &TenantScope, name: &str) -> Result<Option<Lease>> {
        let since = (Utc::now() - chrono::Duration::days(1)).timestamp_micros().max(0) as u64;
        let claims: Vec<LeaseOut> = self
            .fetch_tenant(scope.as_str(), "leases", queries::READ_LEASE, |q| {
                q.bind(scope.as_str()).bind(name).bind(since)
            })
            .await?;
        let claims: Vec<Lease> = claims.into_iter().map(|c| c.into_lease(name)).collect();
        Ok(lease::current(&claims))
    }
}

impl Store for ClickHouseStore {
    fn describe(&self) -> String {
        let store = match self.cluster_name() {
            Some(c) => {
                format!("ClickHouse cluster `{c}` via {} database `{}`", self.settings.url, self.settings.database)
            }
            None => format!("ClickHouse {} database `{}`", self.settings.url, self.settings.database),
        };
        match &self.keeper {
            Some(k) => format!("{store}, leases in {}", k.describe()),
            None => store,
        }
    }

    async fn migrate(&self) -> Result<MigrationReport> {
        let topology = self.topology();
        let on_cluster = match &topology {
            Topology::Single => String::new(),
            Topology::Cluster { name, .. } => format!(" ON CLUSTER `{name}`"),
        };
        // The database name was validated as [A-Za-z0-9_]+ by the config, so it is safe as an identifier.
        let db = &self.settings.database;
        self.exec(&self.server, &format!("CREATE DATABASE IF NOT EXISTS `{db}`{on_cluster}")).await?;
        for statement in migrations::statements(migrations::SCHEMA_MIGRATIONS) {
            for rendered in migrations::render(&statement, &topology) {
                self.exec(&self.client, &rendered).await?;
            }
        }
        let applied = self.applied().await?;
        let known = migrations::latest();
        let found = applied.iter().map(|m| m.version).max().unwrap_or(0);
        if found > known {
            return Err(StoreError::SchemaTooNew { database: db.clone(), found, known });
        }
        for row in &applied {
            if let Some(m) = migrations::MIGRATIONS.iter().find(|m| m.version == row.version) {
                let expected = migrations::checksum(m.sql);
                if expected != row.checksum {
                    return Err(StoreError::MigrationChanged {
                        database: db.clone(),
                        version: m.version,
                        name: m.name.into(),
                        applied: row.checksum.clone(),
                        expected,
                    });
                }
            }
        }
        let mut done = Vec::new();
        for m in migrations::MIGRATIONS.iter().filter(|m| m.version > found) {
            for statement in migrations::statements(m.sql) {
                for rendered in migrations::render(&statement, &topology) {
                    self.exec(&self.client, &rendered).await?;
                }
            }
            let checksum = migrations::checksum(m.sql);
            let mut insert = self
                .client
                .insert::<MigrationInsert>("schema_migrations")
                .await
                .map_err(|e| self.error("INSERT INTO schema_migrations", e))?;
            let row = MigrationInsert {
                version: m.version,
                name: m.name,
                checksum: &checksum,
                applied_at: ch_datetime(Utc::now()),
            };
            insert.write(&row).await.map_err(|e| self.error("INSERT INTO schema_migrations", e))?;
            insert.end().await.map_err(|e| self.error("INSERT INTO schema_migrations", e))?;
            tracing::info!(version = m.version, name = m.name, database = %db, "applied migration");
            done.push(format!("{:04}_{}", m.version, m.name));
        }
        Ok(MigrationReport { applied: done, current_version: known })
    }

    async fn write_page_insights(&self, scope: &WriteScope, facts: &[PageInsightFact]) -> Result<WriteAck> {
        let tenant = scope.as_str();
        let rows = self
            .insert_rows::<FactRow<'static>>(
                tenant,
                "page_insights",
                in_key_order(vec![(tenant, facts)], FactRow::sort_key).map(|(t, f)| FactRow::new(t, f)),
            )
            .await?;
        Ok(WriteAck { rows })
    }

    async fn read_page_insights(&self, scope: &TenantScope, filter: &FactFilter) -> Result<Vec<PageInsightFact>> {
        let mut rows: Vec<FactOut> = self.fetch_facts(scope, filter, queries::READ_PAGE_INSIGHTS).await?;
        // In the table's key order, as the query once sorted them (a sort here costs less than the server's).
        rows.sort_unstable_by(|a, b| a.sort_key().cmp(&b.sort_key()));
        rows.into_iter().map(FactOut::into_fact).collect()
    }

    async fn home_of(&self, scope: &TenantScope) -> Result<Option<String>> {
        Ok(self.shard_of(scope.as_str()).await?.map(|shard| format!("shard {}", shard.num)))
    }

    async fn read_fact_series(&self, scope: &TenantScope, filter: &FactFilter) -> Result<Vec<crate::FactSeries>> {
        let rows: Vec<SeriesOut> = self.fetch_facts(scope, filter, queries::READ_FACT_SERIES).await?;
        let mut series = rows.into_iter().map(SeriesOut::into_series).collect::<Result<Vec<_>>>()?;
        // In the order of their keys, as the default grouping gives them (the server's groups come unordered): the
        // same input gives the same frames, run after run.
        series.sort_unstable_by(|a, b| a.key().cmp(&b.key()));
        Ok(series)
    }

    async fn write_posts(&self, scope: &WriteScope, posts: &[Post]) -> Result<WriteAck> {
        let tenant = scope.as_str();
        let rows = self
            .insert_rows::<PostRow<'static>>(
                tenant,
                "posts",
                in_key_order(vec![(tenant, posts)], PostRow::sort_key).map(|(t, p)| PostRow::new(t, p)),
            )
            .await?;
        Ok(WriteAck { rows })
    }

    async fn read_posts(&self, scope: &TenantScope, filter: &PostFilter) -> Result<Vec<Post>> {
        let practices: Vec<&str> = filter.practices.iter().map(|p| p.as_str()).collect();
        // created_time is UTC in the table; widen by a day each side and filter exactly below.
        let from = filter.from.map(|d| d - chrono::Duration::days(1));
        let to = filter.to.map(|d| d + chrono::Duration::days(1));
        let rows: Vec<PostOut> = self
            .fetch_tenant(scope.as_str(), "posts", queries::READ_POSTS, |q| {
                q.bind(scope.as_str())
                    .bind(day_param(from, MIN_DAY))
                    .bind(day_param(to, MAX_DAY))
                    .bind(u8::from(!practices.is_empty()))
                    .bind(InList(&practices))
            })
            .await?;
        let mut posts = rows.into_iter().map(PostOut::into_post).collect::<Result<Vec<_>>>()?;
        posts.retain(|p| filter.day_matches(p.created_time.date_naive()));
        Ok(posts)
    }

    async fn write_post_snapshots(&self, scope: &WriteScope, snapshots: &[PostInsightSnapshot]) -> Result<WriteAck> {
        let tenant = scope.as_str();
        let rows = self
            .insert_rows::<SnapshotRow<'static>>(
                tenant,
                "post_insights",
                in_key_order(vec![(tenant, snapshots)], SnapshotRow::sort_key).map(|(t, s)| SnapshotRow::new(t, s)),
            )
            .await?;
        Ok(WriteAck { rows })
    }

    async fn read_post_snapshots(&self, scope: &TenantScope, filter: &PostFilter) -> Result<Vec<PostInsightSnapshot>> {
        let practices: Vec<&str> = filter.practices.iter().map(|p| p.as_str()).collect();
        let rows: Vec<SnapshotOut> = self
            .fetch_tenant(scope.as_str(), "post_insights", queries::READ_POST_INSIGHTS, |q| {
                q.bind(scope.as_str())
                    .bind(day_param(filter.from, MIN_DAY))
                    .bind(day_param(filter.to, MAX_DAY))
                    .bind(u8::from(!practices.is_empty()))
                    .bind(InList(&practices))
            })
            .await?;
        rows.into_iter().map(SnapshotOut::into_snapshot).collect()
    }

    /// Every tenant's rows of a table in one insert per shard (on one server, one insert), then the shard's
    /// checkpoints: an insert per tenant, table and batch makes the server create and merge a part per month
    /// partition each time (`benches/results/ingest-throughput.md`).
    async fn write_batch(&self, batch: &[crate::TenantBatch<'_>]) -> Result<WriteAck> {
        if batch.is_empty() {
            return Ok(WriteAck { rows: 0 });
        }
        let mut groups: BTreeMap<u32, Vec<&crate::TenantBatch<'_>>> = BTreeMap::new();
        match self.routes().await? {
            None => {
                groups.insert(0, batch.iter().collect());
            }
            Some(routes) => {
                for b in batch {
                    groups.entry(self.shard_in(routes, b.scope.as_str()).await?.num).or_default().push(b);
                }
            }
        }
        let mut rows = 0;
        for group in groups.values() {
            // Any tenant of the group routes the inserts to the group's shard.
            let tenant = group[0].scope.as_str();
            if group.iter().any(|b| !b.facts.is_empty()) {
                let facts = batch_rows(group, |b| b.facts, FactRow::sort_key);
                let facts = facts.map(|(t, f)| FactRow::new(t, f));
                rows += self.insert_rows::<FactRow<'static>>(tenant, "page_insights", facts).await?;
            }
            if group.iter().any(|b| !b.posts.is_empty()) {
                let posts = batch_rows(group, |b| b.posts, PostRow::sort_key);
                let posts = posts.map(|(t, p)| PostRow::new(t, p));
                rows += self.insert_rows::<PostRow<'static>>(tenant, "posts", posts).await?;
            }
            if group.iter().any(|b| !b.snapshots.is_empty()) {
                let snapshots = batch_rows(group, |b| b.snapshots, SnapshotRow::sort_key);
                let snapshots = snapshots.map(|(t, s)| SnapshotRow::new(t, s));
                rows += self.insert_rows::<SnapshotRow<'static>>(tenant, "post_insights", snapshots).await?;
            }
            // Only now, with the group's data acknowledged, may its checkpoints move.
            if group.iter().any(|b| !b.checkpoints.is_empty()) {
                // A few rows each, and the stream's text is made per row: left to the server to sort.
                let checkpoints = checkpoint_rows(group);
                self.insert_rows::<CheckpointRow<'static>>(tenant, "ingest_checkpoints", checkpoints).await?;
            }
        }
        Ok(WriteAck { rows })
    }

    async fn save_checkpoints(&self, scope: &WriteScope, checkpoints: &[Checkpoint]) -> Result<WriteAck> {
        let tenant = scope.as_str();
        let rows = self
            .insert_rows::<CheckpointRow<'static>>(
                tenant,
                "ingest_checkpoints",
                checkpoints.iter().map(|c| CheckpointRow::new(tenant, c)),
            )
            .await?;
        Ok(WriteAck { rows })
    }

    async fn load_checkpoints(&self, scope: &TenantScope) -> Result<Vec<Checkpoint>> {
        let rows: Vec<CheckpointOut> = self
            .fetch_tenant(scope.as_str(), "ingest_checkpoints", queries::READ_CHECKPOINTS, |q| q.bind(scope.as_str()))
            .await?;
        rows.into_iter().map(CheckpointOut::into_checkpoint).collect()
    }

    async fn record_run(&self, scope: &WriteScope, records: &[IngestRunRecord]) -> Result<WriteAck> {
        let tenant = scope.as_str();
        let rows = self
            .insert_rows::<RunRow<'static>>(tenant, "ingest_runs", records.iter().map(|r| RunRow::new(tenant, r)))
            .await?;
        Ok(WriteAck { rows })
    }

    async fn days_fetched_since(
        &self,
        scope: &TenantScope,
        rows: crate::Fetched,
        since: chrono::DateTime<Utc>,
    ) -> Result<std::collections::BTreeSet<NaiveDate>> {
        #[derive(clickhouse::Row, serde::Deserialize)]
        struct Day {
            day: String,
        }
        let since = u32::try_from(since.timestamp().max(0)).unwrap_or(u32::MAX);
        let (table, query) = match rows {
            crate::Fetched::Facts => ("page_insights", queries::FACT_DAYS_FETCHED_SINCE),
            crate::Fetched::Posts => ("posts", queries::POST_DAYS_FETCHED_SINCE),
            crate::Fetched::Snapshots => ("post_insights", queries::SNAPSHOT_DAYS_FETCHED_SINCE),
        };
        let rows: Vec<Day> =
            self.fetch_tenant(scope.as_str(), table, query, |q| q.bind(scope.as_str()).bind(since)).await?;
        rows.iter()
            .map(|r| {
                r.day.parse().map_err(|e| StoreError::Report {
                    table: table.into(),
                    reason: format!("day `{}` was not read: {e}", r.day),
                })
            })
            .collect()
    }

    async fn read_runs(&self, scope: &TenantScope) -> Result<Vec<IngestRunRecord>> {
        let rows: Vec<RunOut> =
            self.fetch_tenant(scope.as_str(), "ingest_runs", queries::READ_RUNS, |q| q.bind(scope.as_str())).await?;
        rows.into_iter().map(RunOut::into_run).collect()
    }

    async fn append_export_audit(&self, scope: &WriteScope, record: &ExportAuditRecord) -> Result<WriteAck> {
        let tenant = scope.as_str();
        let rows = self
            .insert_rows::<AuditRow<'static>>(tenant, "export_audit", std::iter::once(AuditRow::new(tenant, record)))
            .await?;
        Ok(WriteAck { rows })
    }

    async fn read_export_audit(&self, scope: &TenantScope) -> Result<Vec<ExportAuditRecord>> {
        let rows: Vec<AuditOut> = self
            .fetch_tenant(scope.as_str(), "export_audit", queries::READ_EXPORT_AUDIT, |q| q.bind(scope.as_str()))
            .await?;
        Ok(rows.into_iter().map(AuditOut::into_record).collect())
    }

    async fn append_state(&self, scope: &WriteScope, events: &[StateEvent]) -> Result<WriteAck> {
        let tenant = scope.as_str();
        let rows = self
            .insert_rows::<StateRow<'static>>(tenant, "state_events", events.iter().map(|e| StateRow::new(tenant, e)))
            .await?;
        Ok(WriteAck { rows })
    }

    async fn read_state(&self, scope: &TenantScope, stream: &str) -> Result<Vec<StateEvent>> {
        let rows: Vec<StateOut> = self
            .fetch_tenant(scope.as_str(), "state_events", queries::READ_STATE, |q| q.bind(scope.as_str()).bind(stream))
            .await?;
        Ok(rows.into_iter().map(|r| r.into_event(stream)).collect())
    }

    async fn try_lease(
        &self,
        scope: &WriteScope,
        name: &str,
        holder: &str,
        ttl: std::time::Duration,
    ) -> Result<LeaseOutcome> {
        if let Some(keeper) = &self.keeper {
            return keeper.try_lease(scope.as_str(), name, holder, ttl).await;
        }
        // No compare-and-set here: read the claims, claim if free, let every concurrent claim land, replay.
        if let Some(held) = self.lease_in_force(scope, name).await?
            && held.holder != holder
            && lease::live(&held, Utc::now())
        {
            // Held, as far as the visible claims say; a rival's earlier claim may still be landing and void this
            // one, so report the holder once the claims have settled.
            tokio::time::sleep(LEASE_SETTLE).await;
            if let Some(held) = self.lease_in_force(scope, name).await?
                && held.holder != holder
                && lease::live(&held, Utc::now())
            {
                return Ok(LeaseOutcome::HeldBy(held));
            }
        }
        let now = Utc::now();
        let ttl = chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX);
        // A lease still unexpired whose holder's process is gone is taken over explicitly (decided now, by us), so
        // the replay never has to judge a process's liveness later.
        // Only a holder judged gone now is taken over; a live rival's lease seen here (its claim landed after our
        // first read) gets a plain claim from us, which the replay voids.
        let plain = || {
            vec![Lease { name: name.to_owned(), holder: holder.to_owned(), acquired_at: now, expires_at: now + ttl }]
        };
        let claims = match self.lease_in_force(scope, name).await? {
            Some(held) if held.holder != holder && held.expires_at > now && held.holder_exited() => {
                lease::takeover(&held, holder, now, ttl).to_vec()
            }
            _ => plain(),
        };
        let sent = std::time::Instant::now();
        self.insert_rows::<LeaseRow>(scope.as_str(), "leases", claims.iter().map(|c| LeaseRow::new(scope.as_str(), c)))
            .await?;
        // A rival's claim stamped before ours becomes visible once its insert is acknowledged, which takes about as
        // long as ours did: wait out that window (at least LEASE_SETTLE, three times our insert under load), replay,
        // then wait and replay once more so every contender decides on the same, settled set of claims.
        let settle = LEASE_SETTLE.max(sent.elapsed() * 3);
        tokio::time::sleep(settle).await;
        self.lease_in_force(scope, name).await?;
        tokio::time::sleep(settle).await;
        match self.lease_in_force(scope, name).await? {
            Some(held) if held.holder == holder => Ok(LeaseOutcome::Acquired(held)),
            Some(held) => Ok(LeaseOutcome::HeldBy(held)),
            None => Err(StoreError::Invalid {
                what: format!("lease `{name}`"),
                reason: "the claim just written is not there to read back".into(),
            }),
        }
    }

    async fn lease_holder(&self, scope: &TenantScope, name: &str) -> Result<crate::LeaseView> {
        match &self.keeper {
            Some(keeper) => Ok(match keeper.holder(scope.as_str(), name).await? {
                Some(lease) => crate::LeaseView::Held(lease),
                None => crate::LeaseView::Free,
            }),
            None => Ok(crate::LeaseView::Unknown),
        }
    }

    fn lease_trust(&self, ttl: std::time::Duration) -> (std::time::Duration, std::time::Duration) {
        match &self.keeper {
            Some(keeper) => keeper.trust(ttl),
            None => (ttl / 3, ttl * 2 / 3),
        }
    }

    async fn release_lease(&self, scope: &WriteScope, name: &str, holder: &str) -> Result<()> {
        if let Some(keeper) = &self.keeper {
            return keeper.release_lease(scope.as_str(), name, holder).await;
        }
        if self.lease_in_force(scope, name).await?.is_some_and(|l| l.holder == holder) {
            let now = Utc::now();
            let release = Lease { name: name.to_owned(), holder: holder.to_owned(), acquired_at: now, expires_at: now };
            self.insert_rows::<LeaseRow>(
                scope.as_str(),
                "leases",
                std::iter::once(LeaseRow::new(scope.as_str(), &release)),
            )
            .await?;
        }
        Ok(())
    }

    async fn replace_report(
        &self,
        scope: &WriteScope,
        table: &'static ReportTable,
        variant: &ReportVariant,
        batch: &RecordBatch,
    ) -> Result<WriteAck> {
        table.check(batch)?;
        // A partitioned table's rows month by month, as the lake keeps them: a slice replaced from a month on reads
        // back as one written whole.
        let batch = &table.in_storage_order(batch)?;
        self.ready().await?;
        let tenant = scope.as_str();
        let key = variant.slice_key(table);
        let previous = self.slice_version(tenant, &key).await?;
        self.write_slice(tenant, table, &key, previous, None, batch).await
    }

    /// The months before `from` are copied inside ClickHouse from the current slice into the new one (no row leaves
    /// the server), and only `batch`'s rows are sent; readers switch to the new slice at once, as for
    /// [`Store::replace_report`].
    async fn replace_report_from(
        &self,
        scope: &WriteScope,
        table: &'static ReportTable,
        variant: &ReportVariant,
        from: NaiveDate,
        batch: &RecordBatch,
    ) -> Result<WriteAck> {
        let tail = crate::check_tail(table, from, batch)?;
        self.ready().await?;
        let tenant = scope.as_str();
        let key = variant.slice_key(table);
        let Some(previous) = self.slice_version(tenant, &key).await? else {
            return self.write_slice(tenant, table, &key, None, None, &tail).await;
        };
        if let Some(kept) = self.rows_in_order_before(tenant, table, &key, previous, from).await? {
            return self.write_slice(tenant, table, &key, Some(previous), Some((from, kept)), &tail).await;
        }
        // The rows before `from` are not the slice's first rows in order (written before reports were kept month by
        // month, or before rows had ordinals): the slice is read and written whole, once, in storage order.
        let old = self.read_slice(tenant, table, &key, None).await?;
        let whole = table.in_storage_order(&table.with_tail(&old, from, &tail)?)?;
        self.write_slice(tenant, table, &key, Some(previous), None, &whole).await?;
        Ok(WriteAck { rows: tail.num_rows() })
    }

    async fn read_report(
        &self,
        scope: &TenantScope,
        table: &'static ReportTable,
        variant: &ReportVariant,
    ) -> Result<RecordBatch> {
        self.ready().await?;
        self.read_slice(scope.as_str(), table, &variant.slice_key(table), None).await
    }

    /// Only the rows on or after `from` leave the server.
    async fn read_report_from(
        &self,
        scope: &TenantScope,
        table: &'static ReportTable,
        variant: &ReportVariant,
        from: NaiveDate,
    ) -> Result<RecordBatch> {
        if table.partition.is_none() {
            return table.rows_from(&self.read_report(scope, table, variant).await?, from);
        }
        self.ready().await?;
        self.read_slice(scope.as_str(), table, &variant.slice_key(table), Some(from)).await
    }

    async fn sweep_reports(&self) -> Result<usize> {
        Ok(self.sweep_superseded().await)
    }

    async fn fact_files(&self, _scope: &TenantScope, _filter: &FactFilter) -> Result<Option<Vec<PathBuf>>> {
        Ok(None)
    }

    async fn aggregate_report(
        &self,
        scope: &TenantScope,
        table: &'static ReportTable,
        variant: &ReportVariant,
        aggregate: &crate::ReportAggregate,
    ) -> Result<Option<crate::AggregateAnswer>> {
        self.ready().await?;
        let tenant = scope.as_str();
        let known = |c: &str| table.columns.iter().find(|col| col.name == c);
        let is_date = |c: &str| known(c).is_some_and(|col| col.ty == crate::ReportType::Date);
        // Every column named must be the table's: the names go into the SQL as identifiers.
        let named = aggregate.group_by.iter().chain(&aggregate.sums).chain([&aggregate.date_column]).copied();
        let named = named.chain(aggregate.filters.iter().map(|f| f.column));
        let named: Vec<&str> = named.chain(aggregate.weights.iter().map(|(c, _)| *c)).collect();
        if let Some(c) = named.iter().find(|c| known(c).is_none()) {
            return Err(StoreError::Report {
                table: table.name.into(),
                reason: format!("the aggregation names column `{c}`, which the table does not have"),
            });
        }
        let as_text = |c: &str| if is_date(c) { format!("toString({c})") } else { c.to_owned() };
        let pointer = queries::REPORT_SLICE.lines().filter(|l| !l.starts_with("--")).collect::<Vec<_>>().join(" ");
        let slice = format!("FROM {} WHERE tenant_id = ? AND version IN ({pointer})", table.name);
        let date = aggregate.date_column;
        let key = variant.slice_key(table);

        let mut answer = crate::AggregateAnswer::default();
        // The date column's extent over the whole slice (a relative range and the answer's days are resolved on it);
        // not needed, and not read, when the range is given whole. When it is read, the groups are read from the
        // same slice version (pinned), so a replacement in between cannot mix two slices.
        let mut pinned: Option<u64> = None;
        let (from, to) = if let (None, Some(from), Some(to)) = (aggregate.last_days, aggregate.from, aggregate.to) {
            (Some(from), Some(to))
        } else {
            pinned = self.slice_extent(tenant, table, date, &slice, &key, &mut answer).await?;
            if answer.last_day.is_none() {
                return Ok(Some(answer));
            }
            match (aggregate.last_days, answer.last_day) {
                (Some(n), Some(last)) => (Some(last - chrono::Duration::days(i64::from(n) - 1)), Some(last)),
                (Some(_), None) => (None, None),
                (None, _) => (aggregate.from, aggregate.to),
            }
        };
        // Grouped where the data lives. One GROUP BY when each group has one weight key (a practice) or no weights
        // are asked; otherwise an inner GROUP BY per key and weight key keeps each practice's weight once and its
        // distinct days as a state, and the outer one merges them per key.
        let mut binds: Vec<Bind> = Vec::new();
        let keys: Vec<String> =
            aggregate.group_by.iter().enumerate().map(|(i, c)| format!("{} AS k{i}", as_text(c))).collect();
        let key_names: Vec<String> = (0..aggregate.group_by.len()).map(|i| format!("k{i}")).collect();
        let weights = aggregate.weights.as_ref().filter(|(_, w)| !w.is_empty());
        let two_levels = weights.is_some_and(|(column, _)| !aggregate.group_by.contains(column));
        let mut inner_cols = keys.clone();
        let mut inner_group = key_names.clone();
        let mut outer_cols = key_names.clone();
        for (i, c) in aggregate.sums.iter().enumerate() {
            inner_cols.push(format!("sum({c}) AS s{i}"));
            outer_cols.push(format!("sum(s{i}) AS s{i}"));
        }
        // The first and last day each group covers (the answer states the days it covers).
        inner_cols.push(format!("toString(min({date})) AS lo"));
        inner_cols.push(format!("toString(max({date})) AS hi"));
        outer_cols.push("min(lo) AS lo".into());
        outer_cols.push("max(hi) AS hi".into());
        if two_levels {
            inner_cols.push(format!("uniqExactState({date}) AS d"));
            inner_cols.push("count() AS n".into());
            outer_cols.push("uniqExactMerge(d) AS days".into());
            outer_cols.push("sum(n) AS rows".into());
        } else {
            inner_cols.push(format!("uniqExact({date}) AS days"));
            inner_cols.push("count() AS rows".into());
        }
        if let Some((column, w)) = weights {
            let codes: Vec<String> = w.iter().map(|(c, _)| c.clone()).collect();
            let (known, weight) = (
                format!("has(?, {column})"),
                format!("any(transform({column}, ?, CAST(? AS Array(Float64)), toFloat64(0)))"),
            );
            if two_levels {
                inner_cols.push(format!("{column} AS wk"));
                inner_group.push("wk".into());
                inner_cols.push(format!("{weight} AS w"));
                inner_cols.push(format!("max({known}) AS known"));
                outer_cols.push("if(min(known) = 0, NULL, sum(w)) AS weight".into());
                binds.push(Bind::Array(codes.clone()));
                binds.push(Bind::Floats(w.iter().map(|(_, v)| *v).collect()));
                binds.push(Bind::Array(codes));
            } else {
                inner_cols.push(format!("if(min({known}) = 0, NULL, {weight}) AS weight"));
                binds.push(Bind::Array(codes.clone()));
                binds.push(Bind::Array(codes));
                binds.push(Bind::Floats(w.iter().map(|(_, v)| *v).collect()));
            }
        }
        // The select list's binds come first in the statement, then the slice's, then the range's and filters'.
        binds.push(Bind::Str(tenant.to_owned()));
        let slice = match pinned {
            Some(version) => {
                binds.push(Bind::U64(version));
                format!("FROM {} WHERE tenant_id = ? AND version = ?", table.name)
            }
            None => {
                binds.push(Bind::Str(tenant.to_owned()));
                binds.push(Bind::Str(key.clone()));
                slice
            }
        };
        let mut conditions = vec![format!("{date} >= ?"), format!("{date} <= ?")];
        binds.push(Bind::Str(from.map_or(MIN_DAY.to_owned(), |d| d.to_string())));
        binds.push(Bind::Str(to.map_or(MAX_DAY.to_owned(), |d| d.to_string())));
        for f in &aggregate.filters {
            let value = as_text(f.column);
            match f.op {
                crate::ColumnFilterOp::In | crate::ColumnFilterOp::NotIn if f.values.is_empty() => {
                    conditions.push(if f.op == crate::ColumnFilterOp::In { "0".into() } else { "1".into() });
                }
                crate::ColumnFilterOp::In | crate::ColumnFilterOp::NotIn => {
                    let not = if f.op == crate::ColumnFilterOp::NotIn { "NOT " } else { "" };
                    conditions.push(format!("{value} {not}IN ?"));
                    binds.push(Bind::List(f.values.clone()));
                }
                crate::ColumnFilterOp::Contains => {
                    let any: Vec<String> =
                        f.values.iter().map(|_| format!("positionCaseInsensitiveUTF8({value}, ?) > 0")).collect();
                    conditions.push(if any.is_empty() { "0".into() } else { format!("({})", any.join(" OR ")) });
                    binds.extend(f.values.iter().map(|v| Bind::Str(v.clone())));
                }
            }
        }
        let group =
            |cols: &[String]| if cols.is_empty() { String::new() } else { format!(" GROUP BY {}", cols.join(", ")) };
        let inner =
            format!("SELECT {} {slice} AND {}{}", inner_cols.join(", "), conditions.join(" AND "), group(&inner_group));
        let sql = if two_levels {
            format!("SELECT {} FROM ({inner}){}", outer_cols.join(", "), group(&key_names))
        } else {
            inner
        };
        let sql = self.localised(&sql, &[table.name, "report_slices"]);
        let (sql_ref, binds_ref) = (sql.as_str(), &binds);
        let bytes = self
            .on_shard(tenant, &sql, move |client| async move {
                let mut q = client.query(sql_ref);
                for b in binds_ref {
                    q = match b {
                        Bind::Str(v) => q.bind(v.as_str()),
                        Bind::List(v) => q.bind(InList(&v.iter().map(String::as_str).collect::<Vec<_>>())),
                        Bind::Array(v) => q.bind(v),
                        Bind::Floats(v) => q.bind(v),
                        Bind::U64(v) => q.bind(*v),
                    };
                }
                q.with_setting("output_format_json_quote_64bit_integers", "0")
                    .fetch_bytes("JSONEachRow")?
                    .collect()
                    .await
            })
            .await?;
        let bad = |reason: String| StoreError::Report { table: table.name.into(), reason };
        for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let row: serde_json::Value =
                serde_json::from_slice(line).map_err(|e| bad(format!("an aggregated row was not read: {e}")))?;
            // Without keys an aggregation answers one row even when nothing matched: no rows, no group.
            if row["rows"].as_u64().unwrap_or(0) == 0 {
                continue;
            }
            answer.groups.push(crate::AggregateGroup {
                keys: key_names.iter().map(|k| row[k].as_str().unwrap_or_default().to_owned()).collect(),
                sums: (0..aggregate.sums.len()).map(|i| row[format!("s{i}")].as_f64()).collect(),
                days: row["days"].as_u64().unwrap_or(0),
                weight: row["weight"].as_f64(),
                first: row["lo"].as_str().and_then(|d| d.parse().ok()),
                last: row["hi"].as_str().and_then(|d| d.parse().ok()),
            });
        }
        Ok(Some(answer))
    }
}

/// A value bound into an aggregation's statement.
enum Bind {
    Str(String),
    /// A tuple for `IN ?`.
    List(Vec<String>),
    /// An array (a function's argument).
    Array(Vec<String>),
    Floats(Vec<f64>),
    U64(u64),
}

impl ClickHouseStore {
    /// Deletes the report slice versions superseded so far: one mutation per table, for every tenant and version
    /// (a mutation rewrites the table's parts, so one per replacement cost a jobs run a fifth of its time).
    /// Removing garbage is housekeeping: a failure is logged and its versions stay unreachable (readers follow the
    /// pointers), and answers how many versions it asked to delete.
    async fn sweep_superseded(&self) -> usize {
        let pending = std::mem::take(&mut *self.superseded.lock().unwrap_or_else(|e| e.into_inner()));
        let mut by_table: BTreeMap<&'static str, Vec<(String, u64)>> = BTreeMap::new();
        for (table, tenant, version) in pending {
            by_table.entry(table).or_default().push((tenant, version));
        }
        let mut swept = 0;
        for (table, versions) in by_table {
            // On a cluster the mutation goes to the replicated local tables through the DDL queue; a replica that is
            // down runs it when it comes back, so the wait for every replica's answer is kept short.
            let pairs = vec!["(?, ?)"; versions.len()].join(", ");
            let (cleanup, wait) = match self.cluster_name() {
                Some(c) => (
                    format!(
                        "ALTER TABLE {table}_local ON CLUSTER `{c}` DELETE WHERE (tenant_id, version) IN ({pairs})"
                    ),
                    "10",
                ),
                None => (format!("ALTER TABLE {table} DELETE WHERE (tenant_id, version) IN ({pairs})"), "180"),
            };
            let mut query = self.client.query(&cleanup);
            for (tenant, version) in &versions {
                query = query.bind(tenant.as_str()).bind(*version);
            }
            match query.with_setting("distributed_ddl_task_timeout", wait).execute().await {
                Ok(()) => swept += versions.len(),
                Err(e) => {
                    // Kept for the next sweep.
                    tracing::warn!(table, versions = versions.len(), error = %e, "could not delete superseded report rows");
                    let mut pending = self.superseded.lock().unwrap_or_else(|e| e.into_inner());
                    pending.extend(versions.into_iter().map(|(tenant, version)| (table, tenant, version)));
                }
            }
        }
        swept
    }

    /// Writes `batch` as a new version of the tenant's slice `key` of `table`, after the rows of the `previous`
    /// version before `head`'s day (`head`'s count of them, ordinals 0 to count - 1) copied into it inside
    /// ClickHouse, then points readers at the new version and deletes the previous one. Answers the rows sent.
    async fn write_slice(
        &self,
        tenant: &str,
        table: &'static ReportTable,
        key: &str,
        previous: Option<u64>,
        head: Option<(NaiveDate, u64)>,
        batch: &RecordBatch,
    ) -> Result<WriteAck> {
        // After the previous version whatever the clock says (a clock stepped back must not leave the pointer on
        // the version the sweep deletes).
        let now = Utc::now().timestamp_micros().max(0) as u64;
        let version = previous.map_or(now, |p| now.max(p + 1));
        let rows = batch.num_rows();
        let mut kept = 0;
        if let (Some(old), Some((from, count)), Some(column)) = (previous, head, table.partition)
            && count > 0
        {
            // Table, columns and day come from a static ReportTable and a date, never from input.
            let columns: Vec<&str> = table.columns.iter().map(|c| c.name).collect();
            let columns = columns.join(", ");
            let local = self.local(table.name);
            let sql = format!(
                "INSERT INTO {local} (tenant_id, version, {columns}, row_ordinal) \
                 SELECT tenant_id, toUInt64({version}), {columns}, row_ordinal FROM {local} \
                 WHERE tenant_id = ? AND version = {old} AND {column} < toDate('{from}')"
            );
            let sql_ref = sql.as_str();
            let copy = move |client: Client| async move { client.query(sql_ref).bind(tenant).execute().await };
            // Sent once, never again to another replica after a timeout (a second copy would double the rows).
            match self.routes().await? {
                Some(routes) => {
                    let shard = self.shard_in(routes, tenant).await?;
                    self.on_replica_in_use(routes, shard, &sql, copy).await?
                }
                None => copy(self.client.clone()).await.map_err(|e| self.error(&sql, e))?,
            }
            // The copy is checked before anyone can read it: every kept row, once, numbered from 0. A writer that
            // replaced and swept the slice meanwhile, or a replica behind, leaves fewer; the run stops and the
            // slice stays as it was.
            let copied = self.ordinal_span(tenant, table, version).await?;
            if copied.n != count || !numbered_from_zero(copied.n, copied.lo, copied.hi, copied.uniq) {
                self.superseded.lock().unwrap_or_else(|e| e.into_inner()).push((
                    table.name,
                    tenant.to_owned(),
                    version,
                ));
                return Err(StoreError::Report {
                    table: table.name.into(),
                    reason: format!(
                        "the {count} rows before {from} were not copied whole into the new slice ({} were): was the \
                         slice replaced by another run meanwhile? Nothing was replaced; run the jobs again",
                        copied.n
                    ),
                });
            }
            kept = count;
        }
        if rows > 0 {
            let first = u32::try_from(kept).map_err(|_| StoreError::Report {
                table: table.name.into(),
                reason: format!("{kept} rows kept: more than a slice can number"),
            })?;
            let body = super::rowbinary::encode(table, tenant, version, first, batch)?;
            // The table and its columns come from a static ReportTable, never from input.
            let sql = format!(
                "INSERT INTO {} ({}) FORMAT RowBinary",
                self.local(table.name),
                super::rowbinary::insert_columns(table)
            );
            let body = bytes::Bytes::from(body);
            let (sql_ref, body) = (sql.as_str(), &body);
            self.on_shard(tenant, &sql, move |client| async move {
                let mut insert = client.insert_formatted_with(sql_ref);
                insert.send(body.clone()).await?;
                insert.end().await
            })
            .await?;
        }
        // Switch readers to the new slice only once its rows are acknowledged.
        let slice = SliceRow {
            tenant_id: tenant,
            report: key,
            current_version: version,
            rows: kept + rows as u64,
            written_at: ch_datetime(Utc::now()),
            version,
        };
        self.insert_rows::<SliceRow<'_>>(tenant, "report_slices", std::iter::once(slice)).await?;
        // The superseded slice of this variant is garbage now (other variants keep theirs, and the rows kept were
        // copied): deleted by the next sweep, with every other slice superseded by then.
        if let Some(old) = previous {
            let pending = {
                let mut superseded = self.superseded.lock().unwrap_or_else(|e| e.into_inner());
                superseded.push((table.name, tenant.to_owned(), old));
                superseded.len()
            };
            if pending >= SWEEP_AT {
                self.sweep_superseded().await;
            }
        }
        Ok(WriteAck { rows })
    }

    /// How many rows of `version` of the tenant's slice `key` of a partitioned `table` are before `from`, when they
    /// are the slice's first rows in order (ordinals 0 to count - 1, as every slice written in storage order has);
    /// `None` when they are not. Refused when the server answering holds fewer rows of the version than its pointer
    /// says were written (a replica behind, after a move to another replica): a copy from it would lose rows.
    async fn rows_in_order_before(
        &self,
        tenant: &str,
        table: &'static ReportTable,
        key: &str,
        version: u64,
        from: NaiveDate,
    ) -> Result<Option<u64>> {
        let Some(column) = table.partition else {
            return Ok(None);
        };
        // One statement: the rows before `from`, every row of the version, and the rows its pointer recorded.
        let before = format!("{column} < toDate('{from}')");
        let sql = format!(
            "SELECT countIf({before}) AS n, minIf(row_ordinal, {before}) AS lo, maxIf(row_ordinal, {before}) AS hi, \
             uniqExactIf(row_ordinal, {before}) AS uniq, count() AS total, \
             (SELECT max(rows) FROM {slices} FINAL WHERE tenant_id = ? AND report = ? AND current_version = {version}) \
             AS recorded FROM {} WHERE tenant_id = ? AND version = {version}",
            self.local(table.name),
            slices = self.local("report_slices"),
        );
        let sql_ref = sql.as_str();
        let span: SliceSpan = self
            .on_shard(tenant, &sql, move |client| async move {
                client.query(sql_ref).bind(tenant).bind(key).bind(tenant).fetch_one().await
            })
            .await?;
        if span.total < span.recorded {
            return Err(StoreError::Report {
                table: table.name.into(),
                reason: format!(
                    "the server answering holds {} of the current slice's {} rows (a replica still catching up?); \
                     nothing was replaced: run the jobs again once replication has caught up",
                    span.total, span.recorded
                ),
            });
        }
        Ok(numbered_from_zero(span.n, span.lo, span.hi, span.uniq).then_some(span.n))
    }

    /// The count, ordinal range and distinct ordinals of `version`'s rows of the tenant's slice of `table`.
    async fn ordinal_span(&self, tenant: &str, table: &'static ReportTable, version: u64) -> Result<OrdinalSpan> {
        let sql = format!(
            "SELECT count() AS n, min(row_ordinal) AS lo, max(row_ordinal) AS hi, uniqExact(row_ordinal) AS uniq \
             FROM {} WHERE tenant_id = ? AND version = {version}",
            self.local(table.name)
        );
        let sql_ref = sql.as_str();
        self.on_shard(tenant, &sql, move |client| async move { client.query(sql_ref).bind(tenant).fetch_one().await })
            .await
    }

    /// The rows of the tenant's current slice `key` of `table` (none when it was never written), in the order
    /// written; with `from`, only a partitioned table's rows on or after it.
    async fn read_slice(
        &self,
        tenant: &str,
        table: &'static ReportTable,
        key: &str,
        from: Option<NaiveDate>,
    ) -> Result<RecordBatch> {
        // One round trip: the rows of the tenant's current slice. The slice pointer is read in the same statement,
        // so a concurrent replacement is seen whole or not at all. On a cluster the statement runs on the tenant's
        // shard, where the pointer is in the local table.
        let columns: Vec<&str> = table.columns.iter().map(|c| c.name).collect();
        let pointer = queries::REPORT_SLICE.lines().filter(|l| !l.starts_with("--")).collect::<Vec<_>>().join(" ");
        // The day is a date's own text and the column a static ReportTable's, never input.
        let months = match (from, table.partition) {
            (Some(from), Some(column)) => format!(" AND {column} >= toDate('{from}')"),
            _ => String::new(),
        };
        // In the order written (rows from before migration 8 have ordinal 0: by their first columns).
        let sql = format!(
            "SELECT {} FROM {} WHERE tenant_id = ? AND version IN ({}){months} ORDER BY row_ordinal, {}",
            columns.join(", "),
            table.name,
            pointer,
            columns.iter().take(3).copied().collect::<Vec<_>>().join(", ")
        );
        let bytes = self.slice_rows(tenant, table, &sql, key, "RowBinary").await?;
        super::rowbinary::decode(table, &bytes)
    }

    /// Runs `sql`, a statement over the tenant's current slice of `table` whose only binds are the slice's (tenant,
    /// tenant, slice `key`), on the tenant's shard, and answers its rows in `format` (JSON lines with 64-bit
    /// integers unquoted, or RowBinary).
    async fn slice_rows(
        &self,
        tenant: &str,
        table: &'static ReportTable,
        sql: &str,
        key: &str,
        format: &str,
    ) -> Result<bytes::Bytes> {
        let sql = self.localised(sql, &[table.name, "report_slices"]);
        let sql_ref = sql.as_str();
        self.on_shard(tenant, &sql, move |client| async move {
            client
                .query(sql_ref)
                .bind(tenant)
                .bind(tenant)
                .bind(key)
                .with_setting("output_format_json_quote_64bit_integers", "0")
                .fetch_bytes(format)?
                .collect()
                .await
        })
        .await
    }

    /// The first and last day of `date` over the tenant's current slice (`slice` is the `FROM ... WHERE` of it, with
    /// binds tenant, tenant, `key`), into `answer`; both stay `None` for an empty slice. Answers the version of the
    /// slice read (`None` when empty).
    async fn slice_extent(
        &self,
        tenant: &str,
        table: &'static ReportTable,
        date: &str,
        slice: &str,
        key: &str,
        answer: &mut crate::AggregateAnswer,
    ) -> Result<Option<u64>> {
        let sql = format!(
            "SELECT toString(min({date})) AS first, toString(max({date})) AS last, count() AS n, any(version) AS v {slice}"
        );
        let bytes = self.slice_rows(tenant, table, &sql, key, "JSONEachRow").await?;
        let extent: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| StoreError::Report {
            table: table.name.into(),
            reason: format!("the slice's extent was not read: {e}"),
        })?;
        if extent["n"].as_u64().unwrap_or(0) > 0 {
            let day = |v: &serde_json::Value| v.as_str().and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok());
            (answer.first_day, answer.last_day) = (day(&extent["first"]), day(&extent["last"]));
            return Ok(extent["v"].as_u64());
        }
        Ok(None)
    }

    /// Creates (if missing) each tenant's analyst views, which show that tenant's rows only. Run after `migrate`.
    pub async fn create_tenant_views(&self, tenants: &[pulse_domain::TenantId]) -> Result<usize> {
        self.ready().await?;
        let mut n = 0;
        for tenant in tenants {
            for statement in migrations::tenant_views(tenant) {
                for sql in migrations::render(&statement, &self.topology()) {
                    self.client.query(&sql).execute().await.map_err(|e| self.error(&sql, e))?;
                    n += 1;
                }
            }
        }
        Ok(n)
    }

    /// The version a tenant's slice key points at (none: never written).
    async fn slice_version(&self, tenant: &str, key: &str) -> Result<Option<u64>> {
        let versions: Vec<u64> =
            self.fetch_tenant(tenant, "report_slices", queries::REPORT_SLICE, |q| q.bind(tenant).bind(key)).await?;
        Ok(versions.into_iter().max())
    }
}
