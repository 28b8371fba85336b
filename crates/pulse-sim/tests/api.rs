//! The simulator against Meta's shapes, its own invariants, determinism, every fault kind and every bad input.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use chrono::{Duration, NaiveDate};
use pulse_domain::time::{covered_days, parse_end_time};
use pulse_domain::{AgeGenderKey, Period};
use pulse_graph::wire::{
    BatchResponse, DebugTokenResponse, GraphErrorBody, InsightsResponse, MetricValue, PageObject, PostsResponse,
};
use pulse_graph::{ErrorClass, classify};
use pulse_sim::scenario::{FaultSpec, RetireMetric, TokenDeath};
use pulse_sim::{Request, Response, Scenario, Sim, World, scenario};

fn sim_with(name: &str, faults: FaultSpec) -> Sim {
    let mut s = scenario::resolve(name).unwrap();
    s.faults = faults;
    Sim::new(World::new(s, None), None)
}

fn sim() -> Sim {
    sim_with("case-study", FaultSpec::default())
}

fn get(sim: &Sim, page: usize, path: &str, query: &[(&str, &str)]) -> Response {
    let mut req = Request::get(path, query);
    req.bearer = Some(sim.world.pages[page].token.clone());
    sim.handle(&req)
}

fn ok<T: serde::de::DeserializeOwned>(resp: &Response) -> T {
    assert_eq!(resp.status, 200, "{}", resp.body);
    serde_json::from_str(&resp.body).unwrap_or_else(|e| panic!("{e}: {}", resp.body))
}

fn error(resp: &Response) -> pulse_graph::GraphError {
    assert_ne!(resp.status, 200, "{}", resp.body);
    serde_json::from_str::<GraphErrorBody>(&resp.body).unwrap_or_else(|e| panic!("{e}: {}", resp.body)).error
}

fn keys(v: &serde_json::Value) -> BTreeSet<String> {
    v.as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default()
}

fn page_path(sim: &Sim, page: usize, rest: &str) -> String {
    format!("/v2.12/{}/{rest}", sim.world.pages[page].id)
}

#[test]
fn insights_have_metas_shape_and_dates() {
    let sim = sim();
    let path = page_path(&sim, 0, "insights");
    let resp = get(
        &sim,
        0,
        &path,
        &[
            ("metric", "page_impressions_unique,page_fans"),
            ("period", "day"),
            ("since", "2018-03-01"),
            ("until", "2018-03-15"),
        ],
    );
    let body: InsightsResponse = ok(&resp);
    // Same keys as a recorded Graph response (see pulse-graph's recorded fixture).
    let raw: serde_json::Value = serde_json::from_str(&resp.body).unwrap();
    assert_eq!(keys(&raw), ["data", "paging"].map(String::from).into());
    assert_eq!(
        keys(&raw["data"][0]),
        ["description", "id", "name", "period", "title", "values"].map(String::from).into()
    );
    assert_eq!(keys(&raw["data"][0]["values"][0]), ["end_time", "value"].map(String::from).into());
    assert_eq!(keys(&raw["paging"]), ["next", "previous"].map(String::from).into());
    let reach = &body.data[0];
    assert_eq!(reach.name, "page_impressions_unique");
    assert_eq!(reach.values.len(), 14);
    // 2018-03-11 is the spring-forward day: end_times switch from 08:00 to 07:00 UTC.
    let ends: Vec<&str> = reach.values.iter().map(|v| v.end_time.as_deref().unwrap()).collect();
    assert_eq!(ends[0], "2018-03-02T08:00:00+0000");
    assert_eq!(ends[9], "2018-03-11T08:00:00+0000");
    assert_eq!(ends[10], "2018-03-12T07:00:00+0000");
    let first = covered_days(parse_end_time(ends[0]).unwrap(), Period::Day).unwrap();
    assert_eq!(first.last, NaiveDate::from_ymd_opt(2018, 3, 1).unwrap());
    // Tokens passed in a header never appear in paging links.
    assert!(!resp.body.contains(&sim.world.pages[0].token));
}

