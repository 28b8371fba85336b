//! The national donor pool end to end: five tenants served by the simulator, ingested, and one tenant's campaign
//! estimated with the pool offered; its reports hold its own practices only, and a pool of fewer than three other
//! tenants is never offered.
//!
//! `cargo test --release --workspace --test donor_pool`

use pulse_app::jobs::{JobsRequest, TenantJob, run_on};
use pulse_store::Store as _;

const SCENARIO: &str = r##"
[world]
name = "pool"
seed = 11
api_version = "v2.12"
start = "2017-01-01"
end = "2018-03-25"

[[tenant]]
id = "case"
name = "Case CCG"
code_prefix = "C10"
practices = 12
facebook_share = 1.0
list_size = [3000, 12000]

[[tenant]]
id = "peer"
name = "Peer CCG"
code_prefix = "P20"
practices = 11
facebook_share = 1.0
list_size = [3000, 12000]
copies = 4

[[tenant]]
id = "other"
name = "Other CCG"
code_prefix = "Q30"
practices = 11
facebook_share = 1.0
list_size = [3000, 12000]

[[campaign]]
name = "Stroke video"
kind = "video"
start = "2018-03-10"
days = 2
tenants = ["case", "other"]
participation = 0.8
reach_per_page = [500, 900]
video_views_per_reach = 0.6
engaged_share = 0.1
message = "Would you know the signs of a stroke? #ActFAST"
hashtag = "#ActFAST"
"##;

fn methods(results: &[TenantJob]) -> Vec<String> {
    let TenantJob::Done { summary, .. } = &results[0] else { panic!("{:?}", results[0].problem()) };
    summary
        .campaigns
        .iter()
        .filter_map(|h| h.estimate.as_ref().map(|e| format!("{}: {}", h.metric, e.method)))
        .collect()
}

/// A plan of tenant case's next campaign (reach, 2 days, 80% of its pages, a target of 5,000).
async fn plan_of<S: pulse_store::Store>(store: &S, config: &pulse_config::Config) -> pulse_app::plan::PlanAnswer {
    let request = pulse_app::plan::PlanRequest {
        tenant: "case".into(),
        start: chrono::NaiveDate::from_ymd_opt(2018, 3, 10).unwrap(),
        days: 2,
        share: 0.8,
        metric: "reach".into(),
        target: Some(5000.0),
    };
    pulse_app::plan::plan_on(store, config, &config.operator_access(), &request).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_campaign_uses_the_pool_of_other_tenants_only_as_sums_and_only_with_three_of_them() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = pulse_sim::Scenario::parse(SCENARIO, std::path::Path::new("pool.toml")).unwrap();
    let world = pulse_sim::World::new(scenario.clone(), None);
    let sim = std::sync::Arc::new(pulse_sim::Sim::new(pulse_sim::World::new(scenario, None), None));
    let running = pulse_sim::start(sim, 0).await.unwrap();
    let path = pulse_demo::write_config(&world, dir.path(), Some(&running.url())).unwrap();
    let opt_in = |tenants: &[&str]| {
        let mut text = std::fs::read_to_string(&path).unwrap().replace("donor_pool = true\n", "");
        for t in tenants {
            let line = format!("id = \"{t}\"\n");
            assert!(text.contains(&line), "{t} in the config");
            text = text.replace(&line, &format!("{line}donor_pool = true\n"));
        }
        std::fs::write(&path, text).unwrap();
        pulse_config::load(&path).unwrap()
    };
    let config = opt_in(&["case", "peer-01", "peer-02", "peer-03", "peer-04", "other"]);
    let store = pulse_app::open::store(&config).unwrap();
    store.migrate().await.unwrap();
    let ingest = pulse_app::ingest::IngestRequest {
        since: Some(world.start()),
        today: Some(world.end() + chrono::Duration::days(1)),
        concurrency: 8,
        ..Default::default()
    };
    let run = pulse_app::ingest::run(&config, &ingest, |_| {}).await.unwrap();
    assert_eq!(run.outcome.exit_code(), 0, "{}", run.closing());

    // Four other tenants of 11 pages each in the pool (a fifth, "other", posted the campaign too and is left out):
    // every metric's estimate was offered it (chosen, or named among the candidates it was chosen over). The method
    // names the pool's thresholds, never its counts.
    let jobs = JobsRequest { tenants: vec!["case".into()], full: true, ..Default::default() };
    let results = run_on(&store, &config, &jobs).await.unwrap();
    let pooled = methods(&results);
    assert_eq!(pooled.len(), 4, "{pooled:#?}");
    for m in &pooled {
        assert!(m.contains("national donor pool"), "{m}");
    }
    for m in &pooled {
        assert!(m.contains("sums over at least 3 other tenants of at least 10 pages each") && !m.contains("44"), "{m}");
    }
    // The campaign's rows are the tenant's own practices and its total: nothing of another tenant's.
    let scope = config.operator_access().scope("case").unwrap();
    let uplift = store
        .read_report(&scope, &pulse_store::report::CAMPAIGN_UPLIFT, &pulse_store::ReportVariant::main())
        .await
        .unwrap();
    let practices = uplift.column_by_name("practice_code").expect("a practice column");
    let practices = arrow::array::cast::as_string_array(practices.as_ref());
    let own: Vec<String> = config.tenants[0].practices.iter().map(|p| p.code.to_string()).collect();
    assert!(uplift.num_rows() > 4);
    for p in practices.iter().flatten() {
        assert!(p == "ALL" || own.contains(&p.to_owned()), "row of practice {p} in tenant case's campaign report");
    }

    // A plan for the tenant's next campaign is offered the pool as its estimate will be: the pool's history before the
    // start only, every other pool tenant (nobody has taken part in a campaign that has not started).
    let planned = plan_of(&store, &config).await;
    assert!(
        planned
            .plan
            .method
            .contains("among the page's own weekday means and the national donor pool (sums over at least 3"),
        "{}",
        planned.plan.method
    );
    assert!(!planned.options.is_empty());
    for o in &planned.options {
        assert!(o.plan.method.contains("and the national donor pool (sums"), "{}", o.plan.method);
    }

    // Two other tenants opted in besides the one that took part: no pool (it needs three that did not), and the
    // estimates say nothing of one. The tenant that took part is found by the campaign's matcher over its posts.
    let config = opt_in(&["case", "peer-01", "peer-02", "other"]);
    let results = run_on(&store, &config, &jobs).await.unwrap();
    for m in methods(&results) {
        assert!(!m.contains("donor pool"), "{m}");
    }
    // A plan still has three other tenants (it cannot know who will take part); with two, none.
    assert!(plan_of(&store, &config).await.plan.method.contains("and the national donor pool (sums"));
    let planned = plan_of(&store, &opt_in(&["case", "peer-01", "peer-02"])).await;
    assert!(
        planned.plan.method.contains("the national donor pool has too few other tenants' pages for it")
            && !planned.plan.method.contains("and the national donor pool (sums"),
        "{}",
        planned.plan.method
    );
    // The tenant itself not in the pool: it is not offered one, however many others are.
    let config = opt_in(&["peer-01", "peer-02", "peer-03", "peer-04"]);
    let results = run_on(&store, &config, &jobs).await.unwrap();
    for m in methods(&results) {
        assert!(!m.contains("donor pool"), "{m}");
    }
    let planned = plan_of(&store, &config).await;
    assert!(!planned.plan.method.contains("donor pool"), "{}", planned.plan.method);
}
