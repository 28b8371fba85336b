//! The uplift estimator measured against the simulator's truth across many seeds: interval coverage of the
//! injected effect (totals and per page, with controls and with the page's own weekday pattern, and end to end for
//! every metric through the simulator's API, the ingester and the pipelines), and false positives on placebo
//! campaigns with nothing injected. Prints the rates:
//!
//! `cargo test --release -p pulse-pipelines --test uplift -- --nocapture`

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{Duration, NaiveDate};
use pulse_pipelines::campaign::{Series, estimate, significant};
use pulse_pipelines::frames::day_number;
use pulse_sim::{Scenario, World};

const SEEDS: u64 = 100;

fn scenario(seed: u64) -> Scenario {
    scenario_with(seed, 0.5)
}

/// The test world with `participation` of the pages in the campaign (0.9: fewer controls than participants, so the
/// counterfactual falls back to each page's own weekday pattern).
fn scenario_with(seed: u64, participation: f64) -> Scenario {
    scenario_of(seed, participation, true)
}

/// The test world's scenario, with or without its campaign.
fn scenario_of(seed: u64, participation: f64, with_campaign: bool) -> Scenario {
    // Effect sizes vary with the seed: from barely detectable to large.
    let (lo, hi) = [(60, 120), (150, 300), (300, 600), (600, 1000), (100, 900)][(seed % 5) as usize];
    let text = format!(
        r#"
[world]
name = "uplift"
seed = {seed}
api_version = "v2.12"
start = "2017-01-02"
end = "2018-03-31"

[[tenant]]
id = "alpha"
name = "Alpha"
code_prefix = "M83"
practices = 24
facebook_share = 1.0
list_size = [3000, 12000]

[[tenant]]
id = "beta"
name = "Beta"
code_prefix = "M84"
practices = 20
facebook_share = 1.0
list_size = [3000, 12000]
"#
    );
    let campaign = format!(
        r#"
[[campaign]]
name = "test campaign"
kind = "video"
start = "2018-03-10"
days = 2
participation = {participation}
reach_per_page = [{lo}, {hi}]
views_per_reach = 1.3
video_views_per_reach = 0.5
engaged_share = 0.1
message = "test #Campaign"
"#
    );
    let text = if with_campaign { text + &campaign } else { text };
    Scenario::parse(&text, Path::new("uplift.toml")).unwrap()
}

fn views(world: &World, from: NaiveDate, to: NaiveDate) -> Series {
    let mut s = Series::new();
    for p in &world.pages {
        let mut m = BTreeMap::new();
        let mut d = from;
        while d <= to {
            m.insert(day_number(d), world.day(p.index, d).views as f64);
            d += Duration::days(1);
        }
        s.insert(p.id.clone(), m);
    }
    s
}

/// The injected effect on page `p` (world index) over the campaign's days, for one metric.
fn page_truth(world: &World, p: usize, metric: &str) -> f64 {
    let c = &world.campaigns[0];
    (0..c.days as i64)
        .map(|d| world.campaign_increment(0, p, c.start + Duration::days(d)))
        .map(|t| match metric {
            "views" => t.views,
            "reach" => t.reach,
            "engagements" => t.engagements,
            "video_views" => t.video_views,
            other => panic!("no truth for {other}"),
        })
        .sum()
}

/// Coverage of totals and of per-page intervals over `seeds` worlds with `participation`; (total, per-page) rates.
fn coverage(seeds: u64, participation: f64, method: Option<&str>) -> (f64, f64) {
    let (mut covered, mut page_covered, mut page_n) = (0, 0, 0);
    for seed in 0..seeds {
        let world = World::new(scenario_with(seed, participation), Some(seed));
        let c = &world.campaigns[0];
        let series = views(&world, world.start(), c.start + Duration::days(3));
        let treated: Vec<String> = c.pages.iter().map(|&p| world.pages[p].id.clone()).collect();
        let controls: Vec<String> =
            world.pages.iter().filter(|p| !c.pages.contains(&p.index)).map(|p| p.id.clone()).collect();
        let est = estimate(&series, &treated, &controls, c.start, c.days, &[]).unwrap();
        assert!(method.is_none_or(|m| est.method.contains(m)), "{}", est.method);
        let truth: f64 = c.pages.iter().map(|&p| page_truth(&world, p, "views")).sum();
        covered += usize::from(est.interval.expect("enough placebo windows").contains(truth));
        for &p in &c.pages {
            let (_, _, _, iv) = est.pages[&world.pages[p].id];
            page_covered += usize::from(iv.expect("per-page interval").contains(page_truth(&world, p, "views")));
            page_n += 1;
        }
    }
    (covered as f64 / seeds as f64, page_covered as f64 / page_n as f64)
}

