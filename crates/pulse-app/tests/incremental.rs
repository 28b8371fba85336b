//! Reports keep all history, and the daily run after a daily ingest recomputes only what changed: its reports equal
//! a full recompute's, table by table, row by row.

use pulse_app::jobs::{JobsRequest, TenantJob, run_on};
use pulse_store::report::{REACH_TENANT_WEEKLY, REPORT_RUNS};
use pulse_store::{ReportTable, ReportVariant, Store};

/// Every report table but the run record (which names its run and time).
fn tables() -> impl Iterator<Item = &'static ReportTable> {
    pulse_store::report::ALL.iter().copied().filter(|t| t.name != REPORT_RUNS.name)
}

fn modes(results: &[TenantJob]) -> Vec<String> {
    results
        .iter()
        .map(|r| match r {
            TenantJob::Done { summary, .. } => summary.mode.clone(),
            other => panic!("{:?}", other.problem()),
        })
        .collect()
}

/// Every row of a table as text, in the order written.
async fn rows<S: Store>(
    store: &S,
    scope: &pulse_config::TenantScope,
    table: &'static ReportTable,
    variant: &ReportVariant,
) -> Vec<String> {
    let batch = store.read_report(scope, table, variant).await.unwrap();
    let options = arrow::util::display::FormatOptions::default().with_null("null");
    let formatters: Vec<_> = batch
        .columns()
        .iter()
        .map(|c| arrow::util::display::ArrayFormatter::try_new(c.as_ref(), &options).unwrap())
        .collect();
    (0..batch.num_rows())
        .map(|i| formatters.iter().map(|f| f.value(i).to_string()).collect::<Vec<_>>().join("|"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daily_run_recomputes_what_changed_and_equals_a_full_recompute() {
    daily_runs_equal_a_full_recompute(None).await;
}

/// The same on ClickHouse, where a run reads and replaces the reports from a month on inside the server. Runs when
/// `PULSE_TEST_CLICKHOUSE_URL` is set (CI); with `PULSE_REQUIRE_CLICKHOUSE=1` a missing server fails it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_clickhouse_the_daily_run_equals_a_full_recompute() {
    let Some(url) = pulse_config::testing::clickhouse_url("incremental jobs on ClickHouse") else {
        return;
    };
    let db = format!("pulse_incremental_{}", std::process::id());
    daily_runs_equal_a_full_recompute(Some(format!(
        "[store]\nbackend = \"clickhouse\"\n[store.clickhouse]\nurl = \"{url}\"\ndatabase = \"{db}\"\n"
    )))
    .await;
    let _ = std::process::Command::new("curl")
        .args(["-fsS", &url, "--data-binary", &format!("DROP DATABASE {db}")])
        .output();
}

/// Sleeps until the wall clock's next whole second.
async fn next_whole_second() {
    let into = chrono::Utc::now().timestamp_subsec_micros();
    tokio::time::sleep(std::time::Duration::from_micros(u64::from(1_000_000 - into.min(999_999)))).await;
}

/// The case study's world served by the simulator, and a demo config over it in `dir`: on the lake, or on the store
/// `store` (a `[store]` section), migrated.
async fn case_study(
    dir: &std::path::Path,
    store: Option<&str>,
) -> (pulse_sim::World, pulse_sim::RunningSim, pulse_config::Config) {
    let new_world = || pulse_sim::World::new(pulse_sim::scenario::resolve("case-study").unwrap(), None);
    let world = new_world();
    let sim = std::sync::Arc::new(pulse_sim::Sim::new(new_world(), None));
    let running = pulse_sim::start(sim, 0).await.unwrap();
    let path = pulse_demo::write_config(&world, dir, Some(&running.url())).unwrap();
    if let Some(section) = store {
        let lake = "[store]\nbackend = \"lake\"\nlake_dir = \".\"\n";
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(lake), "the demo config's store section");
        std::fs::write(&path, text.replace(lake, section)).unwrap();
    }
    let config = pulse_config::load(&path).unwrap();
    pulse_app::open::store(&config).unwrap().migrate().await.unwrap();
    (world, running, config)
}

/// On ClickHouse the pipelines read facts as series the server deduplicated and grouped
/// (`sql/queries/read_fact_series.sql`); on the lake they scan its Parquet files. The same history ingested into
/// each, with the case study's campaigns, gives the same reports: every table, row by row, every column. Runs when
/// `PULSE_TEST_CLICKHOUSE_URL` is set (CI); with `PULSE_REQUIRE_CLICKHOUSE=1` a missing server fails it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_clickhouse_the_reports_equal_the_lake_s_row_for_row() {
    let Some(url) = pulse_config::testing::clickhouse_url("ClickHouse reports against the lake's") else {
        return;
    };
    let db = format!("pulse_same_reports_{}", std::process::id());
    let section =
        format!("[store]\nbackend = \"clickhouse\"\n[store.clickhouse]\nurl = \"{url}\"\ndatabase = \"{db}\"\n");
    let tenant = "north-staffs";
    let mut reports = Vec::new();
    for store in [None, Some(section.as_str())] {
        let dir = tempfile::tempdir().unwrap();
        let (world, running, config) = case_study(dir.path(), store).await;
        let ingest = pulse_app::ingest::IngestRequest {
            tenants: vec![tenant.into()],
            since: Some(world.start()),
            today: Some(world.end()),
            concurrency: 8,
            ..Default::default()
        };
        let run = pulse_app::ingest::run(&config, &ingest, |_| {}).await.unwrap();
        assert_eq!(run.outcome.exit_code(), 0, "{}", run.closing());
        let store = pulse_app::open::store(&config).unwrap();
        let jobs = JobsRequest { tenants: vec![tenant.into()], full: true, ..Default::default() };
        assert_eq!(modes(&run_on(&store, &config, &jobs).await.unwrap()), ["full"]);
        let scope = config.operator_access().scope(tenant).unwrap();
        reports.push(all_rows(&store, &scope, &ReportVariant::main()).await);
        drop(running);
    }
    let _ = std::process::Command::new("curl")
        .args(["-fsS", &url, "--data-binary", &format!("DROP DATABASE {db}")])
        .output();
    let (lake, clickhouse) = (&reports[0], &reports[1]);
    assert!(
        lake.iter().filter(|t| !t.is_empty()).count() >= 6,
        "the report tables have rows: {:?}",
        lake.iter().map(Vec::len).collect::<Vec<_>>()
    );
    assert_same(clickhouse, lake, "ClickHouse's reports against the lake's");
}

