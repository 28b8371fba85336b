//! Where a cluster's rows are, and the repair for rows on the wrong shard.
//!
//! [`ClickHouseStore::cluster_status`] shows the layout as the store resolves it: each replica's URL, whether it
//! answers, what it answers as, and its replication backlog (`pulse doctor`). [`ClickHouseStore::placement`] counts
//! each tenant's rows in every shard's `_local` tables, so rows that a mis-mapped deployment wrote to a shard other
//! than the tenant's own can be found, and [`ClickHouseStore::rebalance`] moves them home.
//!
//! A move is idempotent and resumable, because every step can be re-done from what the shards hold:
//! 1. read the tenant's rows of the table on the wrong shard and on its own shard (all columns, as text);
//! 2. insert on its own shard the rows it does not have yet (row for row, duplicates counted);
//! 3. read its own shard again and verify that every row of the wrong shard is there;
//! 4. only then delete the tenant's rows on the wrong shard (a mutation, replicated to that shard's replicas) and
//!    wait until none is left.
//!
//! Stopped anywhere (killed, or the server gone), a re-run plans again from the shards and finds the rows already
//! copied, so nothing is doubled, and nothing is deleted that is not verified on the tenant's own shard. Rows are
//! compared whole, so the tables' own versions decide between a moved row and a newer one written since.

use std::collections::HashMap;
use std::ops::ControlFlow;

use bytes::Bytes;
use clickhouse::Client;

use super::ClickHouseStore;
use super::cluster::{Answered, Layout, Replica, Shard};
use super::store::Routes;
use crate::{Result, StoreError};

/// One replica as `pulse doctor` shows it.
#[derive(Debug, Clone)]
pub struct ReplicaStatus {
    pub replica: Replica,
    pub state: ReplicaState,
}

#[derive(Debug, Clone)]
pub enum ReplicaState {
    /// The URL did not answer (why).
    Unreachable(String),
    /// The node answered: what it is, whether that is this replica, and its replication backlog in the database.
    Answered { answered: Answered, mismatch: Option<String>, queue: u64, delay_secs: u64 },
}

/// The cluster as the store resolves it, checked replica by replica.
#[derive(Debug, Clone)]
pub struct ClusterStatus {
    pub layout: Layout,
    /// Why the store refuses this layout (shared URLs, a node answering as another), if it does.
    pub problem: Option<String>,
    pub replicas: Vec<ReplicaStatus>,
}

/// A tenant's rows of one table on one shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub tenant: String,
    /// The `_local` table.
    pub table: String,
    /// Where the rows are.
    pub shard: u32,
    /// Where they belong (`cityHash64(tenant_id)` over the shards' weights).
    pub home: u32,
    pub rows: u64,
}

impl Placement {
    pub fn misplaced(&self) -> bool {
        self.shard != self.home
    }
}

/// A step of a move, reported as it is done; the caller may stop the move after any of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Rows inserted on the tenant's own shard (0: all were there already).
    Copied { tenant: String, table: String, to: u32, rows: u64 },
    /// Every row of the wrong shard is on the tenant's own shard.
    Verified { tenant: String, table: String, to: u32 },
    /// The delete on the wrong shard was issued (a mutation; it runs even if the mover stops now).
    DeleteIssued { tenant: String, table: String, from: u32 },
    /// The wrong shard holds none of the tenant's rows of the table.
    Deleted { tenant: String, table: String, from: u32, rows: u64 },
}

/// What a rebalance did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rebalanced {
    /// Rows inserted on tenants' own shards.
    pub copied: u64,
    /// Rows removed from wrong shards (each verified on its own shard first).
    pub deleted: u64,
    /// The caller stopped it before the end.
    pub stopped: bool,
}

/// How long a delete on the wrong shard may take to finish before the move gives up (and says to re-run).
const DELETE_WAIT: std::time::Duration = std::time::Duration::from_secs(120);

/// A row's identity for the diff: its text, with floating-point columns (`floats[i]` for column i) cut to 12
/// significant digits, since ClickHouse 18.16 may read a float's text back a bit or two off, and a copied row must
/// still be recognised as copied (or a re-run would copy it again).
fn identity(line: &[u8], floats: &[bool]) -> Vec<u8> {
    if !floats.iter().any(|f| *f) {
        return line.to_vec();
    }
    let mut out = Vec::with_capacity(line.len());
    for (i, field) in line.split(|&b| b == b'\t').enumerate() {
        if i > 0 {
            out.push(b'\t');
        }
        let parsed =
            floats.get(i).copied().unwrap_or(false).then(|| std::str::from_utf8(field).ok()?.parse::<f64>().ok());
        match parsed.flatten() {
            Some(v) => out.extend_from_slice(format!("{v:.11e}").as_bytes()),
            None => out.extend_from_slice(field),
        }
    }
    out
}

