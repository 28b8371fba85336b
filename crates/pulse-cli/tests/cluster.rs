//! The whole job on a real ClickHouse cluster (2 shards x 2 replicas and ZooKeeper, from
//! `.ci/clickhouse-cluster.sh`), as an operator runs it: `pulse migrate` ON CLUSTER, `pulse ingest`, `pulse jobs
//! run` twice (the second replaces every report), and every report of both tenants read back equal to the same job
//! on the embedded lake. The tenants sit on different shards (`gamma` on 1, `alpha` on 2).
//!
//! Runs when `PULSE_TEST_CLICKHOUSE_CLUSTER_DIR` is set (CI sets it, and `PULSE_REQUIRE_CLICKHOUSE_CLUSTER=1`, which
//! makes a missing cluster a failure); otherwise it is skipped with a message saying how to run it.

#[path = "../../pulse-store/tests/support/cluster.rs"]
mod cluster;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

fn pulse() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_pulse"));
    c.env_remove("RUST_LOG").env_remove("PULSE_CONFIG");
    c
}

fn run(args: &[&str]) -> String {
    let out: Output = pulse().args(args).output().unwrap();
    let (stdout, stderr) =
        (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
    assert!(out.status.success(), "pulse {args:?} failed:\n{stdout}\n{stderr}");
    stdout
}

const SCENARIO: &str = r#"
[world]
name = "cluster"
seed = 11
api_version = "v2.12"
start = "2017-09-01"
end = "2018-04-30"

[[tenant]]
id = "alpha"
name = "Alpha CCG"
code_prefix = "M83"
practices = 4
facebook_share = 1.0
list_size = [3000, 9000]

[[tenant]]
id = "gamma"
name = "Gamma CCG"
code_prefix = "M84"
practices = 3
facebook_share = 1.0
list_size = [3000, 9000]

[[campaign]]
name = "Stroke video"
kind = "video"
start = "2018-03-10"
days = 2
participation = 0.8
reach_per_page = [500, 900]
video_views_per_reach = 0.6
engaged_share = 0.1
message = "Act FAST #ActFAST"
"#;

/// Starts `pulse sim` writing its config into `dir`; returns the process and the day after the world's data.
fn start_sim(dir: &Path) -> (std::process::Child, String) {
    let scenario = dir.join("scenario.toml");
    std::fs::write(&scenario, SCENARIO).unwrap();
    let mut child = pulse()
        .args(["sim", "--scenario", scenario.to_str().unwrap(), "--port", "0", "--config-out"])
        .arg(dir)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut end = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(data) = line.split("data ").nth(1) {
            end = data.split_once("..").unwrap().1.trim().to_owned();
        }
        if line.starts_with("serving on http://") {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    let end: chrono::NaiveDate = end.parse().unwrap();
    (child, (end + chrono::Duration::days(1)).to_string())
}

const KINDS: [&str; 6] = ["reach", "reach-tenant", "age-bands", "campaigns", "posts", "quality"];

/// Migrate, ingest, compute the reports twice, and read every report of both tenants as CSV.
fn whole_job(config: &Path, today: &str) -> Vec<(String, String)> {
    let config = config.to_str().unwrap();
    run(&["migrate", "--config", config]);
    run(&["ingest", "--config", config, "--today", today, "--since", "2017-09-01"]);
    run(&["jobs", "run", "--config", config]);
    run(&["jobs", "run", "--config", config]);
    let mut out = Vec::new();
    for tenant in ["alpha", "gamma"] {
        for kind in KINDS {
            let csv = run(&["report", kind, "--tenant", tenant, "--format", "csv", "--config", config]);
            out.push((format!("{tenant}/{kind}"), csv));
        }
    }
    out
}

#[test]
fn the_whole_job_on_a_cluster_equals_the_embedded_run() {
    let Some(cluster) = cluster::LocalCluster::from_env() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (mut sim, today) = start_sim(dir.path());
    let lake_config = dir.path().join("pulse.toml");
    let lake_text = std::fs::read_to_string(&lake_config).unwrap();

    let database = format!("pulse_cli_cluster_{}", std::process::id());
    let lake_store = "[store]\nbackend = \"lake\"\nlake_dir = \".\"";
    assert!(lake_text.contains(lake_store), "{lake_text}");
    let mut store = format!(
        "[store]\nbackend = \"clickhouse\"\n\n[store.clickhouse]\nurl = \"{}\"\ndatabase = \"{database}\"\n\
         cluster = \"pulse\"\n\n[store.clickhouse.replica_urls]\n",
        cluster.entry().url
    );
    for node in &cluster.nodes {
        store.push_str(&format!("\"127.0.0.1:{}\" = \"{}\"\n", node.tcp_port, node.url));
    }
    // Beside the lake's config: both read the simulator's token file by the same relative path.
    let cluster_config = dir.path().join("pulse-cluster.toml");
    std::fs::write(&cluster_config, lake_text.replace(lake_store, &store)).unwrap();

    // The DDL the cluster gets: qualified, ON CLUSTER, Replicated local tables behind Distributed ones.
    let sql = run(&["migrate", "--print-sql", "--config", cluster_config.to_str().unwrap()]);
    assert!(sql.contains(&format!("CREATE TABLE IF NOT EXISTS `{database}`.page_insights_local ON CLUSTER `pulse`")));
    assert!(sql.contains("ENGINE = Distributed(`pulse`"), "{sql}");

    let on_lake = whole_job(&lake_config, &today);
    let on_cluster = whole_job(&cluster_config, &today);
    let _ = sim.kill();
    for ((what, lake), (_, clustered)) in on_lake.iter().zip(&on_cluster) {
        assert!(lake.lines().count() > 1 || what.ends_with("quality"), "{what} has rows: {lake}");
        let first = lake.lines().zip(clustered.lines()).find(|(a, b)| a != b);
        assert!(
            lake == clustered,
            "{what} differs between the lake and the cluster ({} vs {} lines); first difference:\n{first:?}",
            lake.lines().count(),
            clustered.lines().count()
        );
    }
    let campaigns = &on_cluster.iter().find(|(w, _)| w == "alpha/campaigns").unwrap().1;
    assert!(campaigns.contains("Stroke video"), "{campaigns}");

    // Each tenant's rows are on its own shard only.
    let count = |shard: u32, table: &str, tenant: &str| -> u64 {
        cluster
            .node(shard, 1)
            .query(&format!("SELECT count() FROM `{database}`.{table}_local WHERE tenant_id = '{tenant}'"))
            .parse()
            .unwrap()
    };
    for table in ["page_insights", "posts", "report_reach_weekly", "ingest_checkpoints"] {
        assert!(count(1, table, "gamma") > 0 && count(1, table, "alpha") == 0, "{table} on shard 1");
        assert!(count(2, table, "alpha") > 0 && count(2, table, "gamma") == 0, "{table} on shard 2");
    }
    // The second `jobs run` replaced every report; the superseded rows are deleted on the shards (a mutation sent
    // ON CLUSTER, so it can take a moment), leaving one version per report and tenant.
    let versions = |shard: u32, tenant: &str| -> u64 {
        cluster
            .node(shard, 2)
            .query(&format!(
                "SELECT uniqExact(version) FROM `{database}`.report_reach_weekly_local WHERE tenant_id = '{tenant}'"
            ))
            .parse()
            .unwrap()
    };
    let mut left = (0, 0);
    for _ in 0..100 {
        left = (versions(1, "gamma"), versions(2, "alpha"));
        if left == (1, 1) {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(left, (1, 1), "superseded report rows deleted on both shards' second replicas");
    operate(&cluster, &database, &cluster_config, &on_cluster);
    cluster.drop_database(&database);
}

/// `pulse` with its output and exit code, whatever the code.
fn attempt(args: &[&str]) -> (i32, String, String) {
    let out: Output = pulse().args(args).output().unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

/// The operator's side of the cluster after the whole job: `pulse doctor` on the layout as configured and on one
/// without `replica_urls` (refused, as every command using it is); then a tenant's rows put on the wrong shard,
/// found by `pulse cluster rebalance --check`, and moved home by `--apply`, killed part-way and run again, after
/// which every report reads as before.
fn operate(cluster: &cluster::LocalCluster, database: &str, config: &Path, reports: &[(String, String)]) {
    let config_arg = config.to_str().unwrap();
    let (code, doctor, _) = attempt(&["doctor", "--config", config_arg]);
    assert_eq!(code, 0, "{doctor}");
    assert_eq!(doctor.lines().filter(|l| l.contains(" ok ")).count(), 4, "{doctor}");
    let tenant_line = |text: &str, t: &str| text.lines().find(|l| l.starts_with(t)).unwrap_or_default().to_owned();
    let alpha: Vec<String> = tenant_line(&doctor, "alpha").split_whitespace().map(str::to_owned).collect();
    assert_eq!((alpha[1].as_str(), alpha[3].as_str()), ("2", "0"), "{doctor}");
    assert!(alpha[2].parse::<u64>().unwrap() > 0, "{doctor}");

    // Without replica_urls every replica resolves to the entry node: refused, by name, with the entries to add.
    let text = std::fs::read_to_string(config).unwrap();
    let unmapped = config.with_file_name("pulse-unmapped.toml");
    let cut = text.find("[store.clickhouse.replica_urls]").unwrap();
    let rest = &text[cut..];
    let end = rest.find("\n\n").map(|i| cut + i).unwrap_or(text.len());
    std::fs::write(&unmapped, format!("{}{}", &text[..cut], &text[end..])).unwrap();
    let unmapped_arg = unmapped.to_str().unwrap();
    let (code, doctor, _) = attempt(&["doctor", "--config", unmapped_arg]);
    assert_eq!(code, 1, "{doctor}");
    assert!(
        doctor.contains("REFUSED") && doctor.contains(&format!("all resolve to {}", cluster.entry().url)),
        "{doctor}"
    );
    let (code, _, err) = attempt(&["report", "reach", "--tenant", "alpha", "--config", unmapped_arg]);
    assert_ne!(code, 0);
    assert!(err.contains("[store.clickhouse.replica_urls]") && err.contains("shard 2 replica 1"), "{err}");

    // alpha (shard 2) written to shard 1, as that layout did before it was refused.
    cluster.misplace(database, "alpha", 2, 1);
    let (code, check, _) = attempt(&["cluster", "rebalance", "--check", "--config", config_arg]);
    assert_eq!(code, 1, "{check}");
    assert!(
        check.contains("alpha") && check.contains("on shard 1, belongs on shard 2") && !check.contains("gamma"),
        "{check}"
    );
    let (code, doctor, _) = attempt(&["doctor", "--config", config_arg]);
    assert_eq!(code, 1, "{doctor}");
    assert!(tenant_line(&doctor, "alpha").contains("rebalance --apply"), "{doctor}");

    // Killed part-way (SIGKILL after it has started moving), then run again to the end.
    let mut child = pulse()
        .args(["cluster", "rebalance", "--apply", "--config", config_arg])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let first = lines.by_ref().map_while(Result::ok).find(|l| l.contains("copied to shard")).unwrap_or_default();
    let _ = child.kill();
    let _ = child.wait();
    assert!(first.contains("alpha"), "the first step was reported: {first}");
    let (code, applied, err) = attempt(&["cluster", "rebalance", "--apply", "--config", config_arg]);
    assert_eq!(code, 0, "{applied}\n{err}");
    assert!(applied.contains("every tenant's rows are on its own shard now"), "{applied}");
    let (code, check, _) = attempt(&["cluster", "rebalance", "--check", "--config", config_arg]);
    assert_eq!((code, check.trim()), (0, "every tenant's rows are on its own shard; nothing to move"));
    cluster.settle(database);
    for (what, before) in reports.iter().filter(|(w, _)| w.starts_with("alpha/")) {
        let kind = what.trim_start_matches("alpha/");
        let now = run(&["report", kind, "--tenant", "alpha", "--format", "csv", "--config", config_arg]);
        assert_eq!(&now, before, "{what} after the rebalance");
    }
}
