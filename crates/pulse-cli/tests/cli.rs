//! The `pulse` binary end to end: config check, migrate, help.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn pulse(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pulse"))
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("PULSE_CONFIG")
        .output()
        .expect("pulse runs")
}

fn text(out: &Output) -> (String, String) {
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/pulse.example.toml")
}

#[test]
fn config_check_passes_on_the_example_and_names_pages_without_tokens() {
    let out = pulse(&["config", "check", "-c", example().to_str().unwrap()]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("valid"));
    assert!(stdout.contains("north-staffs"));
    assert!(stdout.contains("PULSE_TOKEN_M83001"));
    let strict = pulse(&["config", "check", "--strict", "-c", example().to_str().unwrap()]);
    assert_eq!(strict.status.code(), Some(1));
}

#[test]
fn config_check_never_prints_a_token() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tokens.toml"), "M83001 = \"EAAB-top-secret-token\"\n").unwrap();
    std::fs::write(
        dir.path().join("pulse.toml"),
        "[[tenant]]\nid = \"a\"\nname = \"A\"\n[[tenant.practice]]\ncode = \"M83001\"\nname = \"P\"\n[[tenant.practice.page]]\nid = \"1\"\ntoken = { file = \"tokens.toml\", key = \"M83001\" }\n",
    )
    .unwrap();
    let out = pulse(&["config", "check", "-vv", "-c", dir.path().join("pulse.toml").to_str().unwrap()]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(!stdout.contains("EAAB-top-secret-token") && !stderr.contains("EAAB-top-secret-token"));
}

#[test]
fn a_broken_config_points_at_the_line_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pulse.toml");
    std::fs::write(&path, "[graph]\nversion = \"v25.0\"\nbase_ulr = \"http://x\"\n").unwrap();
    let out = pulse(&["config", "check", "-c", path.to_str().unwrap()]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr.contains("pulse.toml:3:1: unknown field `base_ulr`"), "{stderr}");
}

#[test]
fn migrate_twice_on_the_lake_is_a_no_op() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pulse.toml");
    std::fs::write(&path, "[store]\nlake_dir = \"lake\"\n").unwrap();
    let first = pulse(&["migrate", "-c", path.to_str().unwrap()]);
    assert!(first.status.success(), "{:?}", text(&first));
    assert!(text(&first).0.contains("applied lake format 1"));
    let second = pulse(&["migrate", "-c", path.to_str().unwrap()]);
    assert!(text(&second).0.contains("nothing to do"), "{:?}", text(&second));
    assert!(dir.path().join("lake/_pulse_lake.json").exists());
}