#[test]
fn paging_links_walk_the_time_range() {
    let sim = sim();
    let path = page_path(&sim, 1, "insights");
    let resp = get(
        &sim,
        1,
        &path,
        &[("metric", "page_impressions"), ("period", "day"), ("since", "2018-01-01"), ("until", "2018-01-31")],
    );
    let body: InsightsResponse = ok(&resp);
    let next = body.paging.unwrap().next.unwrap();
    let query = next.split_once('?').unwrap().1;
    let q: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes()).into_owned().collect();
    let q: Vec<(&str, &str)> = q.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let next_body: InsightsResponse = ok(&get(&sim, 1, &path, &q));
    let first_next = next_body.data[0].values[0].end_time.clone().unwrap();
    assert_eq!(
        covered_days(parse_end_time(&first_next).unwrap(), Period::Day).unwrap().last,
        NaiveDate::from_ymd_opt(2018, 1, 31).unwrap()
    );
    // No `next` past today.
    let last = get(&sim, 1, &path, &[("metric", "page_impressions"), ("since", "2018-06-01"), ("until", "2018-07-01")]);
    assert!(ok::<InsightsResponse>(&last).paging.unwrap().next.is_none());
    // A token passed in the query is echoed in paging links, as Meta does: clients must strip it.
    let mut req = Request::get(&path, &[("metric", "page_impressions"), ("access_token", &sim.world.pages[1].token)]);
    req.bearer = None;
    let resp = sim.handle(&req);
    let body: InsightsResponse = ok(&resp);
    let previous = body.paging.unwrap().previous.unwrap();
    let echoed =
        form_urlencoded::parse(previous.split_once('?').unwrap().1.as_bytes()).any(|(k, _)| k == "access_token");
    assert!(echoed, "{previous}");
}

#[test]
fn path_forms_and_periods() {
    let sim = sim();
    let one: InsightsResponse = ok(&get(
        &sim,
        2,
        &page_path(&sim, 2, "insights/page_impressions_unique/week"),
        &[("since", "2018-02-01"), ("until", "2018-02-08")],
    ));
    assert_eq!(one.data.len(), 1);
    assert_eq!(one.data[0].period, "week");
    let all: InsightsResponse = ok(&get(
        &sim,
        2,
        &page_path(&sim, 2, "insights/page_impressions_unique"),
        &[("since", "2018-02-01"), ("until", "2018-02-08")],
    ));
    assert_eq!(all.data.iter().map(|d| d.period.as_str()).collect::<Vec<_>>(), vec!["day", "week", "days_28"]);
}

fn number(v: &MetricValue) -> i64 {
    match v {
        MetricValue::Number(n) => n.as_i64().unwrap(),
        MetricValue::Breakdown(b) => panic!("{b:?}"),
    }
}

#[test]
fn world_invariants_hold_across_seeds_pages_and_days() {
    // A property test over many random (seed, page, window) draws.
    for seed in 0..12u64 {
        let s = scenario::resolve("case-study").unwrap();
        let sim = Sim::new(World::new(s, Some(seed)), None);
        let page = (seed as usize * 7) % sim.world.pages.len();
        let since = NaiveDate::from_ymd_opt(2017, 3, 1).unwrap() + Duration::days(seed as i64 * 29);
        let until = since + Duration::days(60);
        let (s, u) = (since.to_string(), until.to_string());
        let resp = get(
            &sim,
            page,
            &page_path(&sim, page, "insights"),
            &[
                (
                    "metric",
                    "page_impressions,page_impressions_unique,page_engaged_users,page_post_engagements,page_impressions_by_age_gender_unique",
                ),
                ("since", &s),
                ("until", &u),
            ],
        );
        let body: InsightsResponse = ok(&resp);
        let series = |name: &str, period: &str| -> Vec<&MetricValue> {
            body.data
                .iter()
                .find(|d| d.name == name && d.period == period)
                .unwrap()
                .values
                .iter()
                .map(|v| &v.value)
                .collect()
        };
        let views = series("page_impressions", "day");
        let reach = series("page_impressions_unique", "day");
        let engaged = series("page_engaged_users", "day");
        let engagements = series("page_post_engagements", "day");
        let week_reach = series("page_impressions_unique", "week");
        for i in 0..views.len() {
            assert!(number(reach[i]) <= number(views[i]), "unique <= total");
            assert!(number(engaged[i]) <= number(reach[i]) && number(engaged[i]) <= number(engagements[i]));
            if i >= 6 {
                let days: Vec<i64> = (i - 6..=i).map(|j| number(reach[j])).collect();
                let w = number(week_reach[i]);
                assert!(w >= *days.iter().max().unwrap() && w <= days.iter().sum::<i64>(), "week {w} vs {days:?}");
            }
        }
        for v in series("page_impressions_by_age_gender_unique", "days_28") {
            match v {
                MetricValue::Breakdown(b) => {
                    for (k, n) in b {
                        k.parse::<AgeGenderKey>().unwrap();
                        assert!(n.as_i64().unwrap() > 0, "zero keys are omitted");
                    }
                }
                MetricValue::Number(_) => panic!("a breakdown metric gives objects"),
            }
        }
    }
}

