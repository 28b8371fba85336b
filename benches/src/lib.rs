//! Helpers shared by the benchmark programs: a simulated world's pages as ingest targets, the Graph API in a process
//! of its own ([`graph`]).

pub mod graph;

use pulse_config::Access;
use pulse_config::Secret;
use pulse_ingest::Target;
use pulse_sim::World;

/// The national scenario with `copies` ICBs, for the ingest benchmarks. The simulator's nominal app-level usage
/// (4,800 calls a minute across all pages) is raised out of the way: a benchmark measures the ingester, and Meta does
/// not apply an app-level limit to page tokens (each page has its own quota, which a backfill uses a fraction of;
/// see `results/national-backfill.md`). The ingester still reads and obeys the usage headers.
pub fn national_scenario(copies: u32) -> anyhow::Result<pulse_sim::Scenario> {
    let mut scenario = pulse_sim::scenario::resolve("national")?;
    scenario.tenants[0].copies = Some(copies);
    scenario.faults.app_budget = Some(100_000_000);
    Ok(scenario)
}

/// Every page of `world` as an ingest target with its simulator token.
pub fn targets(world: &World) -> Vec<Target> {
    let access = operator(world.tenant_ids()).expect("the world's tenants are valid ids");
    world
        .page_logins()
        .into_iter()
        .map(|l| {
            Target::new(&access, l.tenant.as_str(), l.practice, &l.page, Secret::new(l.token)).expect("world pages")
        })
        .collect()
}

/// Peak resident memory of this process so far, in MiB (Linux).
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// CPU time (user + system) this process has used so far, in seconds (Linux).
pub fn cpu_seconds() -> Option<f64> {
    process_cpu_seconds("self")
}

/// CPU time (user + system) process `pid` (or `self`) has used so far, in seconds (Linux).
pub fn process_cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which is in parentheses and may contain spaces): utime and stime are 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// The operator's access over `tenants`, from a config that declares them (a deployment's comes from its
/// `pulse.toml`; there is no other way to get one).
pub fn operator<T: std::fmt::Display>(tenants: impl IntoIterator<Item = T>) -> anyhow::Result<Access> {
    use std::fmt::Write;
    let mut text = String::from("[store]\nlake_dir = \"lake\"\n");
    for t in tenants {
        // A valid id has no quote or newline, so nothing else can be written into the config this way.
        let id = pulse_domain::TenantId::new(t.to_string())?;
        let _ = write!(text, "\n[[tenant]]\nid = \"{id}\"\nname = \"{id}\"\n");
    }
    Ok(pulse_config::parse(&text, std::path::Path::new("pulse.toml"))?.operator_access())
}