#[test]
fn migrate_twice_on_clickhouse_is_a_no_op() {
    let Ok(url) = std::env::var("PULSE_TEST_CLICKHOUSE_URL") else {
        assert!(
            std::env::var("PULSE_REQUIRE_CLICKHOUSE").as_deref() != Ok("1"),
            "PULSE_REQUIRE_CLICKHOUSE=1 but PULSE_TEST_CLICKHOUSE_URL is not set"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pulse.toml");
    let db = format!("pulse_cli_{}", std::process::id());
    std::fs::write(
        &path,
        format!("[store]\nbackend = \"clickhouse\"\n[store.clickhouse]\nurl = \"{url}\"\ndatabase = \"{db}\"\n"),
    )
    .unwrap();
    let first = pulse(&["migrate", "-c", path.to_str().unwrap()]);
    assert!(text(&first).0.contains("applied 0001_core"), "{:?}", text(&first));
    let second = pulse(&["migrate", "-c", path.to_str().unwrap()]);
    assert!(text(&second).0.contains("nothing to do"), "{:?}", text(&second));
    let sql = pulse(&["migrate", "--print-sql", "-c", path.to_str().unwrap()]);
    assert!(text(&sql).0.contains("CREATE TABLE IF NOT EXISTS page_insights"));
}

#[test]
fn an_unreachable_clickhouse_is_named_with_what_to_check() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pulse.toml");
    std::fs::write(&path, "[store]\nbackend = \"clickhouse\"\n[store.clickhouse]\nurl = \"http://127.0.0.1:9\"\n")
        .unwrap();
    let out = pulse(&["migrate", "-c", path.to_str().unwrap()]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr.contains("cannot reach ClickHouse at http://127.0.0.1:9"), "{stderr}");
}

#[test]
fn strict_check_refuses_a_config_with_nothing_to_ingest() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.toml");
    std::fs::write(&empty, "").unwrap();
    let out = pulse(&["config", "check", "--strict", "--config", empty.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{:?}", text(&out));
    assert!(text(&out).1.contains("no tenant is configured"), "{:?}", text(&out));
    let no_practices = dir.path().join("nop.toml");
    std::fs::write(&no_practices, "[[tenant]]\nid = \"a\"\nname = \"A\"\n").unwrap();
    let out = pulse(&["config", "check", "--strict", "--config", no_practices.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{:?}", text(&out));
    assert!(text(&out).1.contains("tenant a has no practices"), "{:?}", text(&out));
    // Without --strict both are valid configs.
    assert!(pulse(&["config", "check", "--config", empty.to_str().unwrap()]).status.success());
}

#[test]
fn a_date_that_does_not_exist_names_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pulse.toml");
    std::fs::write(
        &path,
        "[[tenant]]\nid = \"a\"\nname = \"A\"\n[[tenant.practice]]\ncode = \"M83001\"\nname = \"X\"\n\
         [[campaign]]\nname = \"c\"\nstart = \"2018-02-30\"\ndays = 2\nhashtag = \"#x\"\n",
    )
    .unwrap();
    let out = pulse(&["config", "check", "--config", path.to_str().unwrap()]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("pulse.toml:9:"), "{stderr}");
    assert!(stderr.contains("`start` = \"2018-02-30\" is not a real date (February 2018 has 28 days)"), "{stderr}");
}

#[test]
fn every_subcommand_has_help() {
    for args in [&["--help"][..], &["config", "check", "--help"], &["migrate", "--help"], &["metrics", "--help"]] {
        let out = pulse(args);
        assert!(out.status.success(), "{args:?}");
        assert!(text(&out).0.len() > 100, "{args:?}: {}", text(&out).0);
    }
}

#[test]
fn json_logs_are_json_lines() {
    let Ok(url) = std::env::var("PULSE_TEST_CLICKHOUSE_URL") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pulse.toml");
    let db = format!("pulse_cli_json_{}", std::process::id());
    std::fs::write(
        &path,
        format!("[store]\nbackend = \"clickhouse\"\n[store.clickhouse]\nurl = \"{url}\"\ndatabase = \"{db}\"\n"),
    )
    .unwrap();
    let out = pulse(&["migrate", "--log-format", "json", "-c", path.to_str().unwrap()]);
    let (_, stderr) = text(&out);
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(!lines.is_empty());
    for line in lines {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v.get("level").is_some() && v.get("fields").is_some(), "{line}");
    }
}

/// `config check` summarises mail, digests and lists, and warns when lists exist but the links would point at
/// localhost, or are not https (no one-click unsubscribe), or nothing could be sent.
#[test]
fn config_check_summarises_digests_and_warns_about_links_that_cannot_work() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pulse.toml");
    let list = "[[subscription]]\nname = \"weekly\"\ntenant = \"a\"\nrecipients = [\"x@example.nhs.uk\"]\n\n\
                [[tenant]]\nid = \"a\"\nname = \"A\"\n";
    std::fs::write(&path, list).unwrap();
    let out = pulse(&["config", "check", "--config", path.to_str().unwrap()]);
    let (stdout, _) = text(&out);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("smtp: none"), "{stdout}");
    assert!(stdout.contains("list weekly (tenant a): 1 recipient(s)"), "{stdout}");
    assert!(
        stdout.contains("warning: digest.dashboard_url is http://127.0.0.1:8080 but lists are declared"),
        "{stdout}"
    );
    assert!(stdout.contains("warning: lists are declared but there is no [smtp] section"), "{stdout}");
    assert!(stdout.contains("warning: lists are declared but digest.link_secret is not set"), "{stdout}");
    std::fs::write(
        &path,
        format!(
            "[smtp]\nhost = \"127.0.0.1\"\nport = 2525\nsecurity = \"none\"\nfrom = \"P <d@pulse.example.nhs.uk>\"\n\n\
             [digest]\ndashboard_url = \"http://pulse.example.nhs.uk\"\n\n{list}"
        ),
    )
    .unwrap();
    let (stdout, _) = text(&pulse(&["config", "check", "--config", path.to_str().unwrap()]));
    assert!(stdout.contains("smtp: 127.0.0.1:2525 security none, from P <d@pulse.example.nhs.uk>"), "{stdout}");
    assert!(stdout.contains("is not https: mail clients offer one-click unsubscribe"), "{stdout}");
    assert!(!stdout.contains("but lists are declared: recipients"), "{stdout}");
}

