//! Insights JSON parsing throughput (MB/s): a 90-day response with number and breakdown metrics at every period (the
//! call the ingester makes: no `period`), as the simulator serves it. References in the same run: serde into the
//! owned wire types (`InsightsResponse`, the floor the issue names), serde into the borrowed view alone
//! (`InsightsView`), and serde validating the JSON without keeping anything (`IgnoredAny`, the floor of any JSON
//! reader); then the product's path, JSON → borrowed view → facts.

use std::hint::black_box;

use chrono::Utc;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use pulse_graph::wire::{InsightsResponse, InsightsView};
use pulse_ingest::parse::{Origin, all_periods, page_facts};
use pulse_sim::{Request, Sim, World, scenario};

fn body() -> String {
    let sim = Sim::new(World::new(scenario::resolve("case-study").unwrap(), None), None);
    let page = &sim.world.pages[0];
    let mut req = Request::get(
        &format!("/v2.12/{}/insights", page.id),
        &[
            (
                "metric",
                "page_impressions,page_impressions_unique,page_post_engagements,page_engaged_users,page_fans,page_fans_gender_age,page_content_activity_by_age_gender_unique",
            ),
            ("since", "2018-01-01"),
            ("until", "2018-03-31"),
        ],
    );
    req.bearer = Some(page.token.clone());
    sim.handle(&req).body
}

fn parse(c: &mut Criterion) {
    let body = body();
    let origin = Origin {
        practice: "M83001".parse().unwrap(),
        page: "100000000001".parse().unwrap(),
        version: "v2.12".parse().unwrap(),
        fetched_at: Utc::now(),
    };
    let (from, to) =
        (chrono::NaiveDate::from_ymd_opt(2018, 1, 1).unwrap(), chrono::NaiveDate::from_ymd_opt(2018, 3, 31).unwrap());
    let mut group = c.benchmark_group("insights_json");
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function("serde_validate_only", |b| {
        b.iter(|| black_box(serde_json::from_str::<serde::de::IgnoredAny>(black_box(&body)).unwrap()))
    });
    group.bench_function("serde_to_wire_types", |b| {
        b.iter(|| black_box(serde_json::from_str::<InsightsResponse>(black_box(&body)).unwrap()))
    });
    group.bench_function("serde_to_view", |b| {
        b.iter(|| black_box(serde_json::from_str::<InsightsView>(black_box(&body)).unwrap().data.len()))
    });
    group.bench_function("view_to_facts", |b| {
        let parsed: InsightsView = serde_json::from_str(&body).unwrap();
        b.iter(|| black_box(page_facts(&origin, black_box(&parsed), from, to, &all_periods).unwrap()))
    });
    group.bench_function("json_to_facts", |b| {
        b.iter(|| {
            let parsed: InsightsView = serde_json::from_str(black_box(&body)).unwrap();
            black_box(page_facts(&origin, &parsed, from, to, &all_periods).unwrap())
        })
    });
    group.finish();
}

criterion_group!(benches, parse);
criterion_main!(benches);