/// History ingested and computed in full, then daily ingests each followed by an incremental run, each compared
/// with a full recompute of the same data; on the config's lake, or on the store `store` (a `[store]` section).
async fn daily_runs_equal_a_full_recompute(store: Option<String>) {
    let dir = tempfile::tempdir().unwrap();
    let (world, running, config) = case_study(dir.path(), store.as_deref()).await;
    let tenant = "north-staffs";
    // History up to a Wednesday, then the daily ingest of Thursday (with Meta's lookback re-fetched).
    let day0 = world.end() - chrono::Duration::days(40);
    let ingest = |today: chrono::NaiveDate| pulse_app::ingest::IngestRequest {
        tenants: vec![tenant.into()],
        since: Some(world.start()),
        today: Some(today),
        concurrency: 8,
        ..Default::default()
    };
    let run = pulse_app::ingest::run(&config, &ingest(day0), |_| {}).await.unwrap();
    assert_eq!(run.outcome.exit_code(), 0, "{}", run.closing());
    let store = pulse_app::open::store(&config).unwrap();
    let scope = config.operator_access().scope(tenant).unwrap();
    let jobs = JobsRequest { tenants: vec![tenant.into()], ..Default::default() };
    // ClickHouse keeps `fetched_at` to the second: facts fetched in the second a run starts in count as changed for
    // the next run too (it cannot tell whether the run read them), a safe extra recompute. For the quiet run below to
    // find nothing changed, the full run starts in a second after the ingest's last fetch.
    next_whole_second().await;
    assert_eq!(modes(&run_on(&store, &config, &jobs).await.unwrap()), ["full"], "the first run is a full one");

    // The reports hold all history: every week since the first ingested, more than a year of them.
    let main = ReportVariant::main();
    let weeks = rows(&store, &scope, &REACH_TENANT_WEEKLY, &main).await;
    assert!(weeks.len() > 60, "{} weeks of history", weeks.len());

    // Nothing fetched since: an incremental run changes nothing.
    let before: Vec<Vec<String>> = all_rows(&store, &scope, &main).await;
    let quiet = modes(&run_on(&store, &config, &jobs).await.unwrap());
    assert!(quiet[0].starts_with("incremental") && quiet[0].contains("(0 changed days"), "{quiet:?}");
    assert_same(
        &all_rows(&store, &scope, &main).await,
        &before,
        "a run with nothing new leaves the reports as they were",
    );

    // A day later, a week later, and the next day: incremental runs on top of incremental runs. The case study's
    // campaigns reach over all of its history (a changed day within 483 days before a campaign changes its
    // counterfactual), so these runs recompute them and read every post. Then, without campaigns (the first run after
    // that change is full: the inputs differ), two more days in which post performance is updated from the posts and
    // snapshots fetched since. On two of the days Meta also revised an old post's latest lifetime reach (a post long
    // out of the daily re-fetch): the incremental run must take it, as a full recompute does.
    let mut plain = config.clone();
    plain.campaigns.clear();
    let days = [
        (&config, 1, false, "every post read"),
        (&config, 8, true, "every post read"),
        (&config, 9, false, "every post read"),
        (&plain, 10, false, "posts fetched since"),
        (&plain, 11, true, "posts fetched since"),
    ];
    for (config, n, revise, says) in days {
        if n == 10 {
            assert_eq!(modes(&run_on(&store, config, &jobs).await.unwrap()), ["full"], "other inputs: a full run");
        }
        let today = day0 + chrono::Duration::days(n);
        let run = pulse_app::ingest::run(config, &ingest(today), |_| {}).await.unwrap();
        assert_eq!(run.outcome.exit_code(), 0, "{}", run.closing());
        let revised = if revise { Some(revise_an_old_post(&store, config, tenant).await) } else { None };
        let mode = modes(&run_on(&store, config, &jobs).await.unwrap());
        assert!(mode[0].starts_with("incremental from") && mode[0].contains(says), "{mode:?}");
        let incremental = all_rows(&store, &scope, &main).await;
        if let Some((post, reach)) = revised {
            assert_eq!(reach_of(&store, &scope, &post).await, reach, "the revised reach is the post's");
        }
        // The reference: a full recompute of the same data into a variant, so the incremental runs keep stacking.
        let reference = ReportVariant::named("reference").unwrap();
        let full = JobsRequest { full: true, variant: Some("reference".into()), ..jobs.clone() };
        assert_eq!(modes(&run_on(&store, config, &full).await.unwrap()), ["full"]);
        let recomputed = all_rows(&store, &scope, &reference).await;
        assert_same(
            &incremental,
            &recomputed,
            &format!("incremental runs up to {today} ({says}) equal a full recompute"),
        );
    }
    drop(running);
}

