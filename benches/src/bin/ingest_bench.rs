//! End-to-end ingest into ClickHouse from the in-process simulator (national scenario), for the ingest
//! benchmarks. Prints one JSON line: rows, seconds, rows/s, requests, peak memory, the database written.
//!
//!   ingest_bench --clickhouse http://127.0.0.1:18123 [--copies 42] [--pages N] [--days 365] [--database db]
//!   ingest_bench --cluster-dir DIR [...]     # the loopback cluster of `.ci/clickhouse-cluster.sh` (cluster `pulse`)

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use pulse_ingest::{GraphClient, IngestOptions, Ingester, PlanOptions};
use pulse_sim::{Sim, World, scenario};
use pulse_store::Store;
use pulse_store::clickhouse::{ClickHouseSettings, ClickHouseStore};

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    // A cluster: the entry node is shard 1 replica 1; each replica's HTTP URL by its TCP address.
    let (url, cluster, replica_urls) = match arg(&args, "--cluster-dir") {
        Some(dir) => {
            let nodes = std::fs::read_to_string(std::path::Path::new(&dir).join("nodes.tsv"))
                .with_context(|| format!("{dir}/nodes.tsv (start the cluster with .ci/clickhouse-cluster.sh)"))?;
            let nodes: Vec<Vec<String>> = nodes.lines().map(|l| l.split('\t').map(str::to_owned).collect()).collect();
            let urls = nodes.iter().map(|n| (format!("127.0.0.1:{}", n[3]), n[2].clone())).collect();
            (nodes[0][2].clone(), Some("pulse".to_owned()), urls)
        }
        None => {
            let url = arg(&args, "--clickhouse").context("--clickhouse URL or --cluster-dir is required")?;
            (url, None, Default::default())
        }
    };
    let copies: u32 = arg(&args, "--copies").map_or(Ok(42), |v| v.parse())?;
    let pages: Option<usize> = arg(&args, "--pages").map(|v| v.parse()).transpose()?;
    let days: i64 = arg(&args, "--days").map_or(Ok(365), |v| v.parse())?;
    let database = arg(&args, "--database").unwrap_or_else(|| format!("pulse_bench_{}", std::process::id()));
    let mut scenario = scenario::resolve("national")?;
    scenario.tenants[0].copies = Some(copies);
    let world = World::new(scenario, None);
    let mut targets = pulse_benches::targets(&world);
    if let Some(n) = pages {
        targets.truncate(n);
    }
    let (version, end) = (world.api_version(), world.end());
    let practices = world.practices.len();
    let sim = Arc::new(Sim::new(world, None));
    let today = sim.today();
    let running = pulse_sim::start(sim, 0).await?;
    let store = ClickHouseStore::new(ClickHouseSettings {
        url,
        database: database.clone(),
        user: "default".into(),
        password: None,
        cluster: cluster.clone(),
        replica_urls,
    });
    store.migrate().await?;
    let mut opts = IngestOptions::new(PlanOptions::backfill(version, today, end - chrono::Duration::days(days - 1)));
    opts.progress = false;
    opts.concurrency = 32;
    opts.per_page = 4;
    opts.flush_rows = 500_000;
    let client = GraphClient::new(&running.url(), version, None, Duration::from_secs(60))?;
    let n_pages = targets.len();
    let started = Instant::now();
    let (report, _) = Ingester::new(store, client, opts).run(targets).await?;
    let secs = started.elapsed().as_secs_f64();
    anyhow::ensure!(report.is_clean(), "{}", report.table());
    println!(
        "{}",
        serde_json::json!({
            "database": database,
            "store": if cluster.is_some() { "cluster (2 shards x 2 replicas)" } else { "single server" },
            "practices": practices,
            "pages": n_pages,
            "days": days,
            "rows": report.rows_written,
            "requests": report.requests,
            "megabytes": report.bytes as f64 / 1e6,
            "seconds": secs,
            "rows_per_second": report.rows_written as f64 / secs,
            "peak_rss_mib": pulse_benches::peak_rss_mib(),
        })
    );
    Ok(())
}
