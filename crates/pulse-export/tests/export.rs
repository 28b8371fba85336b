//! Research exports from a real demo world (two tenants, lake): the package validates and reads back with the
//! declared types in Frictionless, pyarrow and DuckDB (`tests/export_check.py`, which also checks the disclosure rule
//! and differencing), pseudonyms are stable within a project and differ across projects, and a tenant analyst cannot
//! export another tenant.
//!
//! The Python checks need `frictionless`, `pyarrow` and `duckdb` (`pip install frictionless pyarrow duckdb`); without
//! them they are skipped with a message, unless `PULSE_REQUIRE_PYTHON_TOOLS=1` (CI sets it).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use pulse_app::error::ErrorKind;
use pulse_export::{self as export, ExportSpec};

fn demo() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    let run = path.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let req = pulse_demo::DemoRequest { dir: run, scenario: "case-study".into(), concurrency: 16 };
            assert_eq!(pulse_demo::run(&req, &mut |_| {}).await.unwrap(), 0);
        });
    })
    .join()
    .unwrap();
    std::fs::write(
        path.join("projects.secrets.toml"),
        "\"a\" = \"key-of-project-a-0001-0123456789abcdef\"\n\"b\" = \"key-of-project-b-0002-0123456789abcdef\"\n\"plain\" = \"key-of-project-plain-0123456789abcdef\"\n",
    )
    .unwrap();
    let mut toml = std::fs::read_to_string(path.join("pulse.toml")).unwrap();
    for (p, pseudonymise) in [("a", true), ("b", true), ("plain", false)] {
        toml.push_str(&format!(
            "\n[[export_project]]\nname = \"{p}\"\nkey = {{ file = \"projects.secrets.toml\", key = \"{p}\" }}\npseudonymise_practices = {pseudonymise}\n"
        ));
    }
    std::fs::write(path.join("pulse.toml"), toml).unwrap();
    (dir, path)
}

fn practices_in(dir: &Path) -> BTreeSet<String> {
    std::fs::read_to_string(dir.join("reach_weekly.csv"))
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(1).unwrap().to_owned())
        .filter(|p| p != "ALL")
        .collect()
}

fn python_tools() -> bool {
    Command::new("python3")
        .args(["-c", "import frictionless, pyarrow, duckdb, highspy"])
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether the package checks can run here; CI requires them.
fn python_tools_or_skip() -> bool {
    if python_tools() {
        return true;
    }
    if std::env::var_os("PULSE_REQUIRE_PYTHON_TOOLS").is_some() {
        panic!("PULSE_REQUIRE_PYTHON_TOOLS is set but frictionless, pyarrow, duckdb or highspy is missing");
    }
    eprintln!("skipped the package checks: `pip install frictionless pyarrow duckdb highspy` to run them");
    false
}

const AUDITOR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/audit/disclosure_audit.py");

/// The disclosure auditor's verdict on a package: (exit code, its JSON result).
fn audit(dir: &Path) -> (i32, serde_json::Value) {
    let out = Command::new("python3").arg(AUDITOR).arg(dir).arg("--json").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let result = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!("auditor output for {}: {e}\n{text}\n{}", dir.display(), String::from_utf8_lossy(&out.stderr))
    });
    (out.status.code().unwrap_or(-1), result)
}

/// Findings of the auditor, as `table.column kind` strings.
fn findings(result: &serde_json::Value) -> BTreeSet<String> {
    result["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            format!(
                "{}.{} {}",
                f["table"].as_str().unwrap(),
                f["column"].as_str().unwrap(),
                f["kind"].as_str().unwrap()
            )
        })
        .collect()
}

