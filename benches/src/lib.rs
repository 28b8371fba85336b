//! Helpers shared by the benchmark programs: a simulated world's pages as ingest targets.

use pulse_config::Secret;
use pulse_domain::Access;
use pulse_ingest::Target;
use pulse_sim::World;

/// Every page of `world` as an ingest target with its simulator token.
pub fn targets(world: &World) -> Vec<Target> {
    let access = Access::operator(world.tenants.iter().map(|t| t.id.clone()));
    world
        .pages
        .iter()
        .map(|p| {
            let practice = &world.practices[p.practice];
            Target {
                scope: access.write_scope(world.tenants[practice.tenant].id.as_str()).expect("world tenants"),
                practice: practice.code.clone(),
                page: p.id.parse().expect("valid page id"),
                token: Secret::new(p.token.clone()),
            }
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
