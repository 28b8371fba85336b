//! The ingester against the in-process simulator with every fault switched on: nothing lost, nothing doubled, on
//! both store backends; tokens never in logs or errors; a store outage loses nothing.

#[path = "../../pulse-store/tests/support/cluster.rs"]
mod cluster;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::NaiveDate;
use pulse_config::Secret;
use pulse_config::{TenantScope, WriteScope};
use pulse_ingest::retry::RetryPolicy;
use pulse_ingest::{GraphClient, IngestOptions, Ingester, PlanOptions, RunReport, Target};
use pulse_sim::scenario::{FaultSpec, RetireMetric, TokenDeath};
use pulse_sim::{PageLogin, RunningSim, Scenario, Sim, World};
use pulse_store::clickhouse::{ClickHouseSettings, ClickHouseStore};
use pulse_store::lake::LakeStore;
use pulse_store::{FactFilter, PostFilter, Store, StoreError, WriteAck};

const SCENARIO: &str = r#"
[world]
name = "ingest-test"
seed = 7
api_version = "v2.12"
start = "2018-01-01"
end = "2018-04-30"

[[tenant]]
id = "alpha"
name = "Alpha CCG"
code_prefix = "M83"
practices = 5
facebook_share = 1.0
list_size = [3000, 9000]

[[tenant]]
id = "gamma"
name = "Gamma CCG"
code_prefix = "M84"
practices = 4
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

fn world(faults: FaultSpec) -> World {
    let mut s = Scenario::parse(SCENARIO, Path::new("ingest-test.toml")).unwrap();
    s.faults = faults;
    World::new(s, None)
}

async fn serve(faults: FaultSpec) -> RunningSim {
    pulse_sim::start(Arc::new(Sim::new(world(faults), None)), 0).await.unwrap()
}

fn targets(sim: &Sim) -> Vec<Target> {
    let access = pulse_config::testing::operator(sim.world.tenant_ids());
    let login = |l: PageLogin| Target::new(&access, l.tenant.as_str(), l.practice, &l.page, Secret::new(l.token));
    sim.world.page_logins().into_iter().map(|l| login(l).unwrap()).collect()
}

fn options(today: NaiveDate) -> IngestOptions {
    let mut o = IngestOptions::new(PlanOptions::backfill(
        "v2.12".parse().unwrap(),
        today,
        NaiveDate::from_ymd_opt(2018, 1, 1).unwrap(),
    ));
    o.retry = RetryPolicy::for_test();
    o.throttle_minute = Duration::from_millis(10);
    o.max_slowdown = Duration::from_millis(2);
    o.flush_rows = 20_000;
    o.store_retry_for = Duration::from_millis(300);
    o.progress = false;
    o.concurrency = 8;
    o
}

fn today() -> NaiveDate {
    NaiveDate::from_ymd_opt(2018, 5, 1).unwrap()
}

async fn ingest<S: Store + Clone + 'static>(store: &S, running: &RunningSim) -> RunReport {
    ingest_with(store, running, options(today())).await
}

async fn ingest_with<S: Store + Clone + 'static>(store: &S, running: &RunningSim, options: IngestOptions) -> RunReport {
    let client = GraphClient::new(&running.url(), "v2.12".parse().unwrap(), None, Duration::from_secs(10)).unwrap();
    Ingester::new(store.clone(), client, options).run(targets(&running.sim)).await.unwrap().0
}

fn all_faults() -> FaultSpec {
    FaultSpec {
        // A page needs only a few calls (one per 90 days for all its page metrics, one posts listing): rates and
        // budgets are high enough for every kind of fault to be hit.
        transient_rate: 0.25,
        slow_rate: 0.05,
        slow_ms: 3,
        truncated_rate: 0.08,
        malformed_rate: 0.08,
        page_budget: Some(3),
        app_budget: Some(40),
        budget_window_ms: 150,
        lockout_ms: 40,
        minute_ms: Some(10),
        token_deaths: vec![TokenDeath { page: 2, after_calls: 0, subcode: 463 }],
        permission_errors: vec![5],
        empty_page_with_next: true,
        retire_metric: None,
    }
}

