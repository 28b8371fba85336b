//! The analyst service links only what it serves: no SMTP client (`lettre`), no PNG rasteriser (`resvg`), no
//! simulator (`pulse-sim`), no digest or daemon code (`pulse-digest`). Asked of Cargo's own dependency graph
//! (`cargo tree`, normal dependencies only: tests may use the simulator), for the server and the rooms it is built on.

use std::process::Command;

fn normal_dependencies(package: &str) -> Vec<String> {
    tree(package, "normal", "{p}")
}

/// `cargo tree -p package -e edges --format format`, one line per package.
fn tree(package: &str, edges: &str, format: &str) -> Vec<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["tree", "--offline", "--locked", "-p", package, "-e", edges, "--prefix", "none", "--format", format])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo runs");
    assert!(out.status.success(), "cargo tree -p {package}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect()
}

#[test]
fn the_server_links_no_mail_rasteriser_simulator_or_daemon() {
    let never = ["lettre", "resvg", "pulse-sim", "pulse-digest", "pulse-demo"];
    for package in ["pulse-server", "pulse-app", "pulse-query", "pulse-export"] {
        let deps: Vec<String> = normal_dependencies(package)
            .iter()
            .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
            .collect();
        assert!(deps.iter().any(|d| d == package), "cargo tree named no {package}: {deps:?}");
        let linked: Vec<&str> = never.iter().copied().filter(|n| deps.iter().any(|d| d == n)).collect();
        assert!(linked.is_empty(), "{package} links {linked:?}");
    }
    // The check can fail: the scheduler's room does link the mail client and the rasteriser.
    let digest: Vec<String> = normal_dependencies("pulse-digest")
        .iter()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect();
    assert!(["lettre", "resvg"].iter().all(|n| digest.iter().any(|d| d == n)), "{digest:?}");
}

/// The operator's access (write access to every configured tenant) comes only from a parsed config: `Access::operator`
/// is private to `pulse-config`, and `pulse_config::testing::operator` (which parses a config declaring the given
/// tenants) exists only with the `testing` feature. No normal dependency of any binary or surface enables it; only
/// tests' dev-dependencies do.
#[test]
fn no_surface_links_the_test_only_operator_access() {
    let config_features = |package: &str, edges: &str| -> Vec<String> {
        tree(package, edges, "{p} [{f}]").into_iter().filter(|l| l.starts_with("pulse-config ")).collect()
    };
    for package in
        ["pulse-cli", "pulse-server", "pulse-digest", "pulse-demo", "pulse-app", "pulse-store", "pulse-pipelines"]
    {
        let lines = config_features(package, "normal");
        assert!(!lines.is_empty(), "{package} does not link pulse-config");
        assert!(lines.iter().all(|l| !l.contains("testing")), "{package} links pulse-config with `testing`: {lines:?}");
    }
    // The check can fail: the store's tests do enable it.
    let with_tests = config_features("pulse-store", "normal,dev");
    assert!(with_tests.iter().any(|l| l.contains("testing")), "{with_tests:?}");
}
