//! Runs the reach, age-band and data-quality pipelines over every tenant of a lake (the generated national year),
//! straight from Parquet, and prints one JSON line: rows scanned, seconds, peak memory.
//!
//!   pipelines_bench <lake dir> <from> <to>

use std::time::Instant;

use chrono::NaiveDate;
use pulse_domain::{Access, TenantId};
use pulse_pipelines::{age_bands, frames, quality, reach};

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

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--clickhouse") {
        return clickhouse_load(&args);
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
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let mut wanted: Vec<_> = reach::WANTED.to_vec();
    wanted.extend(age_bands::WANTED.iter().copied());
    wanted.extend(quality::WANTED.iter().copied());
    let started = Instant::now();
    let mut rows = 0usize;
    let mut out_rows = 0usize;
    for scope in access.scopes() {
        let files = rt
            .block_on(pulse_store::Store::fact_files(&lake, &scope, &pulse_store::FactFilter::days(from, to)))?
            .unwrap_or_default();
        let facts = frames::scan_fact_files(&files, &wanted, from, to)?.collect()?;
        rows += facts.height();
        let weekly = reach::weekly(&facts, from, to)?;
        let tenant_weekly = reach::tenant_weekly(&weekly)?;
        let (ages, _) = age_bands::age_bands(&facts, &[], None, to)?;
        let q = quality::quality(&facts, &[], from, to)?;
        out_rows += weekly.height() + tenant_weekly.height() + ages.height() + q.height();
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{{\"tenants\": {}, \"rows_scanned\": {rows}, \"report_rows\": {out_rows}, \"seconds\": {secs:.2}, \"peak_rss_mib\": {:.0}}}",
        tenants.len(),
        peak_rss_mib()
    );
    Ok(())
}