/// Everything stored, without fetch times (which differ between runs by design).
async fn snapshot<S: Store>(store: &S) -> BTreeMap<String, Vec<String>> {
    let access = pulse_config::testing::operator(["alpha", "gamma"].map(|t| pulse_domain::TenantId::new(t).unwrap()));
    let mut out = BTreeMap::new();
    for scope in access.scopes() {
        let mut facts: Vec<String> = store
            .read_page_insights(&scope, &FactFilter::default())
            .await
            .unwrap()
            .into_iter()
            .map(|f| {
                format!("{} {} {} {} {} {} {}", f.practice, f.page, f.metric, f.period, f.day, f.breakdown, f.value)
            })
            .collect();
        facts.sort();
        let mut posts: Vec<String> = store
            .read_posts(&scope, &PostFilter::default())
            .await
            .unwrap()
            .into_iter()
            .map(|p| format!("{} {} {} {}", p.post, p.created_time, p.post_type, p.message))
            .collect();
        posts.sort();
        let mut snaps: Vec<String> = store
            .read_post_snapshots(&scope, &PostFilter::default())
            .await
            .unwrap()
            .into_iter()
            .map(|s| format!("{} {} {} {} {}", s.post, s.metric, s.breakdown, s.snapshot_day, s.value))
            .collect();
        snaps.sort();
        out.insert(format!("{scope}/facts"), facts);
        out.insert(format!("{scope}/posts"), posts);
        out.insert(format!("{scope}/snapshots"), snaps);
    }
    out
}

fn assert_same(a: &BTreeMap<String, Vec<String>>, b: &BTreeMap<String, Vec<String>>) {
    for (k, va) in a {
        let vb = &b[k];
        assert_eq!(va.len(), vb.len(), "{k}: {} rows vs {}", va.len(), vb.len());
        assert!(va == vb, "{k} differs");
    }
}