/// Rows as text lines, counted by identity (a row may legitimately appear twice in a table without a key), each
/// with one of its lines.
fn count_lines<'a>(text: &'a [u8], floats: &[bool]) -> HashMap<Vec<u8>, (u64, &'a [u8])> {
    let mut counts: HashMap<Vec<u8>, (u64, &[u8])> = HashMap::new();
    for line in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        counts.entry(identity(line, floats)).or_insert((0, line)).0 += 1;
    }
    counts
}

/// The rows of `from` that `to` lacks, with their multiplicity, as a TabSeparated body (sorted, so the same
/// missing rows always make the same body).
fn missing_rows(from: &[u8], to: &[u8], floats: &[bool]) -> (Vec<u8>, u64) {
    let have = count_lines(to, floats);
    let mut lines: Vec<&[u8]> = Vec::new();
    for (key, (count, line)) in count_lines(from, floats) {
        for _ in have.get(&key).map_or(0, |h| h.0)..count {
            lines.push(line);
        }
    }
    lines.sort_unstable();
    let n = lines.len() as u64;
    let mut out = Vec::new();
    for line in lines {
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    (out, n)
}

impl ClickHouseStore {
    /// The cluster's layout with each replica checked (`None` on a single server). Unlike the store's own
    /// connection, this does not refuse a bad layout: it shows it.
    pub async fn cluster_status(&self) -> Result<Option<ClusterStatus>> {
        let Some(name) = self.cluster_name() else { return Ok(None) };
        let layout = self.read_layout(name).await?;
        let mut problem = super::cluster::shared_urls_problem(&layout);
        let mut replicas = Vec::new();
        let backlog = "SELECT toUInt64(sum(queue_size)), toUInt64(max(absolute_delay)) FROM system.replicas \
                       WHERE database = ?";
        for replica in layout.replicas() {
            let client = self.replica_client(replica);
            let probe = async {
                let answered = self.answered(&client, name).await?;
                let (queue, delay): (u64, u64) =
                    client.query(backlog).bind(self.database()).fetch_one().await.unwrap_or((0, 0));
                clickhouse::error::Result::Ok((answered, queue, delay))
            };
            let state = match tokio::time::timeout(std::time::Duration::from_secs(5), probe).await {
                Err(_) => ReplicaState::Unreachable("no answer in 5 s".into()),
                Ok(Err(e)) => ReplicaState::Unreachable(clickhouse::error::Error::to_string(&e)),
                Ok(Ok((answered, queue, delay_secs))) => {
                    let mismatch = answered.mismatch(replica);
                    if let (Some(reason), None) = (&mismatch, &problem) {
                        problem = Some(format!("{} at {}: {reason}", replica.describe(), replica.url));
                    }
                    ReplicaState::Answered { answered, mismatch, queue, delay_secs }
                }
            };
            replicas.push(ReplicaStatus { replica: replica.clone(), state });
        }
        Ok(Some(ClusterStatus { layout, problem, replicas }))
    }

    /// Every tenant's rows in every shard's local tables, with the shard they belong on (empty on a single server).
    /// Needs the layout to pass the store's checks: counting on a node that is not the shard it claims would be no
    /// answer at all.
    pub async fn placement(&self) -> Result<Vec<Placement>> {
        self.ready().await?;
        let Some(routes) = self.routes().await? else { return Ok(Vec::new()) };
        let database = self.database().to_owned();
        let mut out = Vec::new();
        for shard in &routes.layout.shards {
            let tables_sql = "SELECT name FROM system.tables WHERE database = ? AND endsWith(name, '_local') AND name \
                              IN (SELECT table FROM system.columns WHERE database = ? AND name = 'tenant_id') \
                              ORDER BY name";
            let db = database.as_str();
            let tables: Vec<String> = self
                .on_given_shard(routes, shard, tables_sql, |c| async move {
                    c.query(tables_sql).bind(db).bind(db).fetch_all().await
                })
                .await?;
            for table in tables {
                // Table names come from system.tables of our own database, ending in `_local`.
                let sql =
                    format!("SELECT tenant_id, toUInt64(count()) FROM `{table}` GROUP BY tenant_id ORDER BY tenant_id");
                let sql_ref = sql.as_str();
                let counts: Vec<(String, u64)> = self
                    .on_given_shard(routes, shard, &sql, |c| async move { c.query(sql_ref).fetch_all().await })
                    .await?;
                for (tenant, rows) in counts {
                    let home = self.shard_in(routes, &tenant).await?.num;
                    out.push(Placement { tenant, table: table.clone(), shard: shard.num, home, rows });
                }
            }
        }
        Ok(out)
    }

    /// Moves every misplaced tenant's rows to its own shard (see the module's notes), calling `on_step` after each
    /// step; `on_step` returning `Break` stops the move there, as a kill would (a re-run finishes it).
    pub async fn rebalance(&self, mut on_step: impl FnMut(&Step) -> ControlFlow<()>) -> Result<Rebalanced> {
        let plan: Vec<Placement> = self.placement().await?.into_iter().filter(Placement::misplaced).collect();
        let Some(routes) = self.routes().await? else { return Ok(Rebalanced::default()) };
        let mut done = Rebalanced::default();
        for p in &plan {
            let shard = |num: u32| routes.layout.shards.iter().find(|s| s.num == num).expect("a shard of the layout");
            let (from, to) = (shard(p.shard), shard(p.home));
            let (tenant, table) = (p.tenant.clone(), p.table.clone());
            let select = format!("SELECT * FROM `{table}` WHERE tenant_id = ?");
            let columns = format!(
                "SELECT name, type FROM system.columns WHERE database = '{}' AND table = '{table}'",
                self.database()
            );
            if self.text(routes, from, &columns, None).await? != self.text(routes, to, &columns, None).await? {
                return Err(StoreError::ClusterLayout {
                    cluster: routes.layout.name.clone(),
                    problem: format!(
                        "`{table}` has different columns on shard {} and shard {}; run `pulse migrate` and try again",
                        from.num, to.num
                    ),
                });
            }
            let floats: Vec<bool> = String::from_utf8_lossy(&self.text(routes, from, &columns, None).await?)
                .lines()
                .map(|l| l.split('\t').nth(1).is_some_and(|t| t.contains("Float")))
                .collect();
            let theirs = self.text(routes, from, &select, Some(&tenant)).await?;
            let ours = self.text(routes, to, &select, Some(&tenant)).await?;
            let (body, rows) = missing_rows(&theirs, &ours, &floats);
            if rows > 0 {
                let insert = format!("INSERT INTO `{table}` FORMAT TabSeparated");
                let (insert_ref, body) = (insert.as_str(), Bytes::from(body));
                let body = &body;
                self.on_given_shard(routes, to, &insert, |c| async move {
                    // Not de-duplicated against earlier blocks: a block equal to one this shard once held (and
                    // lost to the misplacement) must still land; re-runs are kept from doubling by the diff above.
                    let mut insert = c.insert_formatted_with(insert_ref).with_setting("insert_deduplicate", "0");
                    insert.send(body.clone()).await?;
                    insert.end().await
                })
                .await?;
            }
            done.copied += rows;
            if on_step(&Step::Copied { tenant: tenant.clone(), table: table.clone(), to: to.num, rows }).is_break() {
                return Ok(Rebalanced { stopped: true, ..done });
            }
            let ours = self.text(routes, to, &select, Some(&tenant)).await?;
            let (_, n) = missing_rows(&theirs, &ours, &floats);
            if n > 0 {
                return Err(StoreError::ClusterLayout {
                    cluster: routes.layout.name.clone(),
                    problem: format!(
                        "after copying {tenant}'s rows of `{table}` to shard {}, {n} of them are not there; nothing was \
                         deleted from shard {}. Check the shard's replicas and re-run",
                        to.num, from.num
                    ),
                });
            }
            if on_step(&Step::Verified { tenant: tenant.clone(), table: table.clone(), to: to.num }).is_break() {
                return Ok(Rebalanced { stopped: true, ..done });
            }
            // Only what was read and verified may be deleted: a row that reached the wrong shard since (a writer still
            // using the old layout) stops the move, to be copied by a re-run once the writers are stopped.
            let now = self.text(routes, from, &select, Some(&tenant)).await?;
            if now.split(|&b| b == b'\n').filter(|l| !l.is_empty()).count()
                != theirs.split(|&b| b == b'\n').filter(|l| !l.is_empty()).count()
            {
                return Err(StoreError::ClusterLayout {
                    cluster: routes.layout.name.clone(),
                    problem: format!(
                        "{tenant}'s rows of `{table}` on shard {} changed during the move (something still writes \
                         there); nothing was deleted. Stop every process using the old layout and re-run",
                        from.num
                    ),
                });
            }
            let delete = format!("ALTER TABLE `{table}` DELETE WHERE tenant_id = ?");
            let delete_ref = delete.as_str();
            let t = tenant.as_str();
            self.on_given_shard(routes, from, &delete, |c| async move { c.query(delete_ref).bind(t).execute().await })
                .await?;
            if on_step(&Step::DeleteIssued { tenant: tenant.clone(), table: table.clone(), from: from.num }).is_break()
            {
                return Ok(Rebalanced { stopped: true, ..done });
            }
            let count = format!("SELECT toUInt64(count()) FROM `{table}` WHERE tenant_id = ?");
            let count_ref = count.as_str();
            let started = std::time::Instant::now();
            loop {
                let left: u64 =
                    self.on_given_shard(routes, from, &count, |c| async move {
                        c.query(count_ref).bind(t).fetch_one().await
                    })
                    .await?;
                if left == 0 {
                    break;
                }
                if started.elapsed() > DELETE_WAIT {
                    return Err(StoreError::ClusterLayout {
                        cluster: routes.layout.name.clone(),
                        problem: format!(
                            "{left} of {tenant}'s rows of `{table}` are still on shard {} {} s after their delete \
                             (already copied and verified on shard {}); see system.mutations there and re-run",
                            from.num,
                            DELETE_WAIT.as_secs(),
                            to.num
                        ),
                    });
                }
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            done.deleted += p.rows;
            let step = Step::Deleted { tenant: tenant.clone(), table: table.clone(), from: from.num, rows: p.rows };
            if on_step(&step).is_break() {
                return Ok(Rebalanced { stopped: true, ..done });
            }
        }
        Ok(done)
    }

    /// A statement's whole answer as text, on a shard (bound to `tenant` when given).
    async fn text(&self, routes: &Routes, shard: &Shard, sql: &str, tenant: Option<&str>) -> Result<Vec<u8>> {
        let run = |c: Client| async move {
            let query = c.query(sql);
            let query = match tenant {
                Some(t) => query.bind(t),
                None => query,
            };
            let bytes: Bytes = query.fetch_bytes("TabSeparated")?.collect().await?;
            Ok(bytes.to_vec())
        };
        // Always the replica in use: the diff must read where the copy was written.
        self.on_replica_in_use(routes, shard, sql, run).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_rows_the_home_shard_lacks_are_copied_counting_duplicates() {
        let theirs = b"t\ta\t1\nt\tb\t2\nt\tb\t2\nt\tc\t3\n";
        let ours = b"t\tb\t2\nt\tc\t3\nt\td\t4\n";
        let (body, n) = missing_rows(theirs, ours, &[]);
        assert_eq!(n, 2);
        let mut lines: Vec<&[u8]> = body.split(|&b| b == b'\n').filter(|l| !l.is_empty()).collect();
        lines.sort();
        assert_eq!(lines, vec![&b"t\ta\t1"[..], &b"t\tb\t2"[..]]);
        // Once copied, nothing is left to copy: a re-run doubles nothing.
        let mut after = ours.to_vec();
        after.extend_from_slice(&body);
        assert_eq!(missing_rows(theirs, &after, &[]).1, 0);
    }

    #[test]
    fn a_float_read_back_a_bit_off_is_still_the_same_row() {
        let floats = [false, true, false];
        let theirs = b"t\t0.30000000000000004\tx\n";
        let ours = b"t\t0.3\tx\n";
        assert_eq!(missing_rows(theirs, ours, &floats).1, 0);
        assert_eq!(missing_rows(theirs, b"t\t0.31\tx\n", &floats).1, 1);
        // Text columns are compared whole.
        assert_eq!(missing_rows(b"t\t1\tx\n", b"t\t1\ty\n", &floats).1, 1);
    }
}
