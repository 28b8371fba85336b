//! The analyst service links only what it serves: no SMTP client (`lettre`), no PNG rasteriser (`resvg`), no
//! simulator (`pulse-sim`), no digest or daemon code (`pulse-digest`). Asked of Cargo's own dependency graph
//! (`cargo tree`, normal dependencies only: tests may use the simulator), for the server and the rooms it is built on.

use std::process::Command;

fn normal_dependencies(package: &str) -> Vec<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["tree", "--offline", "--locked", "-p", package, "-e", "normal", "--prefix", "none", "--format", "{p}"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo runs");
    assert!(out.status.success(), "cargo tree -p {package}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

#[test]
fn the_server_links_no_mail_rasteriser_simulator_or_daemon() {
    let never = ["lettre", "resvg", "pulse-sim", "pulse-digest", "pulse-demo"];
    for package in ["pulse-server", "pulse-app", "pulse-query", "pulse-export"] {
        let deps = normal_dependencies(package);
        assert!(deps.iter().any(|d| d == package), "cargo tree named no {package}: {deps:?}");
        let linked: Vec<&str> = never.iter().copied().filter(|n| deps.iter().any(|d| d == n)).collect();
        assert!(linked.is_empty(), "{package} links {linked:?}");
    }
    // The check can fail: the scheduler's room does link the mail client and the rasteriser.
    let digest = normal_dependencies("pulse-digest");
    assert!(["lettre", "resvg"].iter().all(|n| digest.iter().any(|d| d == n)), "{digest:?}");
}