async fn faulty_then_rerun_equals_clean<S: Store + Clone + 'static>(clean_store: S, faulty_store: S) {
    let clean_sim = serve(FaultSpec::default()).await;
    let clean = ingest(&clean_store, &clean_sim).await;
    assert!(clean.is_clean(), "{}", clean.table());
    assert!(clean.rows_written > 10_000);
    let expected = snapshot(&clean_store).await;
    assert!(expected["alpha/facts"].len() > 5_000);

    let faulty_sim = serve(all_faults()).await;
    let faulty = ingest(&faulty_store, &faulty_sim).await;
    // The dead token and the permission error are reported with the practice and page named; every other page went on.
    assert_eq!(faulty.reauth.len(), 1, "{}", faulty.table());
    let dead = &faulty_sim.sim.world.pages[2];
    assert!(
        faulty.reauth[0].message.contains(&dead.id) && faulty.reauth[0].message.contains("463"),
        "{}",
        faulty.reauth[0].message
    );
    assert!(
        faulty.failures.iter().any(|f| f.message.contains("code 200") || f.message.contains("200")),
        "{}",
        faulty.table()
    );
    assert!(!faulty.is_clean());
    let retries: u64 = faulty.practices.iter().map(|p| p.record.retries).sum();
    assert!(retries > 5, "faults were hit and retried: {}", faulty.table());
    // Pages that were not cut off are already complete and exact.
    let partial = snapshot(&faulty_store).await;
    let complete = |rows: &Vec<String>, skip: &[&str]| {
        rows.iter().filter(|r| !skip.iter().any(|p| r.contains(p))).cloned().collect::<Vec<_>>()
    };
    let cut: Vec<&str> = vec![faulty_sim.sim.world.pages[2].id.as_str(), faulty_sim.sim.world.pages[5].id.as_str()];
    for key in ["alpha/facts", "gamma/facts"] {
        assert_eq!(complete(&partial[key], &cut), complete(&expected[key], &cut), "{key} of unaffected pages");
    }
    // Re-authorised (a fault-free Meta), an incremental run completes the rest, doubling nothing.
    let healed = ingest(&faulty_store, &clean_sim).await;
    assert!(healed.is_clean(), "{}", healed.table());
    assert_same(&snapshot(&faulty_store).await, &expected);
    // And running again changes nothing.
    let again = ingest(&faulty_store, &clean_sim).await;
    assert!(again.is_clean());
    // Incremental: per page one short window (the lookback) for every page metric and period in one call, and one
    // posts listing; not the whole history again.
    assert_eq!(again.requests, 9 * 2, "{}", again.table());
    assert!(again.rows_written < clean.rows_written / 5, "{} rows vs {}", again.rows_written, clean.rows_written);
    assert_same(&snapshot(&faulty_store).await, &expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lake_faulty_run_then_rerun_equals_clean_run() {
    let dir = tempfile::tempdir().unwrap();
    let clean = LakeStore::open(dir.path().join("clean")).unwrap();
    let faulty = LakeStore::open(dir.path().join("faulty")).unwrap();
    faulty_then_rerun_equals_clean(clean, faulty).await;
}

fn clickhouse_url() -> Option<String> {
    match std::env::var("PULSE_TEST_CLICKHOUSE_URL") {
        Ok(u) if !u.is_empty() => Some(u),
        _ => {
            assert!(
                std::env::var("PULSE_REQUIRE_CLICKHOUSE").as_deref() != Ok("1"),
                "PULSE_REQUIRE_CLICKHOUSE=1 but PULSE_TEST_CLICKHOUSE_URL is not set; start one with `bash .ci/clickhouse.sh`"
            );
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "note: skipping ClickHouse ingest test; export PULSE_TEST_CLICKHOUSE_URL=$(bash .ci/clickhouse.sh) to run it"
            );
            None
        }
    }
}

async fn fresh_clickhouse(url: &str) -> ClickHouseStore {
    let store = ClickHouseStore::new(ClickHouseSettings {
        url: url.into(),
        database: format!("pulse_ingest_{}", uuid_like()),
        user: "default".into(),
        password: None,
        cluster: None,
        replica_urls: Default::default(),
        zookeeper: None,
    });
    store.migrate().await.unwrap();
    store
}