#[test]
fn small_demographics_are_withheld() {
    let sim = sim();
    // Daily engaged users by age/gender on a page: some days fall below 100 people and are withheld.
    let mut withheld = 0;
    let mut shown = 0;
    for page in 0..10 {
        let body: InsightsResponse = ok(&get(
            &sim,
            page,
            &page_path(&sim, page, "insights"),
            &[
                ("metric", "page_content_activity_by_age_gender_unique"),
                ("period", "day"),
                ("since", "2018-01-01"),
                ("until", "2018-02-01"),
            ],
        ));
        for v in &body.data[0].values {
            match &v.value {
                MetricValue::Breakdown(b) if b.is_empty() => withheld += 1,
                MetricValue::Breakdown(b) => {
                    shown += 1;
                    assert!(b.values().map(|n| n.as_i64().unwrap()).sum::<i64>() >= 90);
                }
                MetricValue::Number(_) => panic!(),
            }
        }
    }
    assert!(withheld > 0 && shown > 0, "withheld {withheld} shown {shown}");
}

#[test]
fn the_same_seed_gives_the_same_bytes() {
    let a = sim();
    let b = sim();
    for (path, q) in [
        (
            "insights",
            vec![
                ("metric", "page_impressions_unique,page_fans_gender_age"),
                ("since", "2018-03-01"),
                ("until", "2018-05-30"),
            ],
        ),
        (
            "published_posts",
            vec![
                ("fields", "id,created_time,message,type,insights.metric(post_impressions,post_video_views)"),
                ("limit", "100"),
            ],
        ),
    ] {
        let ra = get(&a, 5, &page_path(&a, 5, path), &q);
        let rb = get(&b, 5, &page_path(&b, 5, path), &q);
        assert_eq!(ra.body, rb.body);
    }
}

#[test]
fn posts_page_with_cursors_and_field_expansion() {
    let sim = sim();
    let path = page_path(&sim, 3, "published_posts");
    let fields = "id,created_time,message,permalink_url,type,insights.metric(post_impressions,post_impressions_unique,post_video_views)";
    let first: PostsResponse = ok(&get(
        &sim,
        3,
        &path,
        &[("fields", fields), ("limit", "10"), ("since", "2018-01-01"), ("until", "2018-04-01")],
    ));
    assert_eq!(first.data.len(), 10);
    let created: Vec<&str> = first.data.iter().map(|p| p.created_time.as_deref().unwrap()).collect();
    assert!(created.windows(2).all(|w| w[0] >= w[1]), "newest first: {created:?}");
    let insights = first.data[0].insights.as_ref().unwrap();
    assert_eq!(insights.data.len(), 3);
    assert!(insights.data.iter().all(|i| i.period == "lifetime" && i.values[0].end_time.is_none()));
    let paging = first.paging.unwrap();
    let after = paging.cursors.unwrap().after.unwrap();
    let mut seen: Vec<String> = first.data.iter().map(|p| p.id.clone()).collect();
    let mut cursor = after;
    loop {
        let page: PostsResponse = ok(&get(
            &sim,
            3,
            &path,
            &[("fields", "id"), ("limit", "10"), ("since", "2018-01-01"), ("until", "2018-04-01"), ("after", &cursor)],
        ));
        seen.extend(page.data.iter().map(|p| p.id.clone()));
        let p = page.paging.unwrap();
        match p.next {
            Some(_) => cursor = p.cursors.unwrap().after.unwrap(),
            None => break,
        }
    }
    let unique: BTreeSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "no post twice");
    assert!(seen.len() > 20);
    // A post's own insights: lifetime values, growing as the clock moves.
    let post = &seen[seen.len() - 1];
    let q = [("metric", "post_impressions,post_engaged_users")];
    let before: InsightsResponse = ok(&get(&sim, 3, &format!("/v2.12/{post}/insights"), &q));
    assert_eq!(before.data.len(), 2);
    let raw: serde_json::Value =
        serde_json::from_str(&get(&sim, 3, &format!("/v2.12/{post}/insights"), &q).body).unwrap();
    assert_eq!(keys(&raw["data"][0]["values"][0]), ["value"].map(String::from).into());
}

