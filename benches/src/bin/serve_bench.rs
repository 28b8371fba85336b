//! Latency and throughput of the analyst API's query endpoint under concurrent clients, over a configured store.
//!
//!   serve_bench <pulse.toml> [--clients 100] [--requests 4000] [--clickhouse URL]
//!
//! Serves the config's reports in-process (the lake; with `--clickhouse`, the same report tables copied into a
//! ClickHouse database `pulse_serve_bench` first), creates one read key per tenant, and fires `--requests` tenant-year
//! queries (practice table: reach, engaged users, views, engagement rate, penetration, by practice, over a year)
//! from `--clients` concurrent clients, round-robin over the tenants: with the answer cache on (*cached*), with it
//! off and report slices kept in the service (*uncached*), both warmed with one question per tenant as a server is
//! after a jobs run (that first question's time is recorded), and with both off (*store*: every request read or added
//! up in the store).
//! Then the same query one at a time, for the reference comparison with the engine run directly. Prints one JSON
//! object.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use pulse_app::keys::{KeyScope, Keys};
use pulse_store::{AnyStore, ReportVariant, Store};

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

struct Phase {
    p50: f64,
    p99: f64,
    max: f64,
    rps: f64,
    errors: usize,
}

fn body(tenant: &str, from: &str, to: &str) -> String {
    serde_json::json!({
        "site_id": tenant,
        "metrics": ["gross_reach", "gross_engaged_users", "views", "engagement_rate", "reach_per_1000"],
        "dimensions": ["practice"],
        "date_range": [from, to],
    })
    .to_string()
}

async fn phase(url: &str, keys: &[(String, String)], from: &str, to: &str, clients: usize, requests: usize) -> Phase {
    let client = reqwest::Client::builder().pool_max_idle_per_host(clients).build().expect("client");
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (client, next, keys) = (client.clone(), next.clone(), keys.to_vec());
        let (url, from, to) = (url.to_owned(), from.to_owned(), to.to_owned());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0;
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= requests {
                    break;
                }
                let (tenant, key) = &keys[i % keys.len()];
                let t = Instant::now();
                let resp = client
                    .post(format!("{url}/api/v2/query"))
                    .bearer_auth(key)
                    .header("content-type", "application/json")
                    .body(body(tenant, &from, &to))
                    .send()
                    .await;
                let ok = match resp {
                    Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                    Err(_) => false,
                };
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
                if !ok {
                    errors += 1;
                }
            }
            (lat, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await.expect("client task");
        all.extend(l);
        errors += e;
    }
    let wall = started.elapsed().as_secs_f64();
    all.sort_by(f64::total_cmp);
    Phase {
        p50: percentile(&all, 0.5),
        p99: percentile(&all, 0.99),
        max: all.last().copied().unwrap_or(f64::NAN),
        rps: requests as f64 / wall,
        errors,
    }
}

async fn serve(config: pulse_config::Config, store: AnyStore) -> Result<(String, tokio::sync::oneshot::Sender<()>)> {
    let state = Arc::new(pulse_server::AppState::new(config, store)?);
    let (listener, addr) = pulse_server::bind("127.0.0.1:0").await?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(pulse_server::serve(state, listener, async {
        let _ = rx.await;
    }));
    Ok((format!("http://{addr}"), tx))
}