/// The vault and invitation commands: a new key is 64 hex digits and opens a vault; without `[vault]` or
/// `[onboarding]` each command says what to add; an import, status and rotation on the lake never print a token.
#[test]
fn vault_and_invitation_commands_say_what_to_set_up_and_never_print_a_token() {
    let out = pulse(&["vault", "new-key"]);
    let (key, _) = text(&out);
    assert!(out.status.success());
    let key = key.trim().to_owned();
    assert!(key.len() == 64 && key.chars().all(|c| c.is_ascii_hexdigit()), "{key}");
    assert_ne!(key, text(&pulse(&["vault", "new-key"])).0.trim(), "keys are random");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pulse.toml");
    let token = "EAAB-cli-test-page-token-do-not-print";
    std::fs::write(dir.path().join("t.secrets.toml"), format!("\"100000000001\" = \"{token}\"\nvault = \"{key}\"\n"))
        .unwrap();
    let tenants = "[[tenant]]\nid = \"alpha\"\nname = \"Alpha\"\n[[tenant.practice]]\ncode = \"M83001\"\nname = \"One\"\n\
                   [[tenant.practice.page]]\nid = \"100000000001\"\ntoken = { file = \"t.secrets.toml\", key = \"100000000001\" }\n";
    std::fs::write(&path, format!("[store]\nbackend = \"lake\"\nlake_dir = \"lake\"\n\n{tenants}")).unwrap();
    let p = path.to_str().unwrap();
    let out = pulse(&["vault", "import", "-c", p]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).1.contains("no [vault]") && text(&out).1.contains("pulse vault new-key"), "{:?}", text(&out));
    let out = pulse(&["pages", "invite", "--tenant", "alpha", "--practice", "M83001", "-c", p]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).1.contains("invitations are not set up"), "{:?}", text(&out));

    std::fs::write(
        &path,
        format!("[store]\nbackend = \"lake\"\nlake_dir = \"lake\"\n\n[vault]\nkey = {{ file = \"t.secrets.toml\", key = \"vault\" }}\n\n{tenants}"),
    )
    .unwrap();
    assert!(pulse(&["migrate", "-c", p]).status.success());
    for args in [["vault", "import"], ["vault", "status"], ["vault", "rotate"]] {
        let out = pulse(&[args[0], args[1], "-c", p]);
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{args:?}: {stdout} {stderr}");
        assert!(
            !stdout.contains(token) && !stderr.contains(token) && !stdout.contains(&key),
            "{args:?} printed a secret"
        );
        if args[1] == "import" {
            assert!(stdout.contains("1 sealed"), "{stdout}");
        }
        if args[1] == "status" {
            assert!(stdout.contains("100000000001") && stdout.contains("vault (key "), "{stdout}");
        }
    }
}

