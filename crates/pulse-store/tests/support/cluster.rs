//! The loopback ClickHouse cluster started by `.ci/clickhouse-cluster.sh` (ZooKeeper + 2 shards x 2 replicas), as
//! tests use it: a fresh database per test, and nodes to stop and start again. Included with `#[path]` by the
//! test crates that run on the cluster.
//!
//! The cluster tests run when `PULSE_TEST_CLICKHOUSE_CLUSTER_DIR` names the directory the script printed; with
//! `PULSE_REQUIRE_CLICKHOUSE_CLUSTER=1` (CI) a missing cluster is a failure, otherwise they are skipped with a
//! message saying how to run them.
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use pulse_store::Store;
use pulse_store::clickhouse::{ClickHouseSettings, ClickHouseStore};

pub const CLUSTER: &str = "pulse";

#[derive(Debug, Clone)]
pub struct Node {
    pub shard: u32,
    pub replica: u32,
    pub url: String,
    pub tcp_port: u16,
    pub dir: PathBuf,
}

impl Node {
    fn pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.dir.join("pid")).ok()?.trim().parse().ok()
    }

    pub fn is_up(&self) -> bool {
        std::process::Command::new("curl")
            .args(["-fsS", "-m", "2", &format!("{}/ping", self.url)])
            .output()
            .is_ok_and(|o| o.status.success())
    }

    /// Kills the server (SIGKILL: no orderly shutdown, as a crash would) and waits until it no longer answers.
    pub fn kill(&self) {
        if let Some(pid) = self.pid() {
            let _ = std::process::Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
        for _ in 0..100 {
            if !self.is_up() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("node {} still answers after kill -9", self.url);
    }

    /// Starts the server again with its own data directory and waits until it answers.
    pub fn start(&self) {
        let status = std::process::Command::new("bash").arg(self.dir.join("start.sh")).status().unwrap();
        assert!(status.success(), "node {} did not start again; see {}/log", self.url, self.dir.display());
    }

    pub fn query(&self, sql: &str) -> String {
        let out = std::process::Command::new("curl")
            .args(["-fsS", "-m", "30", &format!("{}/", self.url), "--data-binary", sql])
            .output()
            .unwrap();
        assert!(out.status.success(), "{sql} on {}: {}", self.url, String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }
}

#[derive(Debug, Clone)]
pub struct LocalCluster {
    pub dir: PathBuf,
    pub nodes: Vec<Node>,
}

impl LocalCluster {
    pub fn from_env() -> Option<Self> {
        let Some(dir) = std::env::var_os("PULSE_TEST_CLICKHOUSE_CLUSTER_DIR").filter(|d| !d.is_empty()) else {
            assert!(
                std::env::var("PULSE_REQUIRE_CLICKHOUSE_CLUSTER").as_deref() != Ok("1"),
                "PULSE_REQUIRE_CLICKHOUSE_CLUSTER=1 but PULSE_TEST_CLICKHOUSE_CLUSTER_DIR is not set; start one with \
                 `bash .ci/clickhouse-cluster.sh`"
            );
            static ONCE: std::sync::Once = std::sync::Once::new();
            ONCE.call_once(|| {
                use std::io::Write;
                let _ = writeln!(
                    std::io::stderr(),
                    "note: skipping the ClickHouse cluster tests; to run them: \
                     export PULSE_TEST_CLICKHOUSE_CLUSTER_DIR=$(bash .ci/clickhouse-cluster.sh)"
                );
            });
            return None;
        };
        let dir = PathBuf::from(dir);
        let tsv = std::fs::read_to_string(dir.join("nodes.tsv")).unwrap_or_else(|e| {
            panic!("{}/nodes.tsv: {e}; start the cluster with .ci/clickhouse-cluster.sh", dir.display())
        });
        let nodes = tsv
            .lines()
            .map(|l| {
                let f: Vec<&str> = l.split('\t').collect();
                Node {
                    shard: f[0].parse().unwrap(),
                    replica: f[1].parse().unwrap(),
                    url: f[2].to_owned(),
                    tcp_port: f[3].parse().unwrap(),
                    dir: PathBuf::from(f[4]),
                }
            })
            .collect();
        Some(Self { dir, nodes })
    }

    /// The cluster's ZooKeeper, `127.0.0.1:port` (from the config the script wrote).
    pub fn zookeeper(&self) -> String {
        let cfg = std::fs::read_to_string(self.dir.join("zk/conf/zoo.cfg")).expect("the cluster's zoo.cfg");
        let port = cfg.lines().find_map(|l| l.strip_prefix("clientPort=")).expect("clientPort in zoo.cfg");
        format!("127.0.0.1:{}", port.trim())
    }

    /// The node the store talks to: shard 1, replica 1.
    pub fn entry(&self) -> &Node {
        &self.nodes[0]
    }

    pub fn node(&self, shard: u32, replica: u32) -> &Node {
        self.nodes.iter().find(|n| n.shard == shard && n.replica == replica).unwrap()
    }

    pub fn store(&self, database: &str) -> ClickHouseStore {
        ClickHouseStore::new(ClickHouseSettings {
            url: self.entry().url.clone(),
            database: database.to_owned(),
            user: "default".into(),
            password: None,
            cluster: Some(CLUSTER.into()),
            // On loopback every node has its own HTTP port, so each replica's URL is given by its TCP address.
            replica_urls: self.nodes.iter().map(|n| (format!("127.0.0.1:{}", n.tcp_port), n.url.clone())).collect(),
            // The deployment has a coordination service: leases use it.
            zookeeper: Some(self.zookeeper()),
        })
    }

    /// A fresh database, migrated ON CLUSTER.
    pub async fn fresh(&self, prefix: &str) -> (ClickHouseStore, String) {
        let name = format!(
            "{prefix}_{:x}{:x}",
            std::process::id(),
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
        );
        let store = self.store(&name);
        store.migrate().await.unwrap_or_else(|e| panic!("migrating `{name}` on the cluster: {e}"));
        (store, name)
    }

    /// The local tables with a tenant column, as the migration made them.
    pub fn tenant_tables(&self, node: &Node, database: &str) -> Vec<String> {
        let sql = format!(
            "SELECT name FROM system.tables WHERE database = '{database}' AND endsWith(name, '_local') AND name IN \
             (SELECT table FROM system.columns WHERE database = '{database}' AND name = 'tenant_id') ORDER BY name"
        );
        node.query(&sql).lines().map(str::to_owned).collect()
    }

    /// A tenant's raw rows (every version, not de-duplicated) per local table on a node.
    pub fn raw_counts(&self, node: &Node, database: &str, tenant: &str) -> std::collections::BTreeMap<String, u64> {
        self.tenant_tables(node, database)
            .into_iter()
            .map(|t| {
                let n = node.query(&format!("SELECT count() FROM `{database}`.`{t}` WHERE tenant_id = '{tenant}'"));
                (t, n.parse().unwrap())
            })
            .collect()
    }

    /// Waits until every replica has caught up with its shard.
    pub fn settle(&self, database: &str) {
        let sql = format!("SELECT count() FROM system.replicas WHERE database = '{database}' AND queue_size > 0");
        for node in &self.nodes {
            for _ in 0..200 {
                if node.query(&sql) == "0" {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    /// Puts every row of `tenant` on shard `to`, as a deployment whose replicas all resolved to one node did: copied
    /// from shard `from` (its own) to `to`, then deleted from `from`.
    pub fn misplace(&self, database: &str, tenant: &str, from: u32, to: u32) {
        let (source, target) = (self.node(from, 1), self.node(to, 1));
        for table in self.tenant_tables(source, database) {
            target.query(&format!(
                "INSERT INTO `{database}`.`{table}` SELECT * FROM remote('127.0.0.1:{}', `{database}`.`{table}`) \
                 WHERE tenant_id = '{tenant}' SETTINGS insert_deduplicate = 0",
                source.tcp_port
            ));
            source.query(&format!("ALTER TABLE `{database}`.`{table}` DELETE WHERE tenant_id = '{tenant}'"));
        }
        for _ in 0..300 {
            if self.raw_counts(source, database, tenant).values().all(|&n| n == 0) {
                self.settle(database);
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("{tenant}'s rows were not deleted from shard {from}");
    }

    pub fn drop_database(&self, name: &str) {
        let _ = self.entry().query(&format!("DROP DATABASE IF EXISTS `{name}` ON CLUSTER `{CLUSTER}`"));
    }

    /// A guard that brings every stopped node back when dropped, also when the test fails.
    pub fn healing(&self) -> Healing<'_> {
        Healing(self)
    }

    /// Every node up again.
    pub fn heal(&self) {
        for node in &self.nodes {
            if !node.is_up() {
                node.start();
            }
        }
    }
}

pub struct Healing<'a>(&'a LocalCluster);

impl Drop for Healing<'_> {
    fn drop(&mut self) {
        self.0.heal();
    }
}
