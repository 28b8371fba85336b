//! A ClickHouse cluster as the store sees it: the shards and replicas of the configured cluster (read from
//! `system.clusters` on the server the store talks to), and which shard holds a tenant.
//!
//! Every table is a Replicated `*_local` table on each node with a Distributed table over them, sharded by
//! `cityHash64(tenant_id)`, so all of a tenant's rows live on one shard. The Distributed tables are for analysts and
//! ad-hoc queries across tenants. The store itself reads and writes a tenant's rows on its shard only, in the local
//! tables of one of the shard's replicas, over that replica's HTTP interface: an acknowledged insert is on the shard
//! (on the replica's disk, copied to the other replicas by ClickHouse) before the ingester moves a checkpoint, and a
//! query for one tenant touches one shard. The store keeps to one replica per shard (the first in the definition
//! that answers and has no replication backlog) and moves to the next when it stops answering, so a read sees the
//! writes before it.
//!
//! A replica's URL is only trusted once the server behind it says it is that replica: on connect, two replicas that
//! resolve to one URL (every host `127.0.0.1` with no `replica_urls`, say) or a URL that answers as another shard are
//! refused ([`Layout::shared_urls`], [`Answered::mismatch`]); and every statement the store sends to a shard first
//! asks the node answering which shards are local to it, so a mis-mapped URL can never put a tenant's rows on
//! another shard.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

/// One row of `system.clusters`.
#[derive(Debug, Clone, Deserialize, clickhouse::Row)]
pub(crate) struct ClusterRow {
    pub shard_num: u32,
    pub shard_weight: u32,
    pub replica_num: u32,
    pub host_name: String,
    pub port: u16,
}

pub(crate) const CLUSTER_ROWS: &str = "SELECT toUInt32(shard_num) AS shard_num, toUInt32(shard_weight) AS shard_weight, \
     toUInt32(replica_num) AS replica_num, host_name, toUInt16(port) AS port FROM system.clusters WHERE cluster = ? \
     ORDER BY shard_num, replica_num";

/// Asked of a node over a replica's URL: the shards of `cluster` that are local to it. ClickHouse 18.16 marks every
/// replica of the node's own shard local, current versions the node's own entry only; either way the shard is
/// exact.
pub(crate) const LOCAL_SHARDS: &str = "SELECT DISTINCT toUInt32(shard_num) AS shard_num, toUInt32(replica_num) AS \
     replica_num FROM system.clusters WHERE cluster = ? AND is_local = 1 ORDER BY shard_num, replica_num";

/// Asked of a node: its host name and macros (`{shard}`, `{replica}`), which tell two nodes on one host apart.
pub(crate) const NODE_NAME: &str = "SELECT hostName() AS host, arrayStringConcat(groupArray(concat(macro, '=', \
     substitution)), ',') AS macros FROM (SELECT macro, substitution FROM system.macros ORDER BY macro)";

/// One replica: its place in the cluster definition, as the definition names it (`host:tcp_port`), and the HTTP URL
/// the store uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replica {
    pub shard: u32,
    pub num: u32,
    pub address: String,
    pub url: String,
}

impl Replica {
    /// `shard 2 replica 1 (127.0.0.1:9000)`
    pub fn describe(&self) -> String {
        format!("shard {} replica {} ({})", self.shard, self.num, self.address)
    }
}

/// What a node said about itself over a replica's URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answered {
    /// `(shard_num, replica_num)` of the cluster's rows the node marks local.
    pub local: Vec<(u32, u32)>,
    /// `hostName()`.
    pub host: String,
    /// `name=value` of every macro, sorted.
    pub macros: String,
}

impl Answered {
    /// The shards the node is local to.
    pub fn shards(&self) -> BTreeSet<u32> {
        self.local.iter().map(|&(s, _)| s).collect()
    }