/// `pulse campaign plan` on the case-study demo: the plan's figures hold together, the same question gives the same
/// answer, and each wrong input says what to use instead.
#[test]
fn campaign_plan_answers_from_the_tenants_history_and_refuses_what_it_cannot_plan() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("demo");
    let out = pulse(&["demo", "--dir", lake.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out).1);
    let config = lake.join("pulse.toml");
    let config = config.to_str().unwrap();
    let plan_args = |extra: &[&str]| {
        let mut a = vec!["--config", config, "campaign", "plan", "--tenant", "north-staffs", "--start", "2018-03-10"];
        a.extend_from_slice(extra);
        a.iter().map(|s| (*s).to_owned()).collect::<Vec<String>>()
    };
    let run = |extra: &[&str]| {
        let args = plan_args(extra);
        pulse(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let asked = ["--days", "2", "--share", "0.67", "--metric", "views", "--target", "20000", "--json"];
    let out = run(&asked);
    assert!(out.status.success(), "{}", text(&out).1);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let plan = &v["plan"];
    let pages = plan["pages"].as_u64().unwrap();
    // The tenant's own pages only (the demo's other tenant has its own).
    assert_eq!(pages, 31, "{v}");
    assert_eq!(plan["participants"].as_u64().unwrap(), (0.67 * pages as f64).round() as u64);
    let (mde, baseline) = (plan["mde"].as_f64().unwrap(), plan["baseline"].as_f64().unwrap());
    assert!(mde > 0.0 && baseline > mde / 10.0, "{v}");
    assert!(plan["level"].as_f64().unwrap() >= 0.95 && plan["placebos"].as_u64().unwrap() >= 39, "{v}");
    // Every duration and share compared, each expecting the target's effect per participating page and day.
    let options = v["options"].as_array().unwrap();
    assert_eq!(options.len(), 5 * 4, "{v}");
    let per_page_day = 20000.0 / (plan["participants"].as_f64().unwrap() * 2.0);
    for o in options {
        let want = per_page_day * o["participants"].as_f64().unwrap() * o["days"].as_f64().unwrap();
        assert!((o["expected"].as_f64().unwrap() - want).abs() < 1e-6, "{o}");
        assert_eq!(o["detected"].as_bool().unwrap(), o["expected"].as_f64().unwrap() >= o["mde"].as_f64().unwrap());
    }
    // A longer campaign on more pages adds more noise to its total: its MDE is larger, and so is what it adds.
    let mde_of = |days: u64, share: f64| {
        options.iter().find(|o| o["days"] == days && o["share"] == share).unwrap()["mde"].as_f64().unwrap()
    };
    assert!(mde_of(14, 1.0) > mde_of(1, 0.25), "{v}");
    // What is needed is the smallest option that detects the effect.
    let needed = &v["needed"];
    assert!(needed["detected"].as_bool().unwrap(), "{v}");
    let size = |o: &serde_json::Value| o["participants"].as_u64().unwrap() * o["days"].as_u64().unwrap();
    assert!(options.iter().filter(|o| o["detected"].as_bool().unwrap()).all(|o| size(o) >= size(needed)), "{v}");
    // The same question, the same answer (the draws of participating pages are seeded by tenant and start).
    assert_eq!(run(&asked).stdout, out.stdout);
    // For a person: the MDE, the power and the table.
    let out = run(&["--target", "20000"]);
    let (stdout, _) = text(&out);
    assert!(stdout.contains("Minimum detectable effect:") && stdout.contains("80% of the time"), "{stdout}");
    assert!(stdout.contains("of pages") && stdout.contains("Needed:"), "{stdout}");
    // Wrong input: each names what to use instead.
    for (extra, says) in [
        (&["--metric", "likes"][..], "use one of views, reach, engagements, video_views"),
        (&["--share", "0"][..], "must be a share of the pages above 0 and at most 1"),
        (&["--days", "40"][..], "must be from 1 to 28"),
        (&["--target=0"][..], "target must be a positive effect"),
    ] {
        let out = run(extra);
        assert_eq!(out.status.code(), Some(2), "{extra:?}");
        assert!(text(&out).1.contains(says), "{extra:?}: {}", text(&out).1);
    }
    let out = pulse(&["--config", config, "campaign", "plan", "--tenant", "nowhere", "--start", "2018-03-10"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).1.contains("nowhere"), "{}", text(&out).1);
    // Before the history is long enough for a fit and its placebo windows.
    let out = pulse(&["--config", config, "campaign", "plan", "--tenant", "north-staffs", "--start", "2017-02-01"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).1.contains("pulse ingest") || text(&out).1.contains("too short"), "{}", text(&out).1);
}
