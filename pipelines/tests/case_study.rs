//! The case study, reproduced from ingested data: the simulator serves the case-study world, the ingester stores
//! it, the pipelines compute the figures. Nothing here reads the simulator's truth to get a number it asserts.

use std::sync::Arc;
use std::time::Duration;

use chrono::NaiveDate;
use pulse_config::Secret;
use pulse_ingest::{GraphClient, IngestOptions, Ingester, PlanOptions, Target};
use pulse_pipelines::campaign::{Campaign, Matcher};
use pulse_pipelines::jobs::{self, JobInput};
use pulse_sim::{Sim, World, scenario};
use pulse_store::lake::LakeStore;
use pulse_store::report::AGE_BANDS;
use pulse_store::{ReportTable, Store};

fn d(y: i32, m: u32, day: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, day).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_case_studys_figures_come_out_of_the_pipelines() {
    let world = World::new(scenario::resolve("case-study").unwrap(), None);
    let access = pulse_config::testing::operator(world.tenant_ids());
    let targets: Vec<Target> = world
        .page_logins()
        .into_iter()
        .map(|l| Target::new(&access, l.tenant.as_str(), l.practice, &l.page, Secret::new(l.token)).unwrap())
        .collect();
    let (start, end, version) = (world.start(), world.end(), world.api_version());
    let sim = Arc::new(Sim::new(world, None));
    let today = sim.today();
    let running = pulse_sim::start(sim, 0).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = LakeStore::open(dir.path()).unwrap();
    let mut opts = IngestOptions::new(PlanOptions::backfill(version, today, start));
    opts.progress = false;
    opts.concurrency = 16;
    let client = GraphClient::new(&running.url(), version, None, Duration::from_secs(30)).unwrap();
    let (report, _) = Ingester::new(store.clone(), client, opts).run(targets).await.unwrap();
    assert!(report.is_clean(), "{}", report.table());

    let campaigns = vec![
        Campaign {
            name: "stroke".into(),
            matcher: Matcher::Hashtag("#ActFAST".into()),
            post_type: Some("video".into()),
            start: d(2018, 3, 10),
            days: 2,
        },
        Campaign {
            name: "heart".into(),
            matcher: Matcher::Hashtag("#HeartScreening".into()),
            post_type: None,
            start: d(2018, 5, 19),
            days: 2,
        },
    ];
    let mut stroke_views = 0.0;
    let mut stroke_post_views = 0.0;
    let mut heart_reach = 0.0;
    let mut heart_post_reach = 0.0;
    let mut engaged = Vec::new();
    let mut shares = [0.0; 7];
    for scope in access.write_scopes() {
        let input = JobInput {
            scope: scope.clone(),
            from: end - chrono::Duration::days(364),
            to: end,
            campaigns: campaigns.clone(),
            registered: None,
            variant: pulse_store::ReportVariant::main(),
            inputs: String::new(),
            incremental: None,
            donors: None,
        };
        let summary = jobs::run(&store, input).await.unwrap();
        engaged.push(summary.median_weekly_engaged.unwrap());
        for h in &summary.campaigns {
            // The poster has no video: video views are not an effect it can have, and none is reported.
            if (h.campaign.as_str(), h.metric.as_str()) == ("heart", "video_views") {
                assert!(h.estimate.is_none() && h.note.contains("is a video"), "{h:?}");
                continue;
            }
            let e = h.estimate.as_ref().unwrap_or_else(|| panic!("{}: {}", h.campaign, h.note));
            // What each campaign moved: the video's views and reach, the poster's reach and views.
            if matches!(
                (h.campaign.as_str(), h.metric.as_str()),
                ("stroke", "video_views" | "views" | "reach") | ("heart", "reach" | "views")
            ) {
                assert!(
                    pulse_pipelines::campaign::significant(e),
                    "{} {} not significant: {:?}",
                    h.campaign,
                    h.metric,
                    e.interval
                );
            }
            match (h.campaign.as_str(), h.metric.as_str()) {
                ("stroke", "video_views") => {
                    stroke_views += e.effect;
                    stroke_post_views += h.post_lifetime.unwrap();
                }
                ("heart", "reach") => {
                    heart_reach += e.effect;
                    heart_post_reach += h.post_lifetime.unwrap();
                }
                _ => {}
            }
        }
        assert!(summary.age_source.contains("engaged people"), "{}", summary.age_source);
        // Tenant-level shares from the stored report table.
        let ages = store
            .read_report(&scope, &AGE_BANDS as &'static ReportTable, &pulse_store::ReportVariant::main())
            .await
            .unwrap();
        let levels =
            ages.column_by_name("level").unwrap().as_any().downcast_ref::<arrow::array::StringArray>().unwrap().clone();
        let people = ages
            .column_by_name("people")
            .unwrap()
            .as_any()
            .downcast_ref::<arrow::array::Float64Array>()
            .unwrap()
            .clone();
        let windows = ages
            .column_by_name("window_end")
            .unwrap()
            .as_any()
            .downcast_ref::<arrow::array::Date32Array>()
            .unwrap()
            .clone();
        // The reports keep history: a window a week (ending on each Sunday with a breakdown), seven tenant bands in
        // each, and the month of the stroke video among them.
        let mut ends: Vec<i32> = windows.iter().flatten().collect();
        ends.sort();
        ends.dedup();
        let sundays: Vec<i32> = ends.iter().copied().filter(|d| d % 7 == 3).collect();
        assert!(sundays.len() >= 50, "{} weekly windows in a year", sundays.len());
        assert!(sundays.windows(2).all(|w| w[1] - w[0] == 7), "a window every week: {sundays:?}");
        let march = pulse_domain::day_number(d(2018, 3, 11));
        assert!(sundays.contains(&march), "the window ending 11 March 2018 is kept");
        for end in &ends {
            let tenant_rows =
                (0..ages.num_rows()).filter(|r| windows.value(*r) == *end && levels.value(*r) == "tenant");
            assert_eq!(tenant_rows.count(), 7, "seven tenant bands in the window ending {end}");
        }
        let latest = *ends.last().unwrap();
        let mut i = 0;
        for r in 0..ages.num_rows() {
            if levels.value(r) == "tenant" && windows.value(r) == latest {
                shares[i] += people.value(r);
                i += 1;
            }
        }
    }
    println!(
        "case study from ingested data: stroke video weekend incremental video views {stroke_views:.0} (its posts' lifetime views {stroke_post_views:.0}); heart screening weekend incremental reach {heart_reach:.0} (its posts' lifetime reach {heart_post_reach:.0}, gross); median weekly engaged users per page {engaged:?}; people by band {shares:?}"
    );
    assert!(stroke_views > 20_000.0 && stroke_post_views > 20_000.0, "stroke {stroke_views} / {stroke_post_views}");
    assert!(heart_reach > 45_000.0 || heart_post_reach > 45_000.0, "heart {heart_reach} / {heart_post_reach}");
    assert!(heart_post_reach > 45_000.0, "the poster's posts reached {heart_post_reach}");
    assert!(engaged.iter().all(|e| (200.0..=1500.0).contains(e)), "{engaged:?}");
    let best = (0..7).max_by(|a, b| shares[*a].total_cmp(&shares[*b])).unwrap();
    assert!(best == 3 || best == 4, "most engaged band is {best}: {shares:?}");
    let under_20 = shares[0] + shares[1] * 2.0 / 7.0;
    assert!(shares[5] + shares[6] > under_20, "{shares:?}");
}