fn uuid_like() -> String {
    format!(
        "{:x}{:x}",
        std::process::id(),
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickhouse_faulty_run_then_rerun_equals_clean_run() {
    let Some(url) = clickhouse_url() else { return };
    let clean = fresh_clickhouse(&url).await;
    let faulty = fresh_clickhouse(&url).await;
    faulty_then_rerun_equals_clean(clean, faulty).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metric_retired_mid_run_is_isolated_and_the_rest_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let store = LakeStore::open(dir.path()).unwrap();
    let sim = serve(FaultSpec {
        retire_metric: Some(RetireMetric { metric: "page_fans".into(), after_calls: 20 }),
        ..FaultSpec::default()
    })
    .await;
    let report = ingest(&store, &sim).await;
    assert_eq!(report.retired_metrics.len(), 1, "{}", report.table());
    assert_eq!(report.retired_metrics[0].0, "page_fans");
    assert!(report.failures.is_empty() && report.reauth.is_empty(), "{}", report.table());
    assert!(report.table().contains("METRIC REFUSED: Meta rejected `page_fans`"), "{}", report.table());
    // Its checkpoints stayed before the gap while the other metrics moved on, so the next run asks again.
    let (alpha_w, _) = scopes();
    let cps = store.load_checkpoints(&alpha_w).await.unwrap();
    let fans =
        pulse_domain::Stream::PageMetric(pulse_domain::Period::Day, pulse_domain::CanonicalMetric::PageFollowers);
    let reach = pulse_domain::Stream::PageMetric(pulse_domain::Period::Day, pulse_domain::CanonicalMetric::PageReach);
    let through = |s| cps.iter().filter(|c| c.stream == s).map(|c| c.through_day).min();
    assert!(through(reach).is_some());
    assert!(through(fans).is_none_or(|f| Some(f) < through(reach)), "{cps:?}");
    // Every other day metric is complete for every page.
    let (alpha, _) = scopes();
    let facts = store
        .read_page_insights(
            &alpha,
            &FactFilter::default()
                .metrics([pulse_domain::CanonicalMetric::PageReach])
                .periods([pulse_domain::Period::Day]),
        )
        .await
        .unwrap();
    let mut per_page: BTreeMap<String, (usize, NaiveDate, NaiveDate)> = BTreeMap::new();
    for f in &facts {
        let e = per_page.entry(f.page.to_string()).or_insert((0, f.day, f.day));
        e.0 += 1;
        e.1 = e.1.min(f.day);
        e.2 = e.2.max(f.day);
    }
    assert_eq!(facts.len(), 5 * 120, "reach for 5 pages x 120 days: {per_page:?}");
    let followers = |store: LakeStore| async move {
        let (alpha, _) = scopes();
        store
            .read_page_insights(
                &alpha,
                &FactFilter::default()
                    .metrics([pulse_domain::CanonicalMetric::PageFollowers])
                    .periods([pulse_domain::Period::Day]),
            )
            .await
            .unwrap()
            .len()
    };
    let before = followers(store.clone()).await;
    assert!(before < 5 * 120, "the refused metric has a gap: {before}");
    // Meta accepts the metric again (it was a transient mistake): the next run fills the gap from the held-back
    // checkpoint, and every metric is complete.
    let healed = serve(FaultSpec::default()).await;
    let rerun = ingest(&store, &healed).await;
    assert!(rerun.is_clean() && rerun.retired_metrics.is_empty(), "{}", rerun.table());
    assert_eq!(followers(store.clone()).await, 5 * 120, "the re-run filled the followers gap (had {before})");
}

fn scopes() -> (WriteScope, WriteScope) {
    let access = pulse_config::testing::operator(["alpha", "gamma"].map(|t| pulse_domain::TenantId::new(t).unwrap()));
    (access.write_scope("alpha").unwrap(), access.write_scope("gamma").unwrap())
}

/// A store that goes away: writes fail (as unreachable) after `ok_writes` successful ones, until healed.
#[derive(Clone)]
struct FlakyStore {
    inner: LakeStore,
    ok_writes: usize,
    writes: Arc<AtomicUsize>,
}

impl FlakyStore {
    fn gate(&self) -> Result<(), StoreError> {
        if self.writes.fetch_add(1, Ordering::SeqCst) >= self.ok_writes {
            return Err(StoreError::Unreachable {
                url: "http://127.0.0.1:8123".into(),
                reason: "connection refused".into(),
            });
        }
        Ok(())
    }
}

impl Store for FlakyStore {
    fn describe(&self) -> String {
        "flaky".into()
    }
    async fn migrate(&self) -> pulse_store::Result<pulse_store::MigrationReport> {
        self.inner.migrate().await
    }
    async fn write_page_insights(
        &self,
        s: &WriteScope,
        f: &[pulse_domain::PageInsightFact],
    ) -> pulse_store::Result<WriteAck> {
        self.gate()?;
        self.inner.write_page_insights(s, f).await
    }
    async fn read_page_insights(
        &self,
        s: &TenantScope,
        f: &FactFilter,
    ) -> pulse_store::Result<Vec<pulse_domain::PageInsightFact>> {
        self.inner.read_page_insights(s, f).await
    }
    async fn write_posts(&self, s: &WriteScope, p: &[pulse_domain::Post]) -> pulse_store::Result<WriteAck> {
        self.gate()?;
        self.inner.write_posts(s, p).await
    }
    async fn read_posts(&self, s: &TenantScope, f: &PostFilter) -> pulse_store::Result<Vec<pulse_domain::Post>> {
        self.inner.read_posts(s, f).await
    }
    async fn write_post_snapshots(
        &self,
        s: &WriteScope,
        x: &[pulse_domain::PostInsightSnapshot],
    ) -> pulse_store::Result<WriteAck> {
        self.gate()?;
        self.inner.write_post_snapshots(s, x).await
    }
    async fn read_post_snapshots(
        &self,
        s: &TenantScope,
        f: &PostFilter,
    ) -> pulse_store::Result<Vec<pulse_domain::PostInsightSnapshot>> {
        self.inner.read_post_snapshots(s, f).await
    }
    async fn save_checkpoints(&self, s: &WriteScope, c: &[pulse_domain::Checkpoint]) -> pulse_store::Result<WriteAck> {
        self.gate()?;
        self.inner.save_checkpoints(s, c).await
    }
    async fn load_checkpoints(&self, s: &TenantScope) -> pulse_store::Result<Vec<pulse_domain::Checkpoint>> {
        self.inner.load_checkpoints(s).await
    }
    async fn record_run(&self, s: &WriteScope, r: &[pulse_domain::IngestRunRecord]) -> pulse_store::Result<WriteAck> {
        self.inner.record_run(s, r).await
    }
    async fn read_runs(&self, s: &TenantScope) -> pulse_store::Result<Vec<pulse_domain::IngestRunRecord>> {
        self.inner.read_runs(s).await
    }
    async fn append_export_audit(
        &self,
        s: &WriteScope,
        r: &pulse_domain::ExportAuditRecord,
    ) -> pulse_store::Result<WriteAck> {
        self.inner.append_export_audit(s, r).await
    }
    async fn read_export_audit(&self, s: &TenantScope) -> pulse_store::Result<Vec<pulse_domain::ExportAuditRecord>> {
        self.inner.read_export_audit(s).await
    }
    async fn append_state(&self, s: &WriteScope, e: &[pulse_domain::StateEvent]) -> pulse_store::Result<WriteAck> {
        self.inner.append_state(s, e).await
    }
    async fn read_state(&self, s: &TenantScope, stream: &str) -> pulse_store::Result<Vec<pulse_domain::StateEvent>> {
        self.inner.read_state(s, stream).await
    }
    async fn try_lease(
        &self,
        s: &WriteScope,
        name: &str,
        holder: &str,
        ttl: std::time::Duration,
    ) -> pulse_store::Result<pulse_store::LeaseOutcome> {
        self.inner.try_lease(s, name, holder, ttl).await
    }
    async fn release_lease(&self, s: &WriteScope, name: &str, holder: &str) -> pulse_store::Result<()> {
        self.inner.release_lease(s, name, holder).await
    }
    async fn replace_report(
        &self,
        s: &WriteScope,
        t: &'static pulse_store::ReportTable,
        v: &pulse_store::ReportVariant,
        b: &arrow::record_batch::RecordBatch,
    ) -> pulse_store::Result<WriteAck> {
        self.inner.replace_report(s, t, v, b).await
    }
    async fn read_report(
        &self,
        s: &TenantScope,
        t: &'static pulse_store::ReportTable,
        v: &pulse_store::ReportVariant,
    ) -> pulse_store::Result<arrow::record_batch::RecordBatch> {
        self.inner.read_report(s, t, v).await
    }
    async fn settle(&self, s: &WriteScope) -> pulse_store::Result<()> {
        self.inner.settle(s).await
    }

    async fn fact_files(
        &self,
        s: &TenantScope,
        f: &FactFilter,
    ) -> pulse_store::Result<Option<Vec<std::path::PathBuf>>> {
        self.inner.fact_files(s, f).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_outage_stops_the_run_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let clean_store = LakeStore::open(dir.path().join("clean")).unwrap();
    let sim = serve(FaultSpec::default()).await;
    ingest(&clean_store, &sim).await;
    let expected = snapshot(&clean_store).await;

    let lake = LakeStore::open(dir.path().join("flaky")).unwrap();
    let flaky = FlakyStore { inner: lake.clone(), ok_writes: 6, writes: Arc::new(AtomicUsize::new(0)) };
    let report = ingest(&flaky, &sim).await;
    let err = report.store_error.as_ref().expect("the outage is reported").to_string();
    assert!(
        err.contains("cannot reach ClickHouse")
            && err.contains("were not written")
            && err.contains("next run fetches them again"),
        "{err}"
    );
    assert!(report.table().contains("STORE UNAVAILABLE"));
    assert_no_checkpoint_ahead_of_data(&lake).await;
    // The store is back: the next run picks up everything.
    let healed = ingest(&lake, &sim).await;
    assert!(healed.is_clean(), "{}", healed.table());
    assert_same(&snapshot(&lake).await, &expected);
}

/// Checkpoints never point past data that was not written: every page metric's checkpoint has its day stored.
async fn assert_no_checkpoint_ahead_of_data<S: Store>(store: &S) {
    let (alpha, gamma) = scopes();
    for scope in [&alpha, &gamma] {
        let facts = store.read_page_insights(scope, &FactFilter::default()).await.unwrap();
        for cp in store.load_checkpoints(scope).await.unwrap() {
            if let pulse_domain::Stream::PageMetric(period, metric) = cp.stream {
                let days = facts
                    .iter()
                    .filter(|f| f.page == cp.page && f.period == period && f.metric == metric)
                    .map(|f| f.day)
                    .max();
                assert!(days.is_some_and(|d| d >= cp.through_day), "checkpoint {cp:?} ahead of its data");
            }
        }
    }
}

// ----- on a real ClickHouse cluster (2 shards x 2 replicas, ZooKeeper: `.ci/clickhouse-cluster.sh`) -------------
//
// The tenants are placed by cityHash64(tenant_id): `gamma` on shard 1, `alpha` on shard 2. The store talks to shard 1
// replica 1; the tests stop and start the nodes of shard 2.

/// Serialises the tests that stop nodes: they share one cluster.
static CLUSTER_NODES: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_faulty_run_then_rerun_equals_clean_run() {
    let Some(cluster) = cluster::LocalCluster::from_env() else { return };
    let _nodes = CLUSTER_NODES.lock().await;
    let (clean, clean_db) = cluster.fresh("pulse_ingest_clean").await;
    let (faulty, faulty_db) = cluster.fresh("pulse_ingest_faulty").await;
    assert_eq!(clean.shard_of("gamma").await.unwrap().unwrap().num, 1);
    assert_eq!(clean.shard_of("alpha").await.unwrap().unwrap().num, 2);
    faulty_then_rerun_equals_clean(clean, faulty).await;
    cluster.drop_database(&clean_db);
    cluster.drop_database(&faulty_db);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_results_equal_the_single_node_run() {
    let Some(cluster) = cluster::LocalCluster::from_env() else { return };
    let _nodes = CLUSTER_NODES.lock().await;
    let (sim, on_lake) = clean_reference().await;
    let (store, db) = cluster.fresh("pulse_ingest_equal").await;
    let report = ingest(&store, &sim).await;
    assert!(report.is_clean(), "{}", report.table());
    let on_cluster = snapshot(&store).await;
    assert_same(&on_cluster, &on_lake);
    if let Some(url) = clickhouse_url() {
        let single = fresh_clickhouse(&url).await;
        assert!(ingest(&single, &sim).await.is_clean());
        assert_same(&on_cluster, &snapshot(&single).await);
    }
    // Each tenant's rows are on its shard alone, on both of its replicas once replication has caught up.
    let count = |node: &cluster::Node, tenant: &str| -> u64 {
        node.query(&format!("SELECT count() FROM `{db}`.page_insights_local WHERE tenant_id = '{tenant}'"))
            .parse()
            .unwrap()
    };
    let stored = |tenant: &str| on_cluster[&format!("{tenant}/facts")].len() as u64;
    wait_for_replicas(&cluster, &db);
    for replica in [1, 2] {
        assert_eq!(count(cluster.node(1, replica), "alpha"), 0);
        assert_eq!(count(cluster.node(2, replica), "gamma"), 0);
        assert!(count(cluster.node(1, replica), "gamma") >= stored("gamma"));
        assert!(count(cluster.node(2, replica), "alpha") >= stored("alpha"));
    }
    cluster.drop_database(&db);
}

/// The world every cluster test ingests, served fault-free, and what a clean run stores of it (on the lake).
async fn clean_reference() -> (RunningSim, BTreeMap<String, Vec<String>>) {
    let sim = serve(FaultSpec::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let lake = LakeStore::open(dir.path()).unwrap();
    assert!(ingest(&lake, &sim).await.is_clean());
    (sim, snapshot(&lake).await)
}

/// Kills `nodes` (the first is watched) as soon as the first of them holds facts of database `db`, mid-ingest.
/// Joins to whether it did.
fn kill_when_rows_arrive(db: &str, nodes: Vec<cluster::Node>) -> std::thread::JoinHandle<bool> {
    let watch = format!("SELECT count() FROM `{db}`.page_insights_local");
    std::thread::spawn(move || {
        for _ in 0..3000 {
            if nodes[0].query(&watch).parse::<u64>().unwrap_or(0) > 0 {
                nodes.iter().for_each(cluster::Node::kill);
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    })
}

/// Waits until each shard's replicas hold the same rows of the facts table (replication has caught up).
fn wait_for_replicas(cluster: &cluster::LocalCluster, db: &str) {
    let sql = format!("SELECT count() FROM `{db}`.page_insights_local");
    for _ in 0..300 {
        if [1, 2].iter().all(|&s| cluster.node(s, 1).query(&sql) == cluster.node(s, 2).query(&sql)) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the replicas of a shard did not converge within 30 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_replica_killed_mid_ingest_loses_nothing() {
    let Some(cluster) = cluster::LocalCluster::from_env() else { return };
    let _nodes = CLUSTER_NODES.lock().await;
    let (sim, expected) = clean_reference().await;

    let (store, db) = cluster.fresh("pulse_ingest_kill").await;
    // Small batches, so the run is many inserts long, and time to ride out the moment of the kill.
    let mut opts = options(today());
    opts.flush_rows = 400;
    opts.store_retry_for = Duration::from_secs(30);
    // Kill shard 2's first replica (where alpha's inserts go) once some of alpha's rows are on it.
    let healing = cluster.healing();
    let killer = kill_when_rows_arrive(&db, vec![cluster.node(2, 1).clone()]);
    let report = ingest_with(&store, &sim, opts).await;
    assert!(killer.join().unwrap(), "the replica was killed mid-ingest");
    assert!(!cluster.node(2, 1).is_up());
    assert!(report.is_clean(), "the other replica took the writes: {}", report.table());
    drop(healing);
    // Back up, the killed replica fetches what it missed; every acknowledged row is there, none doubled.
    wait_for_replicas(&cluster, &db);
    assert_same(&snapshot(&store).await, &expected);
    assert_no_checkpoint_ahead_of_data(&store).await;
    // And an incremental run on top finds nothing missing.
    let again = ingest(&store, &sim).await;
    assert!(again.is_clean(), "{}", again.table());
    assert_same(&snapshot(&store).await, &expected);
    cluster.drop_database(&db);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_shard_down_is_a_clear_error_and_no_checkpoint_gets_ahead() {
    let Some(cluster) = cluster::LocalCluster::from_env() else { return };
    let _nodes = CLUSTER_NODES.lock().await;
    let (sim, expected) = clean_reference().await;

    let (store, db) = cluster.fresh("pulse_ingest_shard").await;
    let (alpha, gamma) = scopes();
    let healing = cluster.healing();
    // Shard 2 down before the run: the run stops at once, naming the shard and what to do, having written nothing.
    cluster.node(2, 1).kill();
    cluster.node(2, 2).kill();
    let client = GraphClient::new(&sim.url(), "v2.12".parse().unwrap(), None, Duration::from_secs(10)).unwrap();
    let err = Ingester::new(store.clone(), client, options(today()))
        .run(targets(&sim.sim))
        .await
        .expect_err("a run with a shard down fails")
        .to_string();
    assert!(err.contains("shard 2 (http://127.0.0.1:") && err.contains("cluster `pulse`"), "{err}");
    assert!(err.contains("Start a replica"), "says what to do: {err}");
    // Meanwhile gamma, on shard 1, reads and writes on: one tenant's queries touch its own shard alone.
    store.write_page_insights(&gamma, &[]).await.unwrap();
    assert!(store.read_page_insights(&gamma, &FactFilter::default()).await.unwrap().is_empty());
    store.read_posts(&gamma, &PostFilter::default()).await.unwrap();
    store.load_checkpoints(&gamma).await.unwrap();
    store.read_runs(&gamma).await.unwrap();
    store.read_report(&gamma, &pulse_store::report::REACH_WEEKLY, &pulse_store::ReportVariant::main()).await.unwrap();
    let err = store.read_page_insights(&alpha, &FactFilter::default()).await.unwrap_err();
    assert!(matches!(err, StoreError::ShardUnreachable { .. }) && err.is_transient(), "{err}");
    cluster.heal();

    // Shard 2 lost mid-run: the run stops with the outage reported, and no checkpoint gets ahead of its data.
    let mut opts = options(today());
    opts.flush_rows = 400;
    let killer = kill_when_rows_arrive(&db, vec![cluster.node(2, 1).clone(), cluster.node(2, 2).clone()]);
    let report = ingest_with(&store, &sim, opts).await;
    assert!(killer.join().unwrap(), "shard 2 was stopped mid-ingest");
    let err = report.store_error.as_ref().expect("the shard outage is reported").to_string();
    assert!(err.contains("shard 2") && err.contains("Start a replica"), "{err}");
    assert!(report.table().contains("STORE UNAVAILABLE"), "{}", report.table());
    drop(healing);
    // Back up: no checkpoint points past data, and the next run completes exactly.
    assert_no_checkpoint_ahead_of_data(&store).await;
    let healed = ingest(&store, &sim).await;
    assert!(healed.is_clean(), "{}", healed.table());
    assert_same(&snapshot(&store).await, &expected);
    cluster.drop_database(&db);
}

/// A writer for tracing that keeps everything written.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

// Current-thread runtime: the capturing subscriber is set for this thread, and every task runs on it.
#[tokio::test]
async fn no_token_appears_in_any_log_line_or_error() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let dir = tempfile::tempdir().unwrap();
    let store = LakeStore::open(dir.path()).unwrap();
    let sim = serve(all_faults()).await;
    let report = ingest(&store, &sim).await;
    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("access token rejected"),
        "the dead token was logged (without the token): {}",
        report.table()
    );
    let mut texts = vec![logs, report.table()];
    texts.extend(report.failures.iter().map(|f| f.message.clone()));
    texts.extend(report.practices.iter().map(|p| p.record.message.clone()));
    let runs = store.read_runs(&scopes().0).await.unwrap();
    texts.extend(runs.iter().map(|r| r.message.clone()));
    for page in &sim.sim.world.pages {
        for t in &texts {
            assert!(!t.contains(&page.token), "a token leaked into: {}", &t[..t.len().min(300)]);
        }
    }
    // The run summary was recorded in the store.
    assert!(!runs.is_empty() && runs.iter().any(|r| r.status == pulse_domain::RunStatus::Failed));
}
