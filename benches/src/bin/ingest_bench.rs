//! End-to-end ingest into ClickHouse from the simulator (national scenario), for the ingest benchmarks. Prints one
//! JSON line: rows, seconds, rows/s, requests, peak memory, the database written.
//!
//!   ingest_bench --clickhouse http://127.0.0.1:18123 [--copies 42] [--pages N] [--days 365] [--database db]
//!                [--graph inprocess|process|replay] [--flush-rows 500000] [--then-daily] [--server-pid PID]
//!   ingest_bench --cluster-dir DIR [...]     # the loopback cluster of `.ci/clickhouse-cluster.sh` (cluster `pulse`)
//!   ingest_bench --lake DIR [...]            # the embedded lake
//!
//! `--graph`: the simulator in this process (the default), in a child process (`process`: peak memory is then the
//! ingester's alone), or a child replaying recorded responses from memory (`replay`: a first pass into a scratch
//! database records them, the measured pass is served from memory, so the simulator's work is not in the time).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use pulse_benches::graph::{GraphProcess, Mode, serve_child};
use pulse_ingest::{GraphClient, IngestOptions, Ingester, PlanOptions};
use pulse_sim::{Sim, World};
use pulse_store::AnyStore;
use pulse_store::Store;
use pulse_store::clickhouse::{ClickHouseSettings, ClickHouseStore};
use pulse_store::lake::LakeStore;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--serve-graph") {
        let mode = if args.iter().any(|a| a == "--replay") { Mode::Replay } else { Mode::Simulate };
        let copies: u32 = arg(&args, "--copies").map_or(Ok(42), |v| v.parse())?;
        let pages: Option<usize> = arg(&args, "--pages").map(|v| v.parse()).transpose()?;
        return serve_child(mode, copies, pages).await;
    }
    // A cluster: the entry node is shard 1 replica 1; each replica's HTTP URL by its TCP address.
    let (url, cluster, replica_urls) = match arg(&args, "--cluster-dir") {
        Some(dir) => {
            let nodes = std::fs::read_to_string(std::path::Path::new(&dir).join("nodes.tsv"))
                .with_context(|| format!("{dir}/nodes.tsv (start the cluster with .ci/clickhouse-cluster.sh)"))?;
            let nodes: Vec<Vec<String>> = nodes.lines().map(|l| l.split('\t').map(str::to_owned).collect()).collect();
            let urls: std::collections::BTreeMap<String, String> =
                nodes.iter().map(|n| (format!("127.0.0.1:{}", n[3]), n[2].clone())).collect();
            (nodes[0][2].clone(), Some("pulse".to_owned()), urls)
        }
        None => {
            let url = match (arg(&args, "--clickhouse"), arg(&args, "--lake")) {
                (Some(url), _) => url,
                (None, Some(_)) => String::new(),
                (None, None) => anyhow::bail!("--clickhouse URL, --cluster-dir DIR or --lake DIR is required"),
            };
            (url, None, Default::default())
        }
    };
    let copies: u32 = arg(&args, "--copies").map_or(Ok(42), |v| v.parse())?;
    let pages: Option<usize> = arg(&args, "--pages").map(|v| v.parse()).transpose()?;
    let days: i64 = arg(&args, "--days").map_or(Ok(365), |v| v.parse())?;
    let database = arg(&args, "--database").unwrap_or_else(|| format!("pulse_bench_{}", std::process::id()));
    let graph = arg(&args, "--graph").unwrap_or_else(|| "inprocess".into());
    let flush_rows: usize = arg(&args, "--flush-rows").map_or(Ok(500_000), |v| v.parse())?;
    // The Graph API: in this process, or in a child (simulating or replaying).
    let (graph_url, version, today, end, practices, targets, _inprocess, child) = match graph.as_str() {
        "inprocess" => {
            let world = World::new(pulse_benches::national_scenario(copies)?, None);
            let mut targets = pulse_benches::targets(&world);
            if let Some(n) = pages {
                targets.truncate(n);
            }
            let (version, end) = (world.api_version(), world.end());
            let practices = world.practices.len();
            let sim = Arc::new(Sim::new(world, None));
            let today = sim.today();
            let running = pulse_sim::start(sim, 0).await?;
            (running.url(), version, today, end, practices, targets, Some(running), None)
        }
        "process" | "replay" => {
            let mode = if graph == "replay" { Mode::Replay } else { Mode::Simulate };
            let mut child = GraphProcess::spawn(mode, copies, pages)?;
            let targets = std::mem::take(&mut child.targets);
            (child.url.clone(), child.version, child.today, child.end, child.practices, targets, None, Some(child))
        }
        other => anyhow::bail!("--graph {other}: expected inprocess, process or replay"),
    };
    let settings = |database: String| ClickHouseSettings {
        url: url.clone(),
        database,
        user: "default".into(),
        password: None,
        cluster: cluster.clone(),
        replica_urls: replica_urls.clone(),
        zookeeper: None,
    };
    // `--lake DIR`: the embedded lake instead of ClickHouse.
    let lake = arg(&args, "--lake");
    let store = match &lake {
        Some(dir) => AnyStore::Lake(LakeStore::open(dir)?),
        None => AnyStore::ClickHouse(Box::new(ClickHouseStore::new(settings(database.clone())))),
    };
    anyhow::ensure!(lake.is_none() || graph != "replay", "--graph replay records into ClickHouse: not with --lake");
    store.migrate().await?;
    // `--then-daily`: the backfill stops a day short, and a second run (the next day's incremental) follows it.
    let then_daily = args.iter().any(|a| a == "--then-daily");
    let backfill_today = if then_daily { today - chrono::Duration::days(1) } else { today };
    let options_for = |today| {
        let mut opts =
            IngestOptions::new(PlanOptions::backfill(version, today, end - chrono::Duration::days(days - 1)));
        opts.progress = false;
        opts.concurrency = 32;
        opts.per_page = 4;
        opts.flush_rows = flush_rows;
        opts
    };
    let options = || options_for(backfill_today);
    let client = GraphClient::new(&graph_url, version, None, Duration::from_secs(60))?;
    let n_pages = targets.len();
    if graph == "replay" {
        // The recording pass, into a scratch database that is dropped afterwards.
        let scratch = ClickHouseStore::new(settings(format!("{database}_recording")));
        scratch.migrate().await?;
        let (report, _) = Ingester::new(scratch, client.clone(), options()).run(targets.clone()).await?;
        anyhow::ensure!(report.is_clean(), "{}", report.table());
        let http = reqwest::Client::new();
        http.post(&url).body(format!("DROP DATABASE {database}_recording")).send().await?.error_for_status()?;
        // The recording pass's background merges must not run into the measured pass: wait until none is left.
        for _ in 0..600 {
            let merges = http.post(&url).body("SELECT count() FROM system.merges").send().await?.text().await?;
            if merges.trim() == "0" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let before = match &child {
        Some(c) => Some(c.stats().await?),
        None => None,
    };
    // `--server-pid`: the ClickHouse server's process, whose CPU time during the measured pass is reported too.
    let server_pid = arg(&args, "--server-pid");
    let server_cpu = || server_pid.as_deref().and_then(pulse_benches::process_cpu_seconds);
    let (started, cpu_before, server_before) = (Instant::now(), pulse_benches::cpu_seconds(), server_cpu());
    let (report, _) = Ingester::new(store.clone(), client.clone(), options()).run(targets.clone()).await?;
    let secs = started.elapsed().as_secs_f64();
    let cpu = pulse_benches::cpu_seconds().zip(cpu_before).map(|(after, before)| after - before);
    let server_cpu = server_cpu().zip(server_before).map(|(after, before)| after - before);
    anyhow::ensure!(report.is_clean(), "{}", report.table());
    let graph_stats = match &child {
        Some(c) => Some(c.stats().await?),
        None => None,
    };
    let mut graph_cpu = None;
    if let (Some(before), Some(after)) = (&before, &graph_stats) {
        // Every response of the measured pass came from memory.
        anyhow::ensure!(
            graph != "replay" || after["misses"] == before["misses"],
            "replay missed: {before} then {after}"
        );
        graph_cpu = after["cpu_seconds"].as_f64().zip(before["cpu_seconds"].as_f64()).map(|(a, b)| a - b);
    }
    let daily = if then_daily {
        let (daily, _) = Ingester::new(store, client, options_for(today)).run(targets).await?;
        anyhow::ensure!(daily.is_clean(), "{}", daily.table());
        Some(serde_json::json!({"requests": daily.requests, "rows": daily.rows_written}))
    } else {
        None
    };
    println!(
        "{}",
        serde_json::json!({
            "database": database,
            "store": if lake.is_some() { "lake" } else if cluster.is_some() { "cluster (2 shards x 2 replicas)" } else { "single server" },
            "practices": practices,
            "pages": n_pages,
            "days": days,
            "rows": report.rows_written,
            "requests": report.requests,
            "throttled_seconds": report.practices.iter().map(|p| p.record.throttled_ms).sum::<u64>() as f64 / 1000.0,
            "megabytes": report.bytes as f64 / 1e6,
            "seconds": secs,
            "ingester_cpu_seconds": cpu,
            "clickhouse_cpu_seconds": server_cpu,
            "graph_cpu_seconds": graph_cpu,
            "rows_per_second": report.rows_written as f64 / secs,
            "graph": graph,
            "peak_rss_mib": pulse_benches::peak_rss_mib(),
            "graph_process": graph_stats,
            "daily": daily,
        })
    );
    Ok(())
}