#[test]
fn per_page_intervals_and_the_own_weekday_method_cover_too() {
    // Half the pages take part: the tenant's other pages or each page's own means, whichever placebo windows favour.
    let (total, page) = coverage(SEEDS, 0.5, None);
    let (own_total, own_page) = coverage(SEEDS, 0.9, Some("own weekday"));
    println!(
        "uplift coverage over {SEEDS} seeds: with controls totals {:.1}% per page {:.1}%; own weekday pattern (90% of pages take part) totals {:.1}% per page {:.1}%",
        total * 100.0,
        page * 100.0,
        own_total * 100.0,
        own_page * 100.0
    );
    for (what, rate) in [("per page", page), ("own weekday totals", own_total), ("own weekday per page", own_page)] {
        assert!((0.90..=0.995).contains(&rate), "{what}: coverage {rate}");
    }
}

#[test]
fn intervals_cover_the_injected_effect_and_placebos_are_rarely_significant() {
    let mut covered = 0;
    let mut false_positives = 0;
    let mut detected = 0;
    for seed in 0..SEEDS {
        let world = World::new(scenario(seed), Some(seed));
        let c = &world.campaigns[0];
        let from = world.start();
        let series = views(&world, from, c.start + Duration::days(3));
        let treated: Vec<String> = c.pages.iter().map(|&p| world.pages[p].id.clone()).collect();
        let controls: Vec<String> =
            world.pages.iter().filter(|p| !c.pages.contains(&p.index)).map(|p| p.id.clone()).collect();
        let truth: f64 = c
            .pages
            .iter()
            .flat_map(|&p| (0..c.days as i64).map(move |d| (p, d)))
            .map(|(p, d)| world.campaign_increment(0, p, c.start + Duration::days(d)).views)
            .sum();
        let est = estimate(&series, &treated, &controls, c.start, c.days, &[]).unwrap();
        let interval = est.interval.expect("enough placebo windows");
        assert!(interval.level >= 0.95, "{} placebos give {}", est.placebos, interval.level);
        if interval.contains(truth) {
            covered += 1;
        }
        if significant(&est) {
            detected += 1;
        }
        // A placebo campaign: the same pages, ten weeks earlier, when nothing was injected.
        let placebo_start = c.start - Duration::days(70);
        let placebo = estimate(&series, &treated, &controls, placebo_start, c.days, &[]).unwrap();
        if significant(&placebo) {
            false_positives += 1;
        }
    }
    let coverage = covered as f64 / SEEDS as f64;
    let fp = false_positives as f64 / SEEDS as f64;
    println!(
        "uplift over {SEEDS} seeds: 95% interval coverage of the injected effect {:.1}% ({covered}/{SEEDS}); placebo campaigns called significant {:.1}% ({false_positives}/{SEEDS}); real campaigns detected {detected}/{SEEDS}",
        coverage * 100.0,
        fp * 100.0
    );
    assert!((0.90..=0.99).contains(&coverage), "coverage {coverage}");
    assert!(fp <= 0.10, "false positives {fp}");
}