#[test]
fn post_values_grow_over_the_first_weeks() {
    let sim = sim();
    let c = &sim.world.campaigns[0];
    let page = c.pages[0];
    let post = sim.world.posts_on(page, c.start).into_iter().find(|p| p.campaign == Some(0)).unwrap();
    let path = format!("/v2.12/{}/insights", post.id);
    let mut last = 0;
    for d in 1..5 {
        sim.set_today(c.start + Duration::days(d));
        let body: InsightsResponse = ok(&get(&sim, page, &path, &[("metric", "post_video_views")]));
        let v = number(&body.data[0].values[0].value);
        assert!(v >= last, "lifetime values never shrink");
        last = v;
    }
    assert!(last > 200);
}

#[test]
fn page_fields_debug_token_and_batch() {
    let sim = sim();
    let p: PageObject =
        ok(&get(&sim, 0, &format!("/v2.12/{}", sim.world.pages[0].id), &[("fields", "name,fan_count,access_token")]));
    assert_eq!(p.access_token.as_deref(), Some(sim.world.pages[0].token.as_str()));
    assert!(p.fan_count.unwrap() > 0);
    let dbg: DebugTokenResponse =
        ok(&sim.handle(&Request::get("/v2.12/debug_token", &[("input_token", &sim.world.pages[0].token)])));
    assert!(dbg.data.is_valid);
    assert_eq!(dbg.data.profile_id.as_deref(), Some(sim.world.pages[0].id.as_str()));
    let batch: Vec<serde_json::Value> = (0..3)
        .map(|i| serde_json::json!({"method": "GET", "relative_url": format!("v2.12/{}/insights?metric=page_fans&since=2018-01-0{}&until=2018-01-09", sim.world.pages[0].id, i + 1)}))
        .collect();
    let mut req = Request {
        method: "POST".into(),
        path: "/".into(),
        form: vec![("batch".into(), serde_json::to_string(&batch).unwrap())],
        ..Request::default()
    };
    req.bearer = Some(sim.world.pages[0].token.clone());
    let before = sim.calls();
    let out: Vec<BatchResponse> = ok(&sim.handle(&req));
    assert_eq!(out.len(), 3);
    assert!(out.iter().all(|r| r.code == 200));
    let inner: InsightsResponse = serde_json::from_str(&out[0].body).unwrap();
    assert_eq!(inner.data[0].values.len(), 8);
    assert_eq!(sim.calls() - before, 3, "each inner request counts against the budget");
    let too_many: Vec<serde_json::Value> =
        (0..51).map(|_| serde_json::json!({"method": "GET", "relative_url": "v2.12/me"})).collect();
    req.form = vec![("batch".into(), serde_json::to_string(&too_many).unwrap())];
    assert!(error(&sim.handle(&req)).message.contains("Maximum batch size is 50"));
}

