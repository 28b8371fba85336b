//! A ClickHouse cluster as the store sees it: the shards and replicas of the configured cluster (read from
//! `system.clusters` on the server the store talks to), and which shard holds a tenant.
//!
//! Every table is a Distributed table sharded by `cityHash64(tenant_id)` over Replicated `*_local` tables, so all of
//! a tenant's rows live on one shard. Writes go through the Distributed table synchronously
//! (`insert_distributed_sync`), so an acknowledged insert is on the tenant's shard before the store returns (and
//! before the ingester moves a checkpoint). Reads of one tenant go to that shard only, through
//! `remote('replica1|replica2', db, table_local)`; ClickHouse 18.16 has no `optimize_skip_unused_shards`. Both use
//! `load_balancing = in_order`, so a read goes to the replica the write went to while it is up (read-your-writes);
//! when it is down, both fail over to the next replica of the shard.

use serde::Deserialize;

/// One row of `system.clusters`.
#[derive(Debug, Clone, Deserialize, clickhouse::Row)]
pub(crate) struct ClusterRow {
    pub shard_num: u32,
    pub shard_weight: u32,
    pub host_address: String,
    pub port: u16,
}

pub(crate) const CLUSTER_ROWS: &str = "SELECT toUInt32(shard_num) AS shard_num, toUInt32(shard_weight) AS shard_weight, \
     host_address, toUInt16(port) AS port FROM system.clusters \
     WHERE cluster = ? ORDER BY shard_num, replica_num";

/// One shard: its number in the cluster definition and its replicas' `host:port` (native protocol), in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shard {
    pub num: u32,
    pub weight: u32,
    pub replicas: Vec<String>,
}

impl Shard {
    /// The replicas as `remote()` takes them: alternatives of one shard separated by `|`.
    pub fn remote_addresses(&self) -> String {
        self.replicas.join("|")
    }

    pub fn describe(&self) -> String {
        format!("shard {} ({})", self.num, self.replicas.join(", "))
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
    pub(crate) fn from_rows(name: &str, rows: Vec<ClusterRow>) -> Option<Self> {
        let mut shards: Vec<Shard> = Vec::new();
        for row in rows {
            let address = format!("{}:{}", row.host_address, row.port);
            match shards.last_mut() {
                Some(s) if s.num == row.shard_num => s.replicas.push(address),
                _ => shards.push(Shard { num: row.shard_num, weight: row.shard_weight, replicas: vec![address] }),
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
        ClusterRow { shard_num: shard, shard_weight: weight, host_address: "127.0.0.1".into(), port }
    }

    #[test]
    fn shards_group_replicas_in_order_and_keys_follow_the_weights() {
        let layout = Layout::from_rows("pulse", vec![row(1, 1, 9001), row(1, 1, 9002), row(2, 2, 9003)]).unwrap();
        assert_eq!(layout.shards.len(), 2);
        assert_eq!(layout.shards[0].remote_addresses(), "127.0.0.1:9001|127.0.0.1:9002");
        assert_eq!(layout.shards[1].describe(), "shard 2 (127.0.0.1:9003)");
        // Three slots: key % 3 == 0 -> shard 1, 1 and 2 -> shard 2 (weight 2).
        assert_eq!(layout.shard_for(3).num, 1);
        assert_eq!(layout.shard_for(4).num, 2);
        assert_eq!(layout.shard_for(u64::MAX).num, [1, 2, 2][(u64::MAX % 3) as usize]);
    }

    #[test]
    fn an_unknown_cluster_has_no_layout() {
        assert!(Layout::from_rows("nope", Vec::new()).is_none());
    }
}
