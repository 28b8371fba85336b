//! `pulse doctor` (the store as resolved: on a cluster, every replica's URL, what answers there, its replication
//! backlog, and where each tenant's rows are) and `pulse cluster rebalance` (rows on a shard other than their
//! tenant's, found and moved home).

use std::collections::{BTreeMap, BTreeSet};
use std::ops::ControlFlow;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use pulse_app::open;
use pulse_store::clickhouse::ClickHouseStore;
use pulse_store::clickhouse::placement::{Placement, ReplicaState, Step};
use pulse_store::{AnyStore, Store};

#[derive(Debug, Args)]
pub struct DoctorArgs {}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Find tenants' rows on a shard other than their own (`--check`, the default) and move them home (`--apply`):
    /// copy what the tenant's shard lacks, verify every row is there, then delete from the wrong shard. Idempotent
    /// and resumable: a run that was stopped is finished by running it again.
    Rebalance {
        /// Only list misplaced rows (exit 1 when there are any).
        #[arg(long, conflicts_with = "apply")]
        check: bool,
        /// Move them.
        #[arg(long)]
        apply: bool,
    },
}

fn clickhouse(store: &AnyStore) -> Option<&ClickHouseStore> {
    match store {
        AnyStore::ClickHouse(ch) => Some(ch),
        AnyStore::Lake(_) => None,
    }
}

pub async fn doctor(path: &Path, _args: DoctorArgs) -> Result<ExitCode> {
    let config = open::config(path)?;
    let store = open::store(&config)?;
    crate::outln!("store: {}", store.describe());
    let Some(ch) = clickhouse(&store) else {
        crate::outln!("embedded lake: no server and no cluster to check");
        return Ok(ExitCode::SUCCESS);
    };
    let Some(status) = ch.cluster_status().await? else {
        let (found, known) = ch.schema_version().await?;
        crate::outln!("single server: answering; schema version {found} (this build: {known})");
        return Ok(ExitCode::SUCCESS);
    };
    let mut healthy = true;
    crate::outln!();
    crate::outln!(
        "{:>5} {:>7}  {:<22} {:<28} {:<10} {:>6} {:>7}  node",
        "shard",
        "replica",
        "address",
        "url",
        "state",
        "queue",
        "lag s"
    );
    for r in &status.replicas {
        let (state, queue, lag, node) = match &r.state {
            ReplicaState::Unreachable(why) => {
                healthy = false;
                ("DOWN".to_owned(), "-".to_owned(), "-".to_owned(), why.clone())
            }
            ReplicaState::Answered { answered, mismatch, queue, delay_secs } => {
                let state = if mismatch.is_some() { "WRONG NODE" } else { "ok" };
                healthy &= mismatch.is_none();
                let node = match mismatch {
                    Some(why) => format!("{}: {why}", answered.describe()),
                    None => answered.describe(),
                };
                (state.to_owned(), queue.to_string(), delay_secs.to_string(), node)
            }
        };
        crate::outln!(
            "{:>5} {:>7}  {:<22} {:<28} {:<10} {:>6} {:>7}  {node}",
            r.replica.shard,
            r.replica.num,
            r.replica.address,
            r.replica.url,
            state,
            queue,
            lag
        );
    }
    if let Some(problem) = &status.problem {
        crate::outln!();
        crate::outln!("REFUSED: {problem}");
        crate::outln!();
        crate::outln!("tenants: not placed (the store does not read or write through a layout it refuses)");
        return Ok(ExitCode::from(1));
    }
    let placement = ch.placement().await?;
    let mut tenants: BTreeSet<String> = config.tenants.iter().map(|t| t.id.as_str().to_owned()).collect();
    tenants.extend(placement.iter().map(|p| p.tenant.clone()));
    crate::outln!();
    crate::outln!("{:<24} {:>10} {:>12} {:>16}", "tenant", "own shard", "rows there", "rows elsewhere");
    for tenant in &tenants {
        let home = match ch.shard_of(tenant).await? {
            Some(shard) => shard.num,
            None => continue,
        };
        let of = |own: bool| -> u64 {
            placement.iter().filter(|p| &p.tenant == tenant && (p.shard == home) == own).map(|p| p.rows).sum()
        };
        let elsewhere = of(false);
        healthy &= elsewhere == 0;
        let note = if elsewhere > 0 { "  <- run `pulse cluster rebalance --apply`" } else { "" };
        crate::outln!("{:<24} {:>10} {:>12} {:>16}{note}", tenant, home, of(true), elsewhere);
    }
    Ok(if healthy { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// The misplaced rows, a line per tenant, table and shard.
fn print_misplaced(misplaced: &[Placement]) {
    let mut by_tenant: BTreeMap<&str, u64> = BTreeMap::new();
    for p in misplaced {
        *by_tenant.entry(&p.tenant).or_default() += p.rows;
        crate::outln!(
            "{:<24} {:<28} on shard {}, belongs on shard {}: {} rows",
            p.tenant,
            p.table,
            p.shard,
            p.home,
            p.rows
        );
    }
    crate::outln!(
        "{} tenant(s), {} rows on a shard other than their own",
        by_tenant.len(),
        by_tenant.values().sum::<u64>()
    );
}

pub async fn run(path: &Path, cmd: ClusterCommand) -> Result<ExitCode> {
    let ClusterCommand::Rebalance { check: _, apply } = cmd;
    let config = open::config(path)?;
    let store = open::store(&config)?;
    let Some(ch) = clickhouse(&store).filter(|ch| ch.is_cluster()) else {
        bail!("{} is not a ClickHouse cluster; set `cluster` in [store.clickhouse] to rebalance one", store.describe());
    };
    let misplaced: Vec<Placement> = ch.placement().await?.into_iter().filter(Placement::misplaced).collect();
    if misplaced.is_empty() {
        crate::outln!("every tenant's rows are on its own shard; nothing to move");
        return Ok(ExitCode::SUCCESS);
    }
    print_misplaced(&misplaced);
    if !apply {
        crate::outln!("run `pulse cluster rebalance --apply` to move them (safe to stop and run again)");
        return Ok(ExitCode::from(1));
    }
    let done = ch
        .rebalance(|step| {
            match step {
                Step::Copied { tenant, table, to, rows } => {
                    crate::errln!("{tenant} {table}: {rows} rows copied to shard {to}")
                }
                Step::Verified { tenant, table, to } => {
                    crate::errln!("{tenant} {table}: every row verified on shard {to}")
                }
                Step::DeleteIssued { .. } => {}
                Step::Deleted { tenant, table, from, rows } => {
                    crate::errln!("{tenant} {table}: {rows} rows removed from shard {from}")
                }
            }
            ControlFlow::Continue(())
        })
        .await?;
    let left: Vec<Placement> = ch.placement().await?.into_iter().filter(Placement::misplaced).collect();
    crate::outln!(
        "moved: {} rows copied to their tenants' shards, {} removed from the wrong ones",
        done.copied,
        done.deleted
    );
    if !left.is_empty() {
        print_misplaced(&left);
        return Ok(ExitCode::from(1));
    }
    crate::outln!("every tenant's rows are on its own shard now");
    Ok(ExitCode::SUCCESS)
}