#[test]
fn requests_meta_would_reject_get_metas_errors() {
    let sim = sim();
    let path = page_path(&sim, 0, "insights");
    type Case<'a> = (Vec<(&'a str, &'a str)>, i64, &'a str);
    let cases: Vec<Case> = vec![
        (vec![], 100, "metric is required"),
        (vec![("metric", "page_impressions"), ("period", "hourly")], 100, "Period must be one of"),
        (vec![("metric", "page_impressions"), ("since", "yesterday-ish")], 100, "not a valid date"),
        (
            vec![("metric", "page_impressions"), ("since", "2018-01-01"), ("until", "2018-06-01")],
            100,
            "93 days (8035200 s)",
        ),
        (vec![("metric", "page_impressions,page_media_view")], 100, "valid insights metric"),
        (vec![("metric", "post_impressions")], 100, "valid insights metric"),
    ];
    for (q, code, text) in cases {
        let e = error(&get(&sim, 0, &path, &q));
        assert_eq!(e.code, code, "{q:?}");
        assert!(e.message.contains(text), "{q:?}: {}", e.message);
        assert!(!e.fbtrace_id.is_empty());
    }
    let unknown = error(&get(&sim, 0, "/v2.12/999999/insights", &[("metric", "page_impressions")]));
    assert_eq!((unknown.code, unknown.error_subcode), (100, Some(33)));
    let unknown_post = error(&get(
        &sim,
        0,
        &format!("/v2.12/{}_99999999/insights", sim.world.pages[0].id),
        &[("metric", "post_impressions")],
    ));
    assert_eq!(unknown_post.code, 100);
    let bad_cursor = error(&get(&sim, 0, &page_path(&sim, 0, "published_posts"), &[("after", "garbage")]));
    assert!(bad_cursor.message.contains("cursor"));
    let big_limit = error(&get(&sim, 0, &page_path(&sim, 0, "published_posts"), &[("limit", "101")]));
    assert!(big_limit.message.contains("limit"));
    let no_token = error(&sim.handle(&Request::get(&path, &[("metric", "page_impressions")])));
    assert_eq!(no_token.code, 104);
    let mut wrong = Request::get(&path, &[("metric", "page_impressions")]);
    wrong.bearer = Some("EAAB-not-a-token".into());
    assert_eq!(error(&sim.handle(&wrong)).code, 190);
    // The current era refuses the old names.
    let current = sim_with("current", FaultSpec::default());
    let e = error(&get(
        &current,
        0,
        &format!("/v25.0/{}/insights", current.world.pages[0].id),
        &[("metric", "page_impressions")],
    ));
    assert_eq!(classify(&e), ErrorClass::InvalidMetric);
    let ok_now: InsightsResponse = ok(&get(
        &current,
        0,
        &format!("/v25.0/{}/insights", current.world.pages[0].id),
        &[("metric", "page_media_view,page_total_media_view_unique,page_follows")],
    ));
    assert_eq!(ok_now.data.len(), 7, "day, week and days_28 of two metrics, and daily follows");
}

#[test]
fn every_fault_kind_is_reachable() {
    let faults = FaultSpec {
        transient_rate: 0.15,
        slow_rate: 0.1,
        slow_ms: 5,
        truncated_rate: 0.1,
        malformed_rate: 0.1,
        page_budget: Some(20),
        app_budget: Some(5000),
        budget_window_ms: 60_000,
        lockout_ms: 50,
        token_deaths: vec![
            TokenDeath { page: 1, after_calls: 3, subcode: 463 },
            TokenDeath { page: 2, after_calls: 3, subcode: 460 },
        ],
        permission_errors: vec![3],
        empty_page_with_next: true,
        retire_metric: Some(RetireMetric { metric: "page_fans".into(), after_calls: 150 }),
        minute_ms: Some(10),
    };
    let sim = sim_with("case-study", faults);
    let mut seen = BTreeSet::new();
    let mut usage_climbed = false;
    for i in 0..200 {
        let page = i % 8;
        let since = (NaiveDate::from_ymd_opt(2018, 1, 1).unwrap() + Duration::days(i as i64)).to_string();
        let resp = get(&sim, page, &page_path(&sim, page, "insights"), &[("metric", "page_fans"), ("since", &since)]);
        if resp.delay_ms > 0 {
            seen.insert("slow".to_string());
        }
        let buc = resp.headers.iter().find(|(k, _)| k == "x-business-use-case-usage").map(|(_, v)| v.clone()).unwrap();
        let usage = pulse_graph::Usage::parse(None, Some(&buc));
        usage_climbed |= usage.max_percent() >= 75;
        if resp.status == 200 {
            if serde_json::from_str::<InsightsResponse>(&resp.body).is_err() {
                seen.insert(if resp.body.starts_with('<') { "malformed".into() } else { "truncated".into() });
            }
            continue;
        }
        let e = error(&resp);
        let kind = match (classify(&e), e.code, e.error_subcode) {
            (ErrorClass::Throttled, code, _) => {
                assert!(usage.regain_minutes() > 0 || code == 4, "{e:?}");
                format!("throttled {code}")
            }
            (ErrorClass::Transient, _, _) => {
                assert_eq!(e.is_transient, Some(true));
                "transient".into()
            }
            (ErrorClass::TokenDead, _, Some(sub)) => format!("token dead {sub}"),
            (ErrorClass::Permission, _, _) => "permission".into(),
            (ErrorClass::InvalidMetric, _, _) => "retired metric".into(),
            other => panic!("{other:?} {e:?}"),
        };
        seen.insert(kind);
    }
    for expected in [
        "slow",
        "malformed",
        "truncated",
        "transient",
        "token dead 463",
        "token dead 460",
        "permission",
        "retired metric",
        "throttled 80001",
    ] {
        assert!(seen.contains(expected), "{expected} not reached; saw {seen:?}");
    }
    assert!(usage_climbed, "usage headers climb towards the budget");
}

