//! Helpers shared by the benchmark programs: a simulated world's pages as ingest targets.

use pulse_config::Secret;
use pulse_domain::Access;
use pulse_ingest::Target;
use pulse_sim::World;

/// Every page of `world` as an ingest target with its simulator token.
pub fn targets(world: &World) -> Vec<Target> {
    let access = Access::operator(world.tenant_ids());
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