    /// Why this node cannot be `replica` (`None`: it is, as far as the node can tell). A node local to no shard of
    /// the cluster, or to another shard, is not the replica; where the node marks single replicas local (current
    /// ClickHouse), it must mark this one.
    pub fn mismatch(&self, replica: &Replica) -> Option<String> {
        let shards = self.shards();
        if shards.is_empty() {
            return Some("it is not a node of this cluster (no entry of the cluster is local to it)".into());
        }
        if shards.len() > 1 || !shards.contains(&replica.shard) {
            let list: Vec<String> = shards.iter().map(u32::to_string).collect();
            return Some(format!("it answers as a node of shard {}", list.join(" and ")));
        }
        let of_shard: Vec<u32> = self.local.iter().filter(|&&(s, _)| s == replica.shard).map(|&(_, r)| r).collect();
        if of_shard.len() == 1 && of_shard[0] != replica.num {
            return Some(format!("it answers as shard {} replica {}", replica.shard, of_shard[0]));
        }
        None
    }

    /// The node's name for messages: host and macros.
    pub fn describe(&self) -> String {
        if self.macros.is_empty() { self.host.clone() } else { format!("{} ({})", self.host, self.macros) }
    }
}

/// One shard: its number in the cluster definition and its replicas, in the definition's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shard {
    pub num: u32,
    pub weight: u32,
    pub replicas: Vec<Replica>,
}

impl Shard {
    pub fn describe(&self) -> String {
        let urls: Vec<&str> = self.replicas.iter().map(|r| r.url.as_str()).collect();
        format!("shard {} ({})", self.num, urls.join(", "))
    }
}

/// The shards of one cluster, and the slot table the Distributed engine uses to place a sharding key.
#[derive(Debug, Clone)]
pub struct Layout {
    pub name: String,
    pub shards: Vec<Shard>,
    /// The Distributed engine's slot table: shard index repeated by weight, indexed by `key % slots`.
    slots: Vec<usize>,
}

impl Layout {
    /// The layout from `system.clusters` rows; `url_of(row)` gives a replica's HTTP URL.
    pub(crate) fn from_rows(name: &str, rows: Vec<ClusterRow>, url_of: impl Fn(&ClusterRow) -> String) -> Option<Self> {
        let mut shards: Vec<Shard> = Vec::new();
        for row in rows {
            let replica = Replica {
                shard: row.shard_num,
                num: row.replica_num,
                address: format!("{}:{}", row.host_name, row.port),
                url: url_of(&row),
            };
            match shards.last_mut() {
                Some(s) if s.num == row.shard_num => s.replicas.push(replica),
                _ => shards.push(Shard { num: row.shard_num, weight: row.shard_weight, replicas: vec![replica] }),
            }
        }
        let slots: Vec<usize> =
            shards.iter().enumerate().flat_map(|(i, s)| std::iter::repeat_n(i, s.weight as usize)).collect();
        (!slots.is_empty()).then(|| Self { name: name.to_owned(), shards, slots })
    }

    /// The shard a row with this sharding key (`cityHash64(tenant_id)`) is written to, as the Distributed engine
    /// places it.
    pub fn shard_for(&self, key: u64) -> &Shard {
        &self.shards[self.slots[(key % self.slots.len() as u64) as usize]]
    }

    /// Every replica, shard by shard.
    pub fn replicas(&self) -> impl Iterator<Item = &Replica> {
        self.shards.iter().flat_map(|s| s.replicas.iter())
    }

    /// URLs that more than one replica resolves to, with those replicas: the store cannot tell them apart, so it
    /// would send one shard's rows to whichever node answers there.
    pub fn shared_urls(&self) -> Vec<(&str, Vec<&Replica>)> {
        let mut by_url: BTreeMap<&str, Vec<&Replica>> = BTreeMap::new();
        for r in self.replicas() {
            by_url.entry(r.url.as_str()).or_default().push(r);
        }
        by_url.into_iter().filter(|(_, rs)| rs.len() > 1).collect()
    }
}