#[test]
fn the_last_posts_page_can_be_an_empty_page_that_still_has_next() {
    let sim = sim_with("case-study", FaultSpec { empty_page_with_next: true, ..FaultSpec::default() });
    let path = page_path(&sim, 0, "published_posts");
    let mut cursor: Option<String> = None;
    let mut empty_with_next = false;
    for _ in 0..50 {
        let mut q = vec![("limit", "100"), ("fields", "id")];
        if let Some(c) = &cursor {
            q.push(("after", c));
        }
        let body: PostsResponse = ok(&get(&sim, 0, &path, &q));
        let paging = body.paging.unwrap();
        if body.data.is_empty() && paging.next.is_some() {
            empty_with_next = true;
            break;
        }
        match paging.next {
            Some(_) => cursor = paging.cursors.unwrap().after,
            None => break,
        }
    }
    assert!(empty_with_next);
}

#[test]
fn app_and_other_page_throttle_codes_are_reachable() {
    let faults = FaultSpec {
        page_budget: Some(2),
        app_budget: Some(40),
        budget_window_ms: 60_000,
        lockout_ms: 1000,
        ..FaultSpec::default()
    };
    let sim = sim_with("case-study", faults);
    let mut codes = BTreeSet::new();
    for i in 0..60 {
        let page = i % 4;
        let resp = get(
            &sim,
            page,
            &page_path(&sim, page, "insights"),
            &[("metric", "page_fans"), ("since", &format!("2018-01-{:02}", i % 28 + 1))],
        );
        if resp.status != 200 {
            codes.insert(error(&resp).code);
        }
    }
    assert_eq!(codes, [4, 17, 32, 613, 80001].into());
}

#[test]
fn appsecret_proof_is_enforced_when_configured() {
    let s = scenario::resolve("case-study").unwrap();
    let sim = Sim::new(World::new(s, None), Some("app-secret".into()));
    let token = sim.world.pages[0].token.clone();
    let path = page_path(&sim, 0, "insights");
    let e = error(&get(&sim, 0, &path, &[("metric", "page_fans")]));
    assert!(e.message.contains("appsecret_proof"));
    let proof = pulse_sim::api::appsecret_proof("app-secret", &token);
    let _: InsightsResponse = ok(&get(&sim, 0, &path, &[("metric", "page_fans"), ("appsecret_proof", &proof)]));
}