/// End to end: the simulator serves each world over its API, the ingester stores it in a lake, the pipelines compute
/// the campaign report; every metric's interval (tenant totals) is checked against the injected truth.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_to_end_every_metric_through_the_api_ingest_and_pipelines() {
    use std::sync::Arc;

    use pulse_config::Secret;
    use pulse_ingest::{GraphClient, IngestOptions, Ingester, PlanOptions, Target};
    use pulse_pipelines::campaign::{Campaign, Matcher};
    use pulse_pipelines::jobs::{self, JobInput};
    use pulse_store::Store;
    use pulse_store::report::CAMPAIGN_UPLIFT;

    const E2E_SEEDS: u64 = 12;
    let mut checked = 0;
    let mut covered = 0;
    for seed in 0..E2E_SEEDS {
        let world = World::new(scenario(seed), Some(seed));
        let access = pulse_config::testing::operator(world.tenant_ids());
        let targets: Vec<Target> = world
            .page_logins()
            .into_iter()
            .map(|l| Target::new(&access, l.tenant.as_str(), l.practice, &l.page, Secret::new(l.token)).unwrap())
            .collect();
        // The truth per tenant and metric, before the world moves into the simulator.
        let c = world.campaigns[0].clone();
        let tenant_of = |p: usize| world.tenants[world.practices[world.pages[p].practice].tenant].id.to_string();
        let mut truth: BTreeMap<(String, &str), f64> = BTreeMap::new();
        for &p in &c.pages {
            for metric in ["views", "reach", "engagements", "video_views"] {
                *truth.entry((tenant_of(p), metric)).or_default() += page_truth(&world, p, metric);
            }
        }
        let (start, end, version) = (world.start(), world.end(), world.api_version());
        let sim = Arc::new(pulse_sim::Sim::new(world, None));
        let today = sim.today();
        let running = pulse_sim::start(sim, 0).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store = pulse_store::lake::LakeStore::open(dir.path()).unwrap();
        let mut opts = IngestOptions::new(PlanOptions::backfill(version, today, start));
        opts.progress = false;
        opts.concurrency = 16;
        let client = GraphClient::new(&running.url(), version, None, std::time::Duration::from_secs(30)).unwrap();
        let (report, _) = Ingester::new(store.clone(), client, opts).run(targets).await.unwrap();
        assert!(report.is_clean(), "{}", report.table());
        let campaign = Campaign {
            name: "test campaign".into(),
            matcher: Matcher::Hashtag("#Campaign".into()),
            post_type: Some("video".into()),
            start: c.start,
            days: c.days,
        };
        for scope in access.write_scopes() {
            let input = JobInput {
                scope: scope.clone(),
                from: end - Duration::days(364),
                to: end,
                campaigns: vec![campaign.clone()],
                registered: None,
                variant: pulse_store::ReportVariant::main(),
                inputs: String::new(),
                incremental: None,
                donors: None,
            };
            jobs::run(&store, input).await.unwrap();
            let uplift =
                store.read_report(&scope, &CAMPAIGN_UPLIFT, &pulse_store::ReportVariant::main()).await.unwrap();
            let col = |name: &str| uplift.column_by_name(name).unwrap().clone();
            let (practice, metric) = (col("practice_code"), col("metric"));
            let text = |a: &arrow::array::ArrayRef, i: usize| {
                a.as_any().downcast_ref::<arrow::array::StringArray>().unwrap().value(i).to_owned()
            };
            let (lo, hi) = (col("effect_lo"), col("effect_hi"));
            let num = |a: &arrow::array::ArrayRef, i: usize| {
                let f = a.as_any().downcast_ref::<arrow::array::Float64Array>().unwrap();
                (!arrow::array::Array::is_null(f, i)).then(|| f.value(i))
            };
            for i in 0..uplift.num_rows() {
                if text(&practice, i) != "ALL" {
                    continue;
                }
                let m = text(&metric, i);
                let Some(&t) = truth.get(&(scope.to_string(), m.as_str())) else { continue };
                let (Some(l), Some(h)) = (num(&lo, i), num(&hi, i)) else {
                    panic!("seed {seed} tenant {scope} {m}: no interval")
                };
                checked += 1;
                covered += usize::from(l <= t && t <= h);
            }
        }
    }
    let rate = covered as f64 / checked as f64;
    println!(
        "uplift end to end over {E2E_SEEDS} seeds x 2 tenants x 4 metrics: {covered}/{checked} intervals cover the injected effect ({:.1}%)",
        rate * 100.0
    );
    assert!(checked >= E2E_SEEDS as usize * 2 * 4 - 4, "checked only {checked}");
    // 96 intervals at 95%: a binomial standard deviation is about 2.2 points, so 88% is three below.
    assert!(rate >= 0.88, "coverage {rate}");
}