/// The auditor finds what a solver recovers from packages made the old way (kept as fixtures): counterfactual +
/// effect giving back the unrounded observed, estimates giving back a suppressed observed, and a practice with two
/// pages repeating the primary key.
#[test]
fn the_auditor_finds_the_recoveries_of_old_packages() {
    if !python_tools_or_skip() {
        return;
    }
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("audit/fixtures");
    let (code, result) = audit(&fixtures.join("campaign-recovery"));
    assert_eq!(code, 1, "{result}");
    let found = findings(&result);
    assert!(
        found.contains("campaigns.observed rounded") && found.contains("campaigns.observed suppressed"),
        "{found:?}"
    );
    let p2 = result["findings"].as_array().unwrap().iter().find(|f| f["practice"] == "P2" && f["table"] == "campaigns");
    assert!(p2.is_some_and(|f| f["values"].as_u64().unwrap() < 7), "{result}");
    let (code, result) = audit(&fixtures.join("two-pages"));
    assert_eq!(code, 1, "{result}");
    assert!(result["invalid"][0]["why"].as_str().unwrap().contains("primary key repeats"), "{result}");
    // An age-band row rounded cell by cell (15 + 15 + * = 25 from 13 + 13 + 1 = 27): the whole row comes back.
    let (code, result) = audit(&fixtures.join("age-rounding"));
    assert_eq!(code, 1, "{result}");
    assert_eq!(
        findings(&result),
        [
            "age_bands.female rounded",
            "age_bands.male rounded",
            "age_bands.people rounded",
            "age_bands.unknown suppressed"
        ]
        .map(String::from)
        .into(),
        "{result}"
    );
    assert!(result["findings"].as_array().unwrap().iter().all(|f| f["values"] == 1), "{result}");
    // A digest whose rate per 1,000 came from the exact count (the public list size gives it back) and whose chart
    // drew an unrounded count.
    let (code, result) = audit(&fixtures.join("digest-exact/week.figures.json"));
    assert_eq!(code, 1, "{result}");
    let whys: Vec<&str> = result["findings"].as_array().unwrap().iter().filter_map(|f| f["why"].as_str()).collect();
    assert!(whys.contains(&"a rate not computed from the published count"), "{result}");
    assert!(whys.contains(&"a count of people shown unrounded"), "{result}");
    let narrowed = result["findings"].as_array().unwrap().iter().find(|f| f["values"].as_u64() == Some(1));
    assert!(narrowed.is_some_and(|f| f["column"] == "engagements of M83007"), "{result}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_is_a_valid_controlled_pseudonymised_package_for_the_callers_tenants_only() {
    let (_keep, dir) = demo();
    let config = pulse_config::load(&dir.join("pulse.toml")).unwrap();
    let store = pulse_app::open::store(&config).unwrap();
    let operator = config.operator_access();
    let out = tempfile::tempdir().unwrap();
    let spec = |project: &str| ExportSpec {
        tenants: vec!["north-staffs".into()],
        from: None,
        to: None,
        project: project.into(),
        purpose: "DSA-2018-042 stroke video evaluation".into(),
        requested_by: "operator".into(),
        tables: vec![],
        campaigns: vec![],
        metrics: vec![],
    };
    let mut said = Vec::new();
    let a1 =
        export::run(&store, &config, &operator, &spec("a"), &out.path().join("a1"), &mut |s| said.push(s.to_owned()))
            .await
            .unwrap();
    assert!(said.iter().any(|s| s.contains("wrote reach_weekly")), "progress is told: {said:?}");
    assert!(a1.rows["reach_weekly"] > 1000 && a1.rows["age_bands"] > 0 && a1.rows["campaigns"] > 0, "{:?}", a1.rows);
    assert!(a1.rows["reach_daily"] > 7 * a1.rows["reach_weekly"] / 2, "days, not weeks: {:?}", a1.rows);
    assert!(a1.suppressed > 0, "the demo world has small age-band counts to suppress");
    let a2 = export::run(&store, &config, &operator, &spec("a"), &out.path().join("a2"), &mut |_| {}).await.unwrap();
    let b = export::run(&store, &config, &operator, &spec("b"), &out.path().join("b"), &mut |_| {}).await.unwrap();
    let (pa1, pa2, pb) = (practices_in(&a1.dir), practices_in(&a2.dir), practices_in(&b.dir));
    assert_eq!(pa1, pa2, "the same project gives the same pseudonyms");
    assert!(pa1.is_disjoint(&pb), "different projects cannot be linked");
    let codes: Vec<String> = config.tenants[0].practices.iter().map(|p| p.code.to_string()).collect();
    let text = std::fs::read_to_string(a1.dir.join("reach_weekly.csv")).unwrap();
    assert!(codes.iter().all(|c| !text.contains(c.as_str())), "no practice code survives pseudonymisation");
    let package = std::fs::read_to_string(a1.dir.join("datapackage.json")).unwrap();
    assert!(!package.contains("key-of-project-a"), "the project key is never in the package");
    assert!(package.contains("DSA-2018-042") && package.contains("spec_hash") && package.contains("ingest_runs"));

    // The audit trail: every export, once, with its files' hashes; the other tenant's analyst sees none of them.
    let log = export::log(&store, &operator, None).await.unwrap();
    assert_eq!(log.len(), 3, "{log:?}");
    assert!(log.iter().any(|r| r.export_id == a1.export_id && r.files.contains(&a1.files[0].1)));
    assert!(log.iter().all(|r| r.purpose.contains("DSA-2018-042") && r.requested_by == "operator" && r.rows > 0));
    assert!(export::log(&store, &operator.analyst("stoke").unwrap(), None).await.unwrap().is_empty());

    // A narrower spec: one table, one campaign, a date range.
    let mut narrow = spec("a");
    narrow.tables = vec!["campaigns".into()];
    narrow.campaigns = vec!["UHNM stroke video".into()];
    narrow.from = Some(chrono::NaiveDate::from_ymd_opt(2018, 1, 1).unwrap());
    let n = export::run(&store, &config, &operator, &narrow, &out.path().join("narrow"), &mut |_| {}).await.unwrap();
    assert_eq!(n.rows.keys().collect::<Vec<_>>(), vec!["campaigns"]);
    assert!(!n.dir.join("reach_weekly.csv").exists());
    let text = std::fs::read_to_string(n.dir.join("campaigns.csv")).unwrap();
    assert!(text.lines().skip(1).all(|l| l.contains("UHNM stroke video")) && text.lines().count() > 1, "{text}");
    // Metrics narrow the reach tables' columns and the campaigns' rows.
    let mut views = spec("a");
    views.tables = vec!["reach_weekly".into(), "campaigns".into()];
    views.metrics = vec!["views".into()];
    let v = export::run(&store, &config, &operator, &views, &out.path().join("views"), &mut |_| {}).await.unwrap();
    let weekly = std::fs::read_to_string(v.dir.join("reach_weekly.csv")).unwrap();
    assert!(weekly.starts_with("tenant_id,practice,week_ending,views\n"), "{}", &weekly[..80]);
    let campaigns = std::fs::read_to_string(v.dir.join("campaigns.csv")).unwrap();
    assert!(campaigns.lines().skip(1).all(|l| l.contains(",views,")), "{campaigns}");
    let mut wrong = spec("a");
    wrong.campaigns = vec!["No such campaign".into()];
    let e = export::run(&store, &config, &operator, &wrong, &out.path().join("w"), &mut |_| {}).await.unwrap_err();
    assert_eq!(e.field.as_deref(), Some("campaigns"), "{e}");

    // Refusals: another tenant for an analyst, an unknown project, no purpose, a non-empty directory.
    let analyst = operator.analyst("stoke").unwrap();
    let e = export::run(&store, &config, &analyst, &spec("a"), &out.path().join("x"), &mut |_| {}).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Forbidden, "{e}");
    assert!(!out.path().join("x").exists(), "nothing is written for a refused export");
    let e =
        export::run(&store, &config, &operator, &spec("nope"), &out.path().join("y"), &mut |_| {}).await.unwrap_err();
    assert!(e.to_string().contains("the projects are a, b"), "{e}");
    let mut no_purpose = spec("a");
    no_purpose.purpose = " ".into();
    assert!(export::run(&store, &config, &operator, &no_purpose, &out.path().join("z"), &mut |_| {}).await.is_err());
    let e = export::run(&store, &config, &operator, &spec("a"), &a1.dir, &mut |_| {}).await.unwrap_err();
    assert!(e.message.contains("not empty"), "{e}");

    // A backwards range, and a range with nothing in it, are refused without writing or auditing anything.
    let audited = export::log(&store, &operator, None).await.unwrap().len();
    let mut backwards = spec("a");
    backwards.from = Some(chrono::NaiveDate::from_ymd_opt(2018, 3, 1).unwrap());
    backwards.to = Some(chrono::NaiveDate::from_ymd_opt(2018, 2, 1).unwrap());
    let e = export::run(&store, &config, &operator, &backwards, &out.path().join("r"), &mut |_| {}).await.unwrap_err();
    assert!(e.message.contains("is after --to"), "{e}");
    let mut future = spec("a");
    future.from = Some(chrono::NaiveDate::from_ymd_opt(2030, 1, 1).unwrap());
    let e = export::run(&store, &config, &operator, &future, &out.path().join("f"), &mut |_| {}).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound, "{e}");
    assert!(!out.path().join("f").exists());
    assert_eq!(export::log(&store, &operator, None).await.unwrap().len(), audited, "nothing audited");

    // A project's tenants bound who may export under it; a short key is refused.
    let mut bound = config.clone();
    bound.export_projects[0].tenants = vec!["stoke".into()];
    let e = export::run(&store, &bound, &operator, &spec("a"), &out.path().join("t"), &mut |_| {}).await.unwrap_err();
    assert!(e.kind == ErrorKind::Forbidden && e.message.contains("not agreed for tenant `north-staffs`"), "{e}");
    std::fs::write(dir.join("projects.secrets.toml"), "\"a\" = \"short-key\"\n\"b\" = \"short\"\n").unwrap();
    let e = export::run(&store, &config, &operator, &spec("a"), &out.path().join("k"), &mut |_| {}).await.unwrap_err();
    assert!(e.message.contains("9 bytes") && e.message.contains("at least 32"), "{e}");

    // The stroke-video month for both tenants: the hard cases the auditor must pass on (pseudonymised practices,
    // several tenants, a one-day campaign window against daily figures).
    let mut month = spec("a");
    month.tenants = vec!["north-staffs".into(), "stoke".into()];
    month.from = Some(chrono::NaiveDate::from_ymd_opt(2018, 2, 26).unwrap());
    month.to = Some(chrono::NaiveDate::from_ymd_opt(2018, 3, 25).unwrap());
    std::fs::write(
        dir.join("projects.secrets.toml"),
        "\"a\" = \"key-of-project-a-0001-0123456789abcdef\"\n\"b\" = \"key-of-project-b-0002-0123456789abcdef\"\n\"plain\" = \"key-of-project-plain-0123456789abcdef\"\n",
    )
    .unwrap();
    let m = export::run(&store, &config, &operator, &month, &out.path().join("month"), &mut |_| {}).await.unwrap();
    let weekly = std::fs::read_to_string(m.dir.join("reach_weekly.csv")).unwrap();
    assert!(
        weekly.lines().skip(1).all(|l| l.split(',').nth(2).unwrap() >= "2018-03-04"),
        "weeks start on or after --from"
    );
    let age = std::fs::read_to_string(m.dir.join("age_bands.csv")).unwrap();
    assert!(!age.lines().next().unwrap().contains("registered"), "list sizes re-identify pseudonymised practices");

    // From the outside, with a researcher's tools.
    if !python_tools_or_skip() {
        return;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/export_check.py");
    for d in [&a1.dir, &b.dir, &v.dir, &m.dir] {
        let status = Command::new("python3").arg(script).arg(d).status().unwrap();
        assert!(status.success(), "package checks failed for {}", d.display());
    }
    let (code, result) = audit(&m.dir);
    assert_eq!(code, 0, "the disclosure audit of {}: {result}", m.dir.display());
    assert!(result["cells_checked"].as_u64().unwrap() > 1000, "{result}");

    // Re-identification against NHS Digital's public registered-patients file, on every published column: the
    // pseudonymised package identifies at most a practice or two; the same spec with codes and list sizes identifies most (the
    // attack has teeth), and its series link every pseudonym (what anyone holding the reports can do).
    let mut plain = month.clone();
    plain.project = "plain".into();
    let p = export::run(&store, &config, &operator, &plain, &out.path().join("plain"), &mut |_| {}).await.unwrap();
    // A year, every table (age bands, and with codes their list sizes, are only in a year's window).
    let mut year = month.clone();
    (year.from, year.to) = (None, None);
    let y = export::run(&store, &config, &operator, &year, &out.path().join("year"), &mut |_| {}).await.unwrap();
    year.project = "plain".into();
    let yp = export::run(&store, &config, &operator, &year, &out.path().join("year-plain"), &mut |_| {}).await.unwrap();
    let attack = |package: &Path, truth: &Path| -> serde_json::Value {
        let out = Command::new("python3")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/audit/reidentify.py"))
            .arg(package)
            .arg(dir.join("gp-reg-pat-prac-quin-age.csv"))
            .arg("--truth")
            .arg(truth)
            .args(["--candidates", dir.join("practices-north-staffs.csv").to_str().unwrap()])
            .args(["--candidates", dir.join("practices-stoke.csv").to_str().unwrap()])
            .arg("--json")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let r = attack(&m.dir, &p.dir);
    let (n, candidates) = (r["practices"].as_u64().unwrap(), r["candidates"].as_u64().unwrap());
    eprintln!(
        "re-identification, pseudonymised: {}",
        serde_json::json!({"identified": r["identified"], "top_guess_right": r["top_guess_right"], "chance": r["chance_top_guess_right"], "median_rank_of_truth": r["median_rank_of_truth"], "of": n, "candidates": candidates})
    );
    assert!(n > 50 && r["linked_through_reports"] == n, "{r}");
    // The size of a practice's reach against its list size is what remains linkable: it singles out one practice of
    // 71 here (README, "Pseudonyms"); a few at most, never most.
    assert!(r["identified"].as_u64().unwrap() <= 2, "{r}");
    assert!(r["top_guess_right"].as_u64().unwrap() <= 3 + n / 10, "no better than a few lucky guesses: {r}");
    // The size narrows the field (the truth's median rank is 17 of 94, chance 47) without naming the practice.
    assert!(r["median_rank_of_truth"].as_u64().unwrap() > candidates / 8, "{r}");
    // Rows in pseudonym order: paired with the sorted codes, the row order gives back no more than chance.
    assert!(r["identified_by_row_order"].as_u64().unwrap() <= 3, "{r}");
    let r = attack(&y.dir, &yp.dir);
    eprintln!(
        "re-identification, a year pseudonymised: {} of {n} identified, best guess right {}",
        r["identified"], r["top_guess_right"]
    );
    assert!(r["columns_used"].as_array().unwrap().contains(&serde_json::json!("age_bands")), "{r}");
    assert_eq!(r["identified"], 0, "{r}");
    assert!(r["top_guess_right"].as_u64().unwrap() <= 3 + n / 10, "{r}");
    assert!(r["identified_by_row_order"].as_u64().unwrap() <= 3, "{r}");
    // With codes the rows are in code order: the attack has teeth.
    assert!(attack(&yp.dir, &yp.dir)["identified_by_row_order"].as_u64().unwrap() > n / 3);
    let r = attack(&yp.dir, &yp.dir);
    eprintln!("re-identification, with codes and list sizes: {} of {n} identified", r["identified"]);
    assert!(
        r["top_guess_right"] == n && r["identified"].as_u64().unwrap() > n / 3,
        "the attack has teeth with list sizes: {r}"
    );
}

/// The hard cases, in a world ingested from the simulator through the configured path: a practice with two pages
/// (another practice's page moved under it in `pulse.toml`) and a campaign of one post on a page-day whose video
/// views are under 8. The package validates (every primary key unique) and passes the disclosure audit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hard_cases_two_pages_and_a_one_post_campaign_pass_the_disclosure_audit() {
    use pulse_domain::{CanonicalMetric, Period};
    use pulse_store::{FactFilter, PostFilter, Store};
    let dir = tempfile::tempdir().unwrap();
    let new_world = || pulse_sim::World::new(pulse_sim::scenario::resolve("case-study").unwrap(), None);
    let world = new_world();
    let sim = std::sync::Arc::new(pulse_sim::Sim::new(new_world(), None));
    let today = sim.today();
    let running = pulse_sim::start(sim, 0).await.unwrap();
    let path = pulse_demo::write_config(&world, dir.path(), Some(&running.url())).unwrap();
    // North Staffordshire's second practice with a page becomes a second page of its first.
    let toml = std::fs::read_to_string(&path).unwrap();
    let tenant = toml.find("id = \"north-staffs\"").unwrap();
    let with_page: Vec<usize> = toml[tenant..]
        .match_indices("[[tenant.practice]]")
        .map(|(i, _)| tenant + i)
        .filter(|i| toml[*i..].split("\n\n").next().unwrap().contains("[[tenant.practice.page]]"))
        .take(2)
        .collect();
    let block = &toml[with_page[1]..];
    let header_end = block.find("[[tenant.practice.page]]").unwrap();
    let first_code = toml[with_page[0]..].lines().nth(1).unwrap().to_owned();
    let moved_code = block.lines().nth(1).unwrap().to_owned();
    // The page block follows the first practice's own page.
    let moved_page = block[header_end..].split("\n\n").next().unwrap().to_owned();
    let mut edited = toml.replacen(&format!("{}{}", &block[..header_end], moved_page), "", 1);
    let first_page_end = edited[with_page[0]..].find("\n\n").unwrap() + with_page[0];
    edited.insert_str(first_page_end, &format!("\n{moved_page}"));
    std::fs::write(&path, &edited).unwrap();
    let config = pulse_config::load(&path).unwrap();
    let ns = config.tenants.iter().find(|t| t.id.as_str() == "north-staffs").unwrap();
    let first = ns.practices.iter().find(|p| first_code.contains(p.code.as_str())).unwrap();
    assert_eq!(first.pages.len(), 2, "{first_code} has two pages now ({moved_code} gave its own)");
    let request = pulse_app::ingest::IngestRequest {
        tenants: vec!["north-staffs".into()],
        since: Some(world.start()),
        today: Some(today),
        concurrency: 8,
        ..Default::default()
    };
    let run = pulse_app::ingest::run(&config, &request, |_| {}).await.unwrap();
    assert_eq!(run.outcome.exit_code(), 0, "{}", run.closing());
    drop(running);

    // A page-day with 1 to 7 video views and a post on it: a campaign of that one post.
    let store = pulse_app::open::store(&config).unwrap();
    let scope = config.operator_access().scope("north-staffs").unwrap();
    let (from, to) = (chrono::NaiveDate::from_ymd_opt(2018, 1, 1).unwrap(), world.end());
    let filter = FactFilter::days(from, to).metrics([CanonicalMetric::PageVideoViews]).periods([Period::Day]);
    let small: BTreeSet<(String, chrono::NaiveDate)> = store
        .read_page_insights(&scope, &filter)
        .await
        .unwrap()
        .into_iter()
        .filter(|f| f.breakdown.is_empty() && (1.0..8.0).contains(&f.value.round()))
        .map(|f| (f.page.to_string(), f.day))
        .collect();
    let posts = store.read_posts(&scope, &PostFilter { from: Some(from), to: Some(to), ..Default::default() }).await;
    let post = posts
        .unwrap()
        .into_iter()
        .find(|p| small.contains(&(p.page.to_string(), p.created_time.date_naive())))
        .expect("a post on a page-day with 1 to 7 video views");
    let day = post.created_time.date_naive();
    let mut toml = std::fs::read_to_string(&path).unwrap();
    toml.insert_str(
        toml.find("[[tenant]]").unwrap(),
        &format!("[[campaign]]\nname = \"One post\"\nstart = \"{day}\"\ndays = 1\nposts = [\"{}\"]\n\n", post.post),
    );
    toml.push_str(
        "\n[[export_project]]\nname = \"hard\"\nkey = { file = \"projects.secrets.toml\", key = \"hard\" }\npseudonymise_practices = false\n",
    );
    std::fs::write(&path, toml).unwrap();
    std::fs::write(dir.path().join("projects.secrets.toml"), "\"hard\" = \"key-of-project-hard-0123456789abcdef\"\n")
        .unwrap();
    let config = pulse_config::load(&path).unwrap();
    let jobs = pulse_app::jobs::JobsRequest { tenants: vec!["north-staffs".into()], ..Default::default() };
    for r in pulse_app::jobs::run_on(&store, &config, &jobs).await.unwrap() {
        assert!(r.problem().is_none(), "{:?}", r.problem());
    }

    // The month around the post, every table.
    let spec = ExportSpec {
        tenants: vec!["north-staffs".into()],
        from: Some(day - chrono::Duration::days(14)),
        to: Some(day + chrono::Duration::days(14)),
        project: "hard".into(),
        purpose: "hard cases".into(),
        ..Default::default()
    };
    let out = tempfile::tempdir().unwrap();
    let p = export::run(&store, &config, &config.operator_access(), &spec, &out.path().join("p"), &mut |_| {})
        .await
        .unwrap();
    let campaigns = std::fs::read_to_string(p.dir.join("campaigns.csv")).unwrap();
    let one: Vec<&str> = campaigns.lines().filter(|l| l.contains("One post") && l.contains("video_views")).collect();
    assert!(!one.is_empty(), "the one-post campaign is in the package:\n{campaigns}");
    // Its few video views are suppressed, or (the post is not a video) not estimated at all: no figure either way.
    let figureless = |l: &str| {
        l.contains("is a video") && !l.split(',').any(|c| c.parse::<f64>().is_ok_and(|x| x != 0.0 && x != 1.0))
    };
    assert!(
        one.iter().all(|l| !l.contains(",ALL,") || l.contains('*') || figureless(l)),
        "its observed video views are suppressed: {one:?}"
    );
    let weekly = std::fs::read_to_string(p.dir.join("reach_weekly.csv")).unwrap();
    let code = first.code.as_str();
    assert!(weekly.contains(&format!(",{code},")), "the two-page practice is in the package");
    if !python_tools_or_skip() {
        return;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/export_check.py");
    let status = Command::new("python3").arg(script).arg(&p.dir).status().unwrap();
    assert!(status.success(), "package checks failed for {}", p.dir.display());
    let (code, result) = audit(&p.dir);
    assert_eq!(code, 0, "the disclosure audit of {}: {result}", p.dir.display());
}