/// The process's resident memory in MiB (server and clients: the server is in-process).
fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).map(|l| l.to_owned()))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|kb| kb.parse::<f64>().ok()))
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// The amplification attack of issue 22, 1,000 times from 4 clients: a `contains` filter with 100,000 values (the
/// body is over the limit: refused from its length), one with 501 values (refused: at most 500), and the largest
/// query that is allowed (500 values of 200 bytes each, every one different so no answer is cached twice),
/// answered. Latency per kind, and the process's memory after a first 100 such requests (the allocator's working
/// set) and after 1,000 more: growth is what a flood would leave behind.
async fn amplification(url: &str, keys: &[(String, String)], from: &str, to: &str) -> serde_json::Value {
    let client = reqwest::Client::new();
    let before = std::sync::Mutex::new(f64::NAN);
    let mut by_kind: std::collections::BTreeMap<&str, (Vec<f64>, Vec<u16>)> = Default::default();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let worker = || async {
        let mut seen: Vec<(&str, f64, u16)> = Vec::new();
        loop {
            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if i >= 1100 {
                return seen;
            }
            let (tenant, key) = &keys[i % keys.len()];
            let (kind, values): (&str, Vec<String>) = match i % 3 {
                0 => ("100,000 values (over the body limit)", (0..100_000).map(|v| format!("M{v:05}")).collect()),
                1 => ("501 values (over the filter limit)", (0..501).map(|v| format!("M{v:05}")).collect()),
                _ => (
                    "500 values of 200 bytes (the most allowed)",
                    (0..500).map(|v| format!("{i:06}{v:04}{}", "x".repeat(190))).collect(),
                ),
            };
            let body = serde_json::json!({
                "site_id": tenant, "metrics": ["gross_reach", "views"], "dimensions": ["practice"],
                "date_range": [from, to], "filters": [["contains", "practice", values]],
            })
            .to_string();
            let t = Instant::now();
            let status = match client.post(format!("{url}/api/v2/query")).bearer_auth(key).body(body).send().await {
                Ok(r) => {
                    let s = r.status().as_u16();
                    let _ = r.bytes().await;
                    s
                }
                Err(_) => 0,
            };
            if i >= 100 {
                seen.push((kind, t.elapsed().as_secs_f64() * 1000.0, status));
            }
            if i == 99 {
                *before.lock().unwrap() = rss_mib();
            }
        }
    };
    let (a, b, c, d) = tokio::join!(worker(), worker(), worker(), worker());
    let all = [a, b, c, d];
    for (kind, ms, status) in all.into_iter().flatten() {
        let e = by_kind.entry(kind).or_default();
        e.0.push(ms);
        e.1.push(status);
    }
    let after = rss_mib();
    let before = *before.lock().unwrap();
    let mut kinds = serde_json::Map::new();
    for (kind, (mut ms, statuses)) in by_kind {
        ms.sort_by(f64::total_cmp);
        let mut counts = std::collections::BTreeMap::new();
        for s in statuses {
            *counts.entry(s.to_string()).or_insert(0usize) += 1;
        }
        kinds.insert(
            kind.to_owned(),
            serde_json::json!({"p50_ms": percentile(&ms, 0.5), "p99_ms": percentile(&ms, 0.99), "statuses": counts}),
        );
    }
    serde_json::json!({"requests": 1000, "rss_before_mib": before, "rss_after_mib": after, "rss_ratio": after / before, "kinds": kinds})
}

fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned()
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args: Vec<String> = std::env::args().collect();
    let path =
        args.get(1).context("usage: serve_bench <pulse.toml> [--clients N] [--requests N] [--clickhouse URL]")?;
    let clients: usize = flag(&args, "--clients").map_or(Ok(100), |v| v.parse())?;
    let requests: usize = flag(&args, "--requests").map_or(Ok(4000), |v| v.parse())?;
    let mut config = pulse_config::load(std::path::Path::new(path))?;
    let keys_dir = tempfile::tempdir()?;
    config.server.keys_file = keys_dir.path().join("keys.json");
    config.server.rate_limit_per_minute = u32::MAX;
    // The bench measures the server's latency, not a key's fair share: no key waits for its work budget.
    config.server.work_ms_per_minute = u32::MAX;
    let lake = pulse_app::open::store(&config)?;
    let operator = config.operator_access();
    let store = match flag(&args, "--clickhouse") {
        None => lake,
        Some(url) => {
            // The query endpoint reads report tables only: copy them, tenant by tenant, into ClickHouse.
            let ch = AnyStore::ClickHouse(Box::new(pulse_store::clickhouse::ClickHouseStore::new(
                pulse_store::clickhouse::ClickHouseSettings {
                    url,
                    database: "pulse_serve_bench".into(),
                    user: "default".into(),
                    password: None,
                    cluster: None,
                    replica_urls: Default::default(),
                    zookeeper: None,
                },
            )));
            ch.migrate().await?;
            let t = Instant::now();
            for scope in operator.write_scopes() {
                for table in pulse_store::report::ALL {
                    let batch = lake.read_report(scope.read(), table, &ReportVariant::main()).await?;
                    ch.replace_report(&scope, table, &ReportVariant::main(), &batch).await?;
                }
            }
            eprintln!("copied the reports into ClickHouse in {:.1}s", t.elapsed().as_secs_f64());
            ch
        }
    };
    let keys_store = Keys::for_config(&config);
    let mut keys = Vec::new();
    for t in &config.tenants {
        let k = keys_store.create(&config, "bench", &[t.id.to_string()], &[KeyScope::Read], None)?;
        keys.push((t.id.to_string(), k.secret));
    }
    // The year the reports cover, from the first tenant's run record.
    let scope = operator.scopes().into_iter().next().context("no tenants")?;
    let runs = store.read_report(&scope, &pulse_store::report::REPORT_RUNS, &ReportVariant::main()).await?;
    let day = |name: &str| {
        runs.column_by_name(name)
            .and_then(|c| c.as_any().downcast_ref::<arrow::array::Date32Array>().and_then(|a| a.value_as_date(0)))
            .map(|d| d.to_string())
    };
    let (from, to) = (day("range_from").context("no report run")?, day("range_to").context("no report run")?);
    let practices: usize = config.tenants.iter().map(|t| t.practices.len()).sum::<usize>() / config.tenants.len();

    let mut out = serde_json::json!({
        "store": store.describe(), "tenants": config.tenants.len(), "practices_per_tenant": practices,
        "range": [from, to], "clients": clients, "requests": requests,
    });
    for (name, entries, slices_mb) in [("cached", 1000usize, 256usize), ("uncached", 0, 256), ("store", 0, 0)] {
        let mut c = config.clone();
        c.server.cache_entries = entries;
        c.server.report_cache_mb = slices_mb;
        let rss_before = rss_mib();
        let (url, stop) = serve(c, store.clone()).await?;
        // Warmed as a server is after a jobs run: one question per tenant (the answer cache, or the tenant's slice).
        let warm = if entries > 0 || slices_mb > 0 {
            let warm = phase(&url, &keys, &from, &to, 1, keys.len()).await;
            anyhow::ensure!(warm.errors == 0, "warm-up failed");
            Some(warm)
        } else {
            None
        };
        let p = phase(&url, &keys, &from, &to, clients, requests).await;
        let single = phase(&url, &keys, &from, &to, 1, keys.len() * 3).await;
        eprintln!(
            "{name}: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms, {:.0} req/s, {} errors; one client: p50 {:.1} ms",
            p.p50, p.p99, p.max, p.rps, p.errors, single.p50
        );
        out[name] = serde_json::json!({
            "p50_ms": p.p50, "p99_ms": p.p99, "max_ms": p.max, "requests_per_second": p.rps, "errors": p.errors,
            "one_client_p50_ms": single.p50, "one_client_p99_ms": single.p99,
            "rss_before_mib": rss_before, "rss_after_mib": rss_mib(),
        });
        if let Some(w) = warm {
            out[name]["first_p50_ms"] = serde_json::json!(w.p50);
            out[name]["first_max_ms"] = serde_json::json!(w.max);
        }
        if entries > 0 {
            out["amplification"] = amplification(&url, &keys, &from, &to).await;
        }
        let _ = stop.send(());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("{out}");
    Ok(())
}