/// The refusal for URLs shared by several replicas: which, where, and the `replica_urls` entries to add.
pub fn shared_urls_problem(layout: &Layout) -> Option<String> {
    let shared = layout.shared_urls();
    if shared.is_empty() {
        return None;
    }
    let mut lines = Vec::new();
    let mut entries = Vec::new();
    for (url, replicas) in &shared {
        let names: Vec<String> = replicas.iter().map(|r| r.describe()).collect();
        lines.push(format!("{} all resolve to {url}", names.join(", ")));
        for r in replicas {
            entries
                .push(format!("\"{}\" = \"http://HOST:HTTP_PORT\"   # shard {} replica {}", r.address, r.shard, r.num));
        }
    }
    Some(format!(
        "{}; the store could not tell which node it writes to, and would put every shard's rows on one. Give each \
         replica its own HTTP URL in pulse.toml:\n[store.clickhouse.replica_urls]\n{}",
        lines.join("; "),
        entries.join("\n")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(shard: u32, weight: u32, port: u16) -> ClusterRow {
        ClusterRow { shard_num: shard, shard_weight: weight, replica_num: 1, host_name: "ch".into(), port }
    }

    fn url(row: &ClusterRow) -> String {
        format!("http://{}:{}", row.host_name, row.port - 1)
    }

    #[test]
    fn shards_group_replicas_in_order_and_keys_follow_the_weights() {
        let layout = Layout::from_rows("pulse", vec![row(1, 1, 9001), row(1, 1, 9002), row(2, 2, 9003)], url).unwrap();
        assert_eq!(layout.shards.len(), 2);
        assert_eq!(
            layout.shards[0].replicas[1],
            Replica { shard: 1, num: 1, address: "ch:9002".into(), url: "http://ch:9001".into() }
        );
        assert_eq!(layout.shards[1].describe(), "shard 2 (http://ch:9002)");
        // Three slots: key % 3 == 0 -> shard 1, 1 and 2 -> shard 2 (weight 2).
        assert_eq!(layout.shard_for(3).num, 1);
        assert_eq!(layout.shard_for(4).num, 2);
        assert_eq!(layout.shard_for(u64::MAX).num, [1, 2, 2][(u64::MAX % 3) as usize]);
    }

    #[test]
    fn replicas_on_one_host_without_their_own_urls_are_refused_with_the_entries_to_add() {
        // The loopback cluster: every host 127.0.0.1, so every derived URL is the entry node's.
        let rows = vec![
            ClusterRow { shard_num: 1, shard_weight: 1, replica_num: 1, host_name: "127.0.0.1".into(), port: 9011 },
            ClusterRow { shard_num: 1, shard_weight: 1, replica_num: 2, host_name: "127.0.0.1".into(), port: 9021 },
            ClusterRow { shard_num: 2, shard_weight: 1, replica_num: 1, host_name: "127.0.0.1".into(), port: 9031 },
        ];
        let layout = Layout::from_rows("pulse", rows, |_| "http://127.0.0.1:8123".into()).unwrap();
        let problem = shared_urls_problem(&layout).unwrap();
        assert!(problem.contains("shard 1 replica 1 (127.0.0.1:9011), shard 1 replica 2 (127.0.0.1:9021), shard 2 replica 1 (127.0.0.1:9031) all resolve to http://127.0.0.1:8123"), "{problem}");
        assert!(
            problem.contains("[store.clickhouse.replica_urls]\n\"127.0.0.1:9011\" = \"http://HOST:HTTP_PORT\""),
            "{problem}"
        );
        // With a URL each, nothing is shared.
        let layout = Layout::from_rows("pulse", vec![row(1, 1, 9001), row(2, 1, 9002)], url).unwrap();
        assert_eq!(shared_urls_problem(&layout), None);
    }

    #[test]
    fn a_node_answering_as_another_shard_or_replica_is_not_the_replica() {
        let replica = Replica { shard: 2, num: 1, address: "ch:9031".into(), url: "http://ch:8133".into() };
        let answered = |local: Vec<(u32, u32)>| Answered { local, host: "h".into(), macros: String::new() };
        // 18.16 marks the node's whole shard local; current versions the node's own entry.
        assert_eq!(answered(vec![(2, 1), (2, 2)]).mismatch(&replica), None);
        assert_eq!(answered(vec![(2, 1)]).mismatch(&replica), None);
        assert_eq!(
            answered(vec![(1, 1), (1, 2)]).mismatch(&replica).as_deref(),
            Some("it answers as a node of shard 1")
        );
        assert_eq!(answered(vec![(2, 2)]).mismatch(&replica).as_deref(), Some("it answers as shard 2 replica 2"));
        assert!(answered(vec![]).mismatch(&replica).unwrap().contains("not a node of this cluster"));
        assert_eq!(
            answered(vec![(1, 1), (2, 1)]).mismatch(&replica).as_deref(),
            Some("it answers as a node of shard 1 and 2")
        );
    }

    #[test]
    fn an_unknown_cluster_has_no_layout() {
        assert!(Layout::from_rows("nope", Vec::new(), url).is_none());
    }
}