/// A post's lifetime reach in the main post performance report.
async fn reach_of<S: Store>(store: &S, scope: &pulse_config::TenantScope, post: &str) -> f64 {
    // Columns: practice, page, post, created, type, topic, reach, ...
    let table = rows(store, scope, &pulse_store::report::POST_PERFORMANCE, &ReportVariant::main()).await;
    let fields = table.iter().map(|r| r.split('|').collect::<Vec<_>>()).find(|f| f[2] == post);
    fields.expect("the post's row")[6].parse().unwrap()
}

/// Writes a revision of the latest reach snapshot of the tenant's oldest post (long out of the daily re-fetch), with
/// 12,345 more reach, fetched now; returns the post and its revised reach.
async fn revise_an_old_post<S: Store>(store: &S, config: &pulse_config::Config, tenant: &str) -> (String, f64) {
    use pulse_domain::CanonicalMetric;
    let scope = config.operator_access().write_scope(tenant).unwrap();
    let all = pulse_store::PostFilter::default();
    let posts = store.read_posts(scope.read(), &all).await.unwrap();
    let oldest = posts.iter().min_by_key(|p| (p.created_time, p.post.as_str().to_owned())).expect("posts");
    let snapshots = store.read_post_snapshots(scope.read(), &all).await.unwrap();
    let latest = snapshots
        .iter()
        .filter(|s| s.post == oldest.post && s.metric == CanonicalMetric::PostReach && s.breakdown.is_empty())
        .max_by_key(|s| s.snapshot_day)
        .expect("the oldest post's reach snapshot");
    let mut revised = latest.clone();
    revised.value += 12_345.0;
    revised.fetched_at = chrono::Utc::now();
    store.write_post_snapshots(&scope, &[revised.clone()]).await.unwrap();
    (revised.post.as_str().to_owned(), revised.value)
}
async fn all_rows<S: Store>(store: &S, scope: &pulse_config::TenantScope, variant: &ReportVariant) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for t in tables() {
        out.push(rows(store, scope, t, variant).await);
    }
    out
}

/// Each table's rows the same, or the first difference named (not the whole tables).
fn assert_same(a: &[Vec<String>], b: &[Vec<String>], what: &str) {
    for ((table, x), y) in tables().zip(a).zip(b) {
        assert_eq!(x.len(), y.len(), "{what}: {} has {} rows against {}", table.name, x.len(), y.len());
        if let Some((i, (r, s))) = x.iter().zip(y).enumerate().find(|(_, (r, s))| r != s) {
            panic!("{what}: {} row {i} differs:\n  {r}\n  {s}", table.name);
        }
    }
}