/// The world without any campaign: what a planner sees before one.
fn quiet_scenario(seed: u64) -> Scenario {
    scenario_of(seed, 0.5, false)
}

/// Detection of campaigns that add exactly the planned MDE, over `seeds` worlds with no campaign: for each, two
/// start days are planned (views, 2 days, `share` of the pages) from the history before them; each plan is tried with
/// two draws of participating pages of the test's own (not the planner's), the MDE added to their days in proportion
/// to each page's level over the 8 weeks before. Returns (detected, trials, median MDE as a share of the pages' usual
/// views).
fn planner_calibration(seeds: u64, share: f64, method: Option<&str>) -> (usize, usize, f64) {
    use pulse_pipelines::campaign::plan;
    let (mut detected, mut trials, mut lifts) = (0, 0, Vec::new());
    for seed in 0..seeds {
        let world = World::new(quiet_scenario(seed), Some(seed));
        let series = views(&world, world.start(), world.end());
        let pages: Vec<String> = series.keys().cloned().collect();
        for start in [NaiveDate::from_ymd_opt(2018, 3, 10).unwrap(), NaiveDate::from_ymd_opt(2018, 3, 21).unwrap()] {
            let planned = plan(&series, start, 2, share, &[], seed).unwrap();
            assert_eq!(planned.participants, (share * pages.len() as f64).round() as usize);
            assert!(
                planned.level >= 0.95 && planned.mde > 0.0 && method.is_none_or(|m| planned.method.contains(m)),
                "{planned:?}"
            );
            lifts.push(planned.mde / planned.baseline);
            for draw in 0..2u64 {
                // The test's own draw (not the planner's): a run of pages in name order from an offset that moves
                // with seed and draw, the second draw from the other end.
                let offset = ((seed * 7 + draw * 13) % pages.len() as u64) as usize;
                let mut order: Vec<String> = pages.iter().cycle().skip(offset).take(pages.len()).cloned().collect();
                if draw == 1 {
                    order.reverse();
                }
                let controls = order.split_off(planned.participants);
                let treated = order;
                let s = day_number(start);
                let level = |p: &String| (s - 56..s).filter_map(|d| series[p].get(&d)).sum::<f64>();
                let total: f64 = treated.iter().map(level).sum();
                let mut injected = series.clone();
                for p in &treated {
                    let part = level(p) / total;
                    for d in s..s + 2 {
                        *injected.get_mut(p).unwrap().get_mut(&d).unwrap() += planned.mde * part / 2.0;
                    }
                }
                let est = estimate(&injected, &treated, &controls, start, 2, &[]).unwrap();
                assert!(method.is_none_or(|m| est.method.contains(m)), "{}", est.method);
                trials += 1;
                detected += usize::from(est.interval.is_some_and(|i| i.lo > 0.0));
            }
        }
    }
    lifts.sort_by(|a, b| a.total_cmp(b));
    (detected, trials, lifts[lifts.len() / 2])
}

/// The planner is calibrated: a campaign that adds exactly the planned minimum detectable effect is detected by the
/// estimator about 80% of the time, with non-participating pages (half the pages take part) and with each page's
/// own weekday pattern (90% take part). 200 campaigns each: a binomial standard deviation of 2.8 points around 80%
/// (the trials share worlds, so the real spread is somewhat wider).
#[test]
fn campaigns_of_the_planned_mde_are_detected_about_80_percent_of_the_time() {
    const PLAN_SEEDS: u64 = 50;
    for (share, method) in [(0.5, None), (0.9, Some("own weekday"))] {
        let (detected, trials, lift) = planner_calibration(PLAN_SEEDS, share, method);
        let rate = detected as f64 / trials as f64;
        println!(
            "planner calibration over {PLAN_SEEDS} seeds, {:.0}% of pages taking part ({}): {detected}/{trials} campaigns of the planned MDE detected ({:.1}%, the plan promises 80%); median MDE {:.1}% of the participating pages' usual views",
            share * 100.0,
            method.unwrap_or("counterfactual chosen by placebo error"),
            rate * 100.0,
            lift * 100.0
        );
        assert!((0.75..=0.85).contains(&rate), "{method:?}: detected {rate}");
    }
}
