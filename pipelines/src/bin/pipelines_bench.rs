//! Runs the pipelines job's load and compute (reach, outliers and tenant roll-up, age bands, post performance, data
//! quality, campaign uplift) for every tenant of a lake (the generated national year), straight from Parquet, without
//! writing the report tables, and prints one JSON line: facts loaded, report rows, seconds, peak memory.
//!
//!   pipelines_bench <lake dir> <from> <to> [--campaign 'name|#tag|start|days|share']...

use std::time::Instant;

use chrono::NaiveDate;
use pulse_domain::{Access, TenantId};
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
    });
    let access = Access::operator([TenantId::new(tenant.clone())?]);
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
    let root = std::path::PathBuf::from(&args[1]);
    let from: NaiveDate = args[2].parse()?;
    let to: NaiveDate = args[3].parse()?;
    let tenants: Vec<TenantId> = std::fs::read_dir(root.join("page_insights"))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name().to_str().and_then(|n| n.strip_prefix("tenant=")).and_then(|t| TenantId::new(t).ok())
        })
        .collect();
    let access = Access::operator(tenants.clone());
    let lake = pulse_store::lake::LakeStore::open(&root)?;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let started = Instant::now();
    let (mut rows, mut out_rows, mut uplift_rows) = (0usize, 0usize, 0usize);
    // Seconds spent loading and computing, summed over tenants: where the time goes.
    let (mut load_s, mut compute_s) = (0.0, 0.0);
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
        };
        let loaded = rt.block_on(jobs::load(&lake, &input))?;
        rows += loaded.facts.height();
        load_s += lap.elapsed().as_secs_f64();
        let lap = Instant::now();
        let (tables, _) = jobs::compute(&loaded, from, to, &jobs::Campaigns::all(&campaigns), None)?;
        compute_s += lap.elapsed().as_secs_f64();
        for (table, df) in &tables {
            out_rows += df.height();
            if table.name == pulse_store::report::CAMPAIGN_UPLIFT.name {
                uplift_rows += df.height();
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{{\"tenants\": {}, \"campaigns\": {}, \"facts_loaded\": {rows}, \"report_rows\": {out_rows}, \"uplift_rows\": {uplift_rows}, \"seconds\": {secs:.2}, \"load_seconds\": {load_s:.2}, \"compute_seconds\": {compute_s:.2}, \"peak_rss_mib\": {:.0}}}",
        tenants.len(),
        campaigns.len(),
        peak_rss_mib()
    );
    Ok(())
}