#[test]
fn a_malformed_scenario_is_refused_with_file_line_and_field() {
    let text = "[world]\nname = \"x\"\nseed = 1\napi_version = \"v2.12\"\nstart = \"2018-01-01\"\nend = \"2018-02-01\"\nstrat = 1\n";
    let err = Scenario::parse(text, Path::new("bad.toml")).unwrap_err().to_string();
    assert!(err.starts_with("bad.toml:7:1: unknown field `strat`"), "{err}");
    let text =
        "[world]\nname = \"x\"\nseed = 1\napi_version = \"2.12\"\nstart = \"2018-01-01\"\nend = \"2018-02-01\"\n";
    let err = Scenario::parse(text, Path::new("bad.toml")).unwrap_err().to_string();
    assert!(err.starts_with("bad.toml:4:15: invalid API version"), "{err}");
    let text = "[world]\nname = \"x\"\nseed = 1\napi_version = \"v2.12\"\nstart = \"2018-01-01\"\nend = \"2018-02-01\"\n[[tenant]]\nid = \"t\"\nname = \"T\"\ncode_prefix = \"M8\"\npractices = 3\nfacebook_share = 0.5\nlist_size = [1000, 2000]\n";
    let err = Scenario::parse(text, Path::new("bad.toml")).unwrap_err().to_string();
    assert!(err.starts_with("bad.toml:8:6: tenant t: code_prefix"), "{err}");
}

#[test]
fn the_national_scenario_is_lazy() {
    let world = World::new(scenario::resolve("national").unwrap(), None);
    assert_eq!(world.tenants.len(), 42);
    assert!(world.pages.len() > 3500, "{}", world.pages.len());
    // Any page-day is generated on demand, in any order, to the same value.
    let day = world.end();
    let last = world.pages.len() - 1;
    assert_eq!(world.day(last, day), world.day(last, day));
}

#[tokio::test]
async fn it_serves_over_http() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let s = scenario::resolve("case-study").unwrap();
    let running = pulse_sim::start(Arc::new(Sim::new(World::new(s, None), None)), 0).await.unwrap();
    let page = &running.sim.world.pages[0];
    let client = reqwest::Client::new();
    let resp = client
        .get(format!("{}/v2.12/{}/insights?metric=page_fans&since=2018-01-01&until=2018-01-05", running.url(), page.id))
        .bearer_auth(&page.token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().contains_key("x-app-usage") && resp.headers().contains_key("x-business-use-case-usage"));
    let body: InsightsResponse = resp.json().await.unwrap();
    assert_eq!(body.data[0].values.len(), 4);
    assert!(body.paging.unwrap().next.unwrap().starts_with(&running.url()));
    let truth: serde_json::Value =
        client.get(format!("{}/_sim/truth", running.url())).send().await.unwrap().json().await.unwrap();
    assert_eq!(truth["format"], "pulse-sim-truth/1");
}

#[test]
fn the_case_study_truth_shows_the_seeds_figures() {
    let truth = World::new(scenario::resolve("case-study").unwrap(), None).truth();
    let stroke = truth.campaigns.iter().find(|c| c.name.contains("stroke")).unwrap();
    assert!(
        stroke.window_totals.video_views > 20_000.0,
        "stroke video weekend views {}",
        stroke.window_totals.video_views
    );
    assert_eq!(stroke.days, 2);
    let heart = truth.campaigns.iter().find(|c| c.name.contains("heart")).unwrap();
    assert!(heart.window_totals.reach > 45_000.0, "heart screening weekend reach {}", heart.window_totals.reach);
    let s = &truth.summary;
    assert!((200..=1500).contains(&s.weekly_engaged_users_median), "{s:?}");
    assert!(s.weekly_engaged_users_p25 >= 200 && s.weekly_engaged_users_p75 <= 1500, "{s:?}");
    let band = |b: &str| s.engaged_share_by_band[b];
    assert!(band("35-44") + band("45-54") > 0.45);
    assert!(band("55-64") + band("65+") > band("13-17") + band("18-24"));
    assert!(truth.events.iter().any(|e| e.start == NaiveDate::from_ymd_opt(2017, 5, 12).unwrap()));
    let practices: usize = truth.tenants.iter().map(|t| t.practices.len()).sum();
    let with_pages: usize = truth.tenants.iter().flat_map(|t| &t.practices).filter(|p| p.page.is_some()).count();
    assert!((with_pages as f64 / practices as f64 - 2.0 / 3.0).abs() < 0.12, "{with_pages}/{practices}");
}
