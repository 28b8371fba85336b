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

use serde::Deserialize;

/// One row of `system.clusters`.
#[derive(Debug, Clone, Deserialize, clickhouse::Row)]
pub(crate) struct ClusterRow {
    pub shard_num: u32,
    pub shard_weight: u32,
    pub host_name: String,
    pub port: u16,
}

pub(crate) const CLUSTER_ROWS: &str = "SELECT toUInt32(shard_num) AS shard_num, toUInt32(shard_weight) AS shard_weight, \
     host_name, toUInt16(port) AS port FROM system.clusters WHERE cluster = ? ORDER BY shard_num, replica_num";

/// One replica: as the cluster definition names it (`host:tcp_port`), and the HTTP URL the store uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replica {
    pub address: String,
    pub url: String,
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
            let replica = Replica { address: format!("{}:{}", row.host_name, row.port), url: url_of(&row) };
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(shard: u32, weight: u32, port: u16) -> ClusterRow {
        ClusterRow { shard_num: shard, shard_weight: weight, host_name: "ch".into(), port }
    }

    fn url(row: &ClusterRow) -> String {
        format!("http://{}:{}", row.host_name, row.port - 1)
    }

    #[test]
    fn shards_group_replicas_in_order_and_keys_follow_the_weights() {
        let layout = Layout::from_rows("pulse", vec![row(1, 1, 9001), row(1, 1, 9002), row(2, 2, 9003)], url).unwrap();
        assert_eq!(layout.shards.len(), 2);
        assert_eq!(layout.shards[0].replicas[1], Replica { address: "ch:9002".into(), url: "http://ch:9001".into() });
        assert_eq!(layout.shards[1].describe(), "shard 2 (http://ch:9002)");
        // Three slots: key % 3 == 0 -> shard 1, 1 and 2 -> shard 2 (weight 2).
        assert_eq!(layout.shard_for(3).num, 1);
        assert_eq!(layout.shard_for(4).num, 2);
        assert_eq!(layout.shard_for(u64::MAX).num, [1, 2, 2][(u64::MAX % 3) as usize]);
    }

    #[test]
    fn an_unknown_cluster_has_no_layout() {
        assert!(Layout::from_rows("nope", Vec::new(), url).is_none());
    }
}
