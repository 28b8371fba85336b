//! Runs the pipelines job's load and compute (reach, outliers and tenant roll-up, age bands, post performance, data
//! quality, campaign uplift) for every tenant of a lake (the generated national year), straight from Parquet, without
//! writing the report tables, and prints one JSON line: facts loaded, report rows, seconds, peak memory.
//!
//!   pipelines_bench <lake dir> <from> <to> [--campaign 'name|#tag|start|days|share']...

use std::time::Instant;

use chrono::NaiveDate;
use pulse_config::Access;
use pulse_domain::TenantId;
use pulse_pipelines::campaign::{Campaign, Matcher};
use pulse_pipelines::frames;
use pulse_pipelines::jobs::{self, JobInput};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// CPU seconds (user + system, every thread) this process has used: the work done, less swayed than wall-clock time
/// by what else the machine is doing.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return f64::NAN;
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// `pipelines_bench --clickhouse <url> <database> <tenant> <from> <to>`: the time to load one tenant's facts for the
/// range from ClickHouse into a frame (the WHERE on the sort key does the filtering).
fn clickhouse_load(args: &[String]) -> Result<()> {
    use pulse_store::Store;
    use pulse_store::clickhouse::{ClickHouseSettings, ClickHouseStore};
    let (url, database, tenant) = (args[2].clone(), args[3].clone(), args[4].clone());
    let from: NaiveDate = args[5].parse()?;
    let to: NaiveDate = args[6].parse()?;
    let store = ClickHouseStore::new(ClickHouseSettings {
        url,
        database,
        user: "default".into(),
        password: None,
        cluster: None,
        replica_urls: Default::default(),
        zookeeper: None,
    });
    let access = operator([TenantId::new(tenant.clone())?])?;
    let scope = access.scope(&tenant)?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let started = Instant::now();
    let facts = rt.block_on(store.read_page_insights(&scope, &pulse_store::FactFilter::days(from, to)))?;
    let fetched = started.elapsed().as_secs_f64();
    let frame = frames::facts_frame(&facts)?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{{\"tenant\": \"{tenant}\", \"rows\": {}, \"fetch_seconds\": {fetched:.2}, \"seconds\": {secs:.2}, \"peak_rss_mib\": {:.0}}}",
        frame.height(),
        peak_rss_mib()
    );
    Ok(())
}

/// `name|#tag|start|days|share`, as `gen_lake` takes it: the campaign the jobs look for (its video posts with the tag).
fn campaign(spec: &str) -> Result<Campaign> {
    let f: Vec<&str> = spec.split('|').collect();
    if f.len() < 4 {
        return Err(format!("--campaign {spec:?}: expected 'name|#tag|start|days|share'").into());
    }
    Ok(Campaign {
        name: f[0].into(),
        matcher: Matcher::Hashtag(f[1].into()),
        post_type: Some("video".into()),
        start: f[2].parse()?,
        days: f[3].parse()?,
    })
}

/// A ClickHouse store spec: `clickhouse:<url>/<database>` (one server), or `cluster:<dir>/<database>` (the loopback
/// cluster `.ci/clickhouse-cluster.sh` started in `dir`: cluster `pulse`, entered at shard 1's first replica, each
/// replica's HTTP URL by its TCP address from `dir/nodes.tsv`). `None` for another kind of spec.
#[allow(clippy::type_complexity)]
fn clickhouse_spec(
    spec: &str,
) -> Result<Option<(String, String, Option<String>, std::collections::BTreeMap<String, String>)>> {
    if let Some(rest) = spec.strip_prefix("clickhouse:") {
        let (url, database) = rest.rsplit_once('/').ok_or("clickhouse:<url>/<database>")?;
        return Ok(Some((url.into(), database.into(), None, Default::default())));
    }
    let Some(rest) = spec.strip_prefix("cluster:") else { return Ok(None) };
    let (dir, database) = rest.rsplit_once('/').ok_or("cluster:<dir>/<database>")?;
    let nodes = std::fs::read_to_string(std::path::Path::new(dir).join("nodes.tsv"))
        .map_err(|e| format!("{dir}/nodes.tsv: {e} (start the cluster with .ci/clickhouse-cluster.sh)"))?;
    let nodes: Vec<Vec<&str>> = nodes.lines().map(|l| l.split('\t').collect()).collect();
    if nodes.is_empty() || nodes.iter().any(|n| n.len() < 4) {
        return Err(format!("{dir}/nodes.tsv: expected shard, replica, HTTP URL and TCP port per line").into());
    }
    let urls = nodes.iter().map(|n| (format!("127.0.0.1:{}", n[3]), n[2].to_owned())).collect();
    Ok(Some((nodes[0][2].to_owned(), database.into(), Some("pulse".into()), urls)))
}

/// `pipelines_bench --jobs <store> <full|nextday|incremental> <to> [--tenants N] [--campaign ...]`: the jobs as
/// `pulse jobs run` runs them, report tables written, for every tenant (or the first N) of a store (`lake:<dir>`,
/// `clickhouse:<url>/<database>` or `cluster:<dir>/<database>`): `full` recomputes all history to `to`; `nextday` writes the day `to` (a copy of
/// the day before) and re-fetches the three days before it, as a daily ingest with Meta's lookback would;
/// `incremental` updates the reports from the previous run. Prints one JSON line.
fn jobs_bench(args: &[String], campaigns: &[Campaign]) -> Result<()> {
    use pulse_store::Store;
    let (spec, mode) = (&args[2], args[3].as_str());
    // `copy <lake dir>`: every fact, post and post snapshot of the lake's tenants into this store (to measure the
    // jobs on ClickHouse over the same national year).
    let to = if mode == "copy" { NaiveDate::MIN } else { args[4].parse::<NaiveDate>()? };
    let limit: usize = args.get(5).map(|n| n.parse()).transpose()?.unwrap_or(usize::MAX);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let store = if let Some(dir) = spec.strip_prefix("lake:") {
        pulse_store::AnyStore::Lake(pulse_store::lake::LakeStore::open(dir)?)
    } else if let Some((url, database, cluster, replica_urls)) = clickhouse_spec(spec)? {
        let store = pulse_store::clickhouse::ClickHouseStore::new(pulse_store::clickhouse::ClickHouseSettings {
            url,
            database,
            user: "default".into(),
            password: None,
            cluster,
            replica_urls,
            zookeeper: None,
        });
        rt.block_on(store.migrate())?;
        pulse_store::AnyStore::ClickHouse(Box::new(store))
    } else {
        return Err(format!("{spec}: lake:<dir>, clickhouse:<url>/<database> or cluster:<dir>/<database>").into());
    };
    let tenants: Vec<TenantId> =
        (1..=42).map(|i| TenantId::new(format!("icb-{i:02}"))).collect::<std::result::Result<_, _>>()?;
    let access = operator(tenants.into_iter().take(limit))?;
    let started = Instant::now();
    let (mut rows, mut facts, mut changed) = (0usize, 0usize, 0usize);
    let mut phases: std::collections::BTreeMap<&'static str, f64> = Default::default();
    // The jobs run as `pulse jobs run` runs them: incremental ones several tenants at a time, full ones one by one.
    let mut inputs = Vec::new();
    for scope in access.write_scopes() {
        match mode {
            "nextday" => {
                let filter =
                    pulse_store::FactFilter::days(to - chrono::Duration::days(3), to - chrono::Duration::days(1));
                let now = chrono::Utc::now();
                let mut written: Vec<pulse_domain::PageInsightFact> =
                    rt.block_on(store.read_page_insights(&scope, &filter))?;
                let next: Vec<_> = written
                    .iter()
                    .filter(|f| f.day == to - chrono::Duration::days(1))
                    .map(|f| {
                        let mut n = f.clone();
                        n.day = to;
                        n
                    })
                    .collect();
                written.extend(next);
                for f in &mut written {
                    f.fetched_at = now;
                }
                facts += rt.block_on(store.write_page_insights(&scope, &written))?.rows;
                // As a daily ingest does: the posts of the last 28 days re-fetched, and each snapshotted again (its
                // latest snapshot, dated the day before the ingest's today).
                let recent = pulse_store::PostFilter {
                    from: Some(to - chrono::Duration::days(28)),
                    to: Some(to),
                    ..Default::default()
                };
                let mut posts = rt.block_on(store.read_posts(&scope, &recent))?;
                let ids: std::collections::HashSet<String> = posts.iter().map(|p| p.post.as_str().to_owned()).collect();
                posts.iter_mut().for_each(|p| p.fetched_at = now);
                rt.block_on(store.write_posts(&scope, &posts))?;
                let since =
                    pulse_store::PostFilter { from: Some(to - chrono::Duration::days(28)), ..Default::default() };
                let mut latest: std::collections::HashMap<
                    (String, &'static str, String),
                    pulse_domain::PostInsightSnapshot,
                > = Default::default();
                for s in rt.block_on(store.read_post_snapshots(&scope, &since))? {
                    if !ids.contains(s.post.as_str()) {
                        continue;
                    }
                    let key = (s.post.as_str().to_owned(), s.metric.as_str(), s.breakdown.to_string());
                    if latest.get(&key).is_none_or(|l| l.snapshot_day <= s.snapshot_day) {
                        latest.insert(key, s);
                    }
                }
                let snapshots: Vec<_> = latest
                    .into_values()
                    .map(|mut s| {
                        s.snapshot_day = to;
                        s.value *= 1.01;
                        s.fetched_at = now;
                        s
                    })
                    .collect();
                rt.block_on(store.write_post_snapshots(&scope, &snapshots))?;
                rt.block_on(store.settle(&scope))?;
                eprintln!("{}: {} posts and {} snapshots re-fetched", scope.as_str(), posts.len(), snapshots.len());
            }
            "full" | "incremental" => {
                let asked = Instant::now();
                let (from, incremental) = match mode {
                    "full" => (jobs::HISTORY_START, None),
                    _ => match rt.block_on(jobs::incremental_since_previous(&store, &scope, "bench", to))? {
                        Some((from, inc)) => (from, Some(inc)),
                        None => return Err(format!("{scope}: no previous run to update: run `full` first").into()),
                    },
                };
                *phases.entry("changed days").or_default() += asked.elapsed().as_secs_f64();
                changed += incremental.as_ref().map_or(0, |i| i.changed.len());
                let input = JobInput {
                    scope,
                    from,
                    to,
                    campaigns: campaigns.to_vec(),
                    registered: None,
                    variant: pulse_store::ReportVariant::main(),
                    inputs: "bench".into(),
                    incremental,
                    donors: None,
                };
                inputs.push(input);
            }
            "copy" => {
                let lake = pulse_store::lake::LakeStore::open(&args[4])?;
                let read = scope.read().clone();
                let posts = rt.block_on(lake.read_posts(&read, &pulse_store::PostFilter::default()))?;
                rt.block_on(store.write_posts(&scope, &posts))?;
                let snapshots = rt.block_on(lake.read_post_snapshots(&read, &pulse_store::PostFilter::default()))?;
                for chunk in snapshots.chunks(200_000) {
                    rt.block_on(store.write_post_snapshots(&scope, chunk))?;
                }
                // A month at a time, so memory stays small.
                let mut from = NaiveDate::from_ymd_opt(2025, 1, 1).unwrap();
                while from < NaiveDate::from_ymd_opt(2027, 1, 1).unwrap() {
                    let until = from + chrono::Duration::days(30);
                    let filter = pulse_store::FactFilter::days(from, until - chrono::Duration::days(1));
                    let got = rt.block_on(lake.read_page_insights(&read, &filter))?;
                    facts += got.len();
                    for chunk in got.chunks(500_000) {
                        rt.block_on(store.write_page_insights(&scope, chunk))?;
                    }
                    from = until;
                }
                rt.block_on(store.settle(&scope))?;
                eprintln!("{}: copied ({facts} facts so far)", read.as_str());
            }
            other => return Err(format!("mode {other}: full, nextday, incremental or copy").into()),
        }
    }
    for (result, _) in rt.block_on(jobs::run_each(&store, inputs)) {
        let summary = result?;
        facts += summary.facts;
        rows += summary.rows_written.values().sum::<usize>();
        for (phase, secs) in &summary.phases {
            *phases.entry(phase).or_default() += secs;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{{\"mode\": \"{mode}\", \"tenants\": {}, \"concurrency\": {}, \"facts\": {facts}, \"changed_days\": {changed}, \"report_rows_written\": {rows}, \"seconds\": {secs:.2}, \"peak_rss_mib\": {:.0}, \"phases\": {{{}}}}}",
        access.scopes().len(),
        if mode == "incremental" { jobs::incremental_concurrency() } else { 1 },
        peak_rss_mib(),
        phases.iter().map(|(p, s)| format!("\"{p}\": {s:.2}")).collect::<Vec<_>>().join(", ")
    );
    Ok(())
}

fn main() -> Result<()> {
    pulse_pipelines::limit_malloc_arenas();
    let all: Vec<String> = std::env::args().collect();
    if all.get(1).map(String::as_str) == Some("--clickhouse") {
        return clickhouse_load(&all);
    }
    let (mut args, mut campaigns) = (Vec::new(), Vec::new());
    let mut it = all.into_iter();
    while let Some(a) = it.next() {
        if a == "--campaign" {
            campaigns.push(campaign(&it.next().unwrap_or_default())?);
        } else {
            args.push(a);
        }
    }
    if args.get(1).map(String::as_str) == Some("--jobs") {
        return jobs_bench(&args, &campaigns);
    }
    let root = std::path::PathBuf::from(&args[1]);
    let from: NaiveDate = args[2].parse()?;
    let to: NaiveDate = args[3].parse()?;
    let tenants: Vec<TenantId> = std::fs::read_dir(root.join("page_insights"))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name().to_str().and_then(|n| n.strip_prefix("tenant=")).and_then(|t| TenantId::new(t).ok())
        })
        .collect();
    let access = operator(tenants.clone())?;
    let lake = pulse_store::lake::LakeStore::open(&root)?;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let started = Instant::now();
    let cpu_started = cpu_seconds();
    let (mut rows, mut out_rows, mut uplift_rows) = (0usize, 0usize, 0usize);
    // Seconds spent loading and computing, summed over tenants: where the time goes.
    let (mut load_s, mut compute_s) = (0.0, 0.0);
    // The job's own phases, summed over tenants. Phases on different threads overlap (uplift, age bands and posts run
    // beside reach and quality: the `waited for` laps are the time the caller waited for them), so they add up to
    // more than the run.
    let mut phases: std::collections::BTreeMap<String, f64> = Default::default();
    for scope in access.write_scopes() {
        let lap = Instant::now();
        let input = JobInput {
            scope,
            from,
            to,
            campaigns: campaigns.clone(),
            registered: None,
            variant: pulse_store::ReportVariant::main(),
            inputs: String::new(),
            incremental: None,
            donors: None,
        };
        let loaded = rt.block_on(jobs::load(&lake, &input))?;
        rows += loaded.facts.height();
        load_s += lap.elapsed().as_secs_f64();
        let lap = Instant::now();
        let (tables, summary) = jobs::compute(&loaded, from, to, &jobs::Campaigns::all(&campaigns), None)?;
        compute_s += lap.elapsed().as_secs_f64();
        for (phase, secs) in loaded.phases.iter().chain(&summary.phases) {
            *phases.entry((*phase).to_owned()).or_insert(0.0) += secs;
        }
        for (table, df) in &tables {
            out_rows += df.height();
            if table.name == pulse_store::report::CAMPAIGN_UPLIFT.name {
                uplift_rows += df.height();
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let cpu_secs = cpu_seconds() - cpu_started;
    println!(
        "{{\"tenants\": {}, \"campaigns\": {}, \"facts_loaded\": {rows}, \"report_rows\": {out_rows}, \"uplift_rows\": {uplift_rows}, \"seconds\": {secs:.2}, \"cpu_seconds\": {cpu_secs:.2}, \"load_seconds\": {load_s:.2}, \"compute_seconds\": {compute_s:.2}, \"peak_rss_mib\": {:.0}, \"phases\": {{{}}}}}",
        tenants.len(),
        campaigns.len(),
        peak_rss_mib(),
        phases.iter().map(|(p, s)| format!("\"{p}\": {s:.2}")).collect::<Vec<_>>().join(", ")
    );
    Ok(())
}

/// The operator's access over `tenants`, from a config that declares them (a deployment's comes from its
/// `pulse.toml`; there is no other way to get one).
fn operator<T: std::fmt::Display>(tenants: impl IntoIterator<Item = T>) -> Result<Access> {
    use std::fmt::Write;
    let mut text = String::from("[store]\nlake_dir = \"lake\"\n");
    for t in tenants {
        // A valid id has no quote or newline, so nothing else can be written into the config this way.
        let id = pulse_domain::TenantId::new(t.to_string())?;
        let _ = write!(text, "\n[[tenant]]\nid = \"{id}\"\nname = \"{id}\"\n");
    }
    Ok(pulse_config::parse(&text, std::path::Path::new("pulse.toml"))?.operator_access())
}
