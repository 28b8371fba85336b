//! One conformance suite, run against both store backends.
//!
//! The lake runs everywhere. ClickHouse runs when `PULSE_TEST_CLICKHOUSE_URL` is set (CI sets it, after starting a
//! real server with `.ci/clickhouse.sh`); with `PULSE_REQUIRE_CLICKHOUSE=1` (CI) a missing or unreachable server is
//! a failure, otherwise the ClickHouse half is skipped with a message saying how to run it. Each ClickHouse test
//! uses a fresh database, so tests never see each other's data.

use std::sync::Arc;

#[path = "support/cluster.rs"]
mod cluster;

use arrow::array::{Date32Array, Float64Array, StringArray, UInt32Array};
use arrow::record_batch::RecordBatch;
use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Utc};
use pulse_config::WriteScope;
use pulse_domain::{
    ApiVersion, CanonicalMetric, Checkpoint, IngestRunRecord, PageInsightFact, Period, Post, PostInsightSnapshot,
    Stream, TenantId,
};
use pulse_store::clickhouse::{ClickHouseSettings, ClickHouseStore};
use pulse_store::lake::LakeStore;
use pulse_store::report::REACH_WEEKLY;
use pulse_store::{FactFilter, Fetched, PostFilter, ReportVariant, Store, StoreError, TenantBatch};

fn main() -> ReportVariant {
    ReportVariant::main()
}

fn scopes() -> (WriteScope, WriteScope) {
    let access = pulse_config::testing::operator([TenantId::new("alpha").unwrap(), TenantId::new("beta").unwrap()]);
    (access.write_scope("alpha").unwrap(), access.write_scope("beta").unwrap())
}

fn day(d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(2018, 1, 1).unwrap() + Duration::days(d as i64 - 1)
}

fn at(secs: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2018, 6, 1, 0, 0, 0).unwrap() + Duration::seconds(secs)
}

fn fact(
    practice: &str,
    page: &str,
    metric: CanonicalMetric,
    d: NaiveDate,
    breakdown: &str,
    value: f64,
    fetched: i64,
) -> PageInsightFact {
    PageInsightFact {
        practice: practice.parse().unwrap(),
        page: page.parse().unwrap(),
        metric,
        graph_metric: "page_impressions_unique",
        period: Period::Day,
        day: d,
        breakdown: breakdown.into(),
        value,
        api_version: ApiVersion::new(2, 12),
        fetched_at: at(fetched) + Duration::microseconds(250),
    }
}

/// 60 days × 2 pages × (reach + 2 breakdown cells), spanning three months.
fn window(fetched: i64) -> Vec<PageInsightFact> {
    let mut out = Vec::new();
    for d in 1..=60 {
        for (practice, page) in [("M83001", "1001"), ("M83002", "1002")] {
            out.push(fact(practice, page, CanonicalMetric::PageReach, day(d), "", 100.0 + d as f64, fetched));
            out.push(fact(practice, page, CanonicalMetric::PageEngagedByAgeGender, day(d), "F.35-44", 20.0, fetched));
            out.push(fact(practice, page, CanonicalMetric::PageEngagedByAgeGender, day(d), "M.65+", 7.0, fetched));
        }
    }
    out
}

fn sorted(mut facts: Vec<PageInsightFact>) -> Vec<PageInsightFact> {
    facts.sort_by(|a, b| a.key().cmp(&b.key()));
    facts
}

async fn facts_are_never_doubled<S: Store>(store: &S) {
    let (alpha, _) = scopes();
    let facts = window(0);
    assert_eq!(store.write_page_insights(&alpha, &facts).await.unwrap().rows, facts.len());
    assert_eq!(store.write_page_insights(&alpha, &facts).await.unwrap().rows, facts.len());
    let back = store.read_page_insights(&alpha, &FactFilter::default()).await.unwrap();
    assert_eq!(back.len(), facts.len(), "writing the same window twice must not double it");
    assert_eq!(sorted(back), sorted(facts.clone()));
    let total: f64 = store
        .read_page_insights(&alpha, &FactFilter::default().metrics([CanonicalMetric::PageReach]))
        .await
        .unwrap()
        .iter()
        .map(|f| f.value)
        .sum();
    let expected: f64 = facts.iter().filter(|f| f.metric == CanonicalMetric::PageReach).map(|f| f.value).sum();
    assert_eq!(total, expected);
}

async fn a_corrected_value_supersedes_and_a_stale_one_does_not<S: Store>(store: &S) {
    let (alpha, _) = scopes();
    store.write_page_insights(&alpha, &window(0)).await.unwrap();
    // Meta revised day 10 of page 1001: a later fetch with a new value.
    let corrected = fact("M83001", "1001", CanonicalMetric::PageReach, day(10), "", 999.0, 3600);
    store.write_page_insights(&alpha, std::slice::from_ref(&corrected)).await.unwrap();
    // A stale fetch arriving late (an older fetched_at) must not undo the correction.
    let stale = fact("M83001", "1001", CanonicalMetric::PageReach, day(10), "", 1.0, 60);
    store.write_page_insights(&alpha, &[stale]).await.unwrap();
    let filter = FactFilter::days(day(10), day(10)).metrics([CanonicalMetric::PageReach]);
    let back = store.read_page_insights(&alpha, &filter).await.unwrap();
    assert_eq!(back.len(), 2, "{back:?}");
    let page_1001 = back.iter().find(|f| f.page.as_str() == "1001").unwrap();
    assert_eq!(page_1001.value, 999.0);
    assert_eq!(page_1001.fetched_at, corrected.fetched_at);
}

/// What an incremental pipelines run recomputes: the days of facts fetched since a time, this tenant's only.
async fn the_days_fetched_since_a_time_are_the_days_written_since<S: Store>(store: &S) {
    let (alpha, beta) = scopes();
    store.write_page_insights(&alpha, &window(0)).await.unwrap();
    let revised = fact("M83001", "1001", CanonicalMetric::PageReach, day(10), "", 999.0, 3600);
    let new_day = fact("M83002", "1002", CanonicalMetric::PageReach, day(45), "", 5.0, 7200);
    store.write_page_insights(&alpha, &[revised, new_day]).await.unwrap();
    let other = fact("M83001", "1001", CanonicalMetric::PageReach, day(50), "", 1.0, 9000);
    store.write_page_insights(&beta, &[other]).await.unwrap();
    let alpha = &alpha;
    let days = |since: i64| async move { store.days_fetched_since(alpha, Fetched::Facts, at(since)).await.unwrap() };
    assert_eq!(days(3000).await.into_iter().collect::<Vec<_>>(), vec![day(10), day(45)]);
    assert_eq!(days(3600).await.into_iter().collect::<Vec<_>>(), vec![day(10), day(45)], "a fetch at the time counts");
    assert_eq!(days(7000).await.into_iter().collect::<Vec<_>>(), vec![day(45)]);
    assert!(days(100_000).await.is_empty(), "nothing fetched since");
    assert_eq!(days(-1).await.len(), 60, "everything fetched since before the first write: every day");
}

async fn reads_filter_by_metric_date_practice_and_page<S: Store>(store: &S) {
    let (alpha, _) = scopes();
    store.write_page_insights(&alpha, &window(0)).await.unwrap();
    let feb = FactFilter::days(day(32), day(59));
    let all_feb = store.read_page_insights(&alpha, &feb).await.unwrap();
    assert_eq!(all_feb.len(), 28 * 2 * 3);
    assert!(all_feb.iter().all(|f| f.day >= day(32) && f.day <= day(59)));
    let one = feb.clone().metrics([CanonicalMetric::PageEngagedByAgeGender]).practices(["M83002".parse().unwrap()]);
    let back = store.read_page_insights(&alpha, &one).await.unwrap();
    assert_eq!(back.len(), 28 * 2);
    assert!(
        back.iter().all(|f| f.practice.as_str() == "M83002" && f.metric == CanonicalMetric::PageEngagedByAgeGender)
    );
    let mut by_page = FactFilter::days(day(1), day(3));
    by_page.pages = vec!["1001".parse().unwrap()];
    assert_eq!(store.read_page_insights(&alpha, &by_page).await.unwrap().len(), 3 * 3);
    let weekly = FactFilter::default().periods([Period::Week]);
    assert!(store.read_page_insights(&alpha, &weekly).await.unwrap().is_empty());
    let empty_range = FactFilter::days(day(200), day(300));
    assert!(store.read_page_insights(&alpha, &empty_range).await.unwrap().is_empty());
}

/// Series (what the pipelines read, grouped where the rows are on a server) are the facts `read_page_insights`
/// reads, grouped: the latest version of each identity, the same filters, days ascending, one tenant's only.
async fn series_are_the_facts_read_grouped<S: Store>(store: &S) {
    let (alpha, beta) = scopes();
    store.write_page_insights(&alpha, &window(0)).await.unwrap();
    // A correction and a stale fetch of page 1001's day 10 (the correction wins); page 1002's day 5 re-fetched
    // after the page moved to another practice (its latest version is that practice's); another tenant's facts.
    let corrected = fact("M83001", "1001", CanonicalMetric::PageReach, day(10), "", 999.0, 3600);
    let stale = fact("M83001", "1001", CanonicalMetric::PageReach, day(10), "", 1.0, 60);
    let moved = fact("M83009", "1002", CanonicalMetric::PageReach, day(5), "", 555.0, 3600);
    store.write_page_insights(&alpha, &[corrected]).await.unwrap();
    store.write_page_insights(&alpha, &[stale, moved]).await.unwrap();
    store.write_page_insights(&beta, &window(0)[..30]).await.unwrap();
    let m83002: pulse_domain::PracticeCode = "M83002".parse().unwrap();
    let filters = [
        FactFilter::default(),
        FactFilter::days(day(32), day(59)).metrics([CanonicalMetric::PageReach]),
        FactFilter::days(day(1), day(20)).practices([m83002.clone()]),
        FactFilter { pages: vec!["1001".parse().unwrap()], ..FactFilter::days(day(1), day(40)) },
        FactFilter::days(day(1), day(60)).metrics([CanonicalMetric::PageEngagedByAgeGender]).sundays_or_from(day(55)),
    ];
    for filter in &filters {
        let series = store.read_fact_series(alpha.read(), filter).await.unwrap();
        let rows = store.read_page_insights(alpha.read(), filter).await.unwrap();
        assert_eq!(series, pulse_store::FactSeries::group(rows.clone()), "{filter:?}");
        assert_eq!(series.iter().map(|s| s.len()).sum::<usize>(), rows.len(), "{filter:?}");
        assert!(series.iter().all(|s| s.days.is_sorted() && s.days.len() == s.values.len()), "{filter:?}");
    }
    let all = store.read_fact_series(alpha.read(), &FactFilter::default()).await.unwrap();
    assert_eq!(all.len(), 2 * 3 + 1, "two pages x (reach + two cells), and page 1002's reach under its new practice");
    let reach = |practice: &str, page: &str| {
        all.iter()
            .find(|s| s.practice.as_str() == practice && s.page.as_str() == page && s.breakdown.is_empty())
            .unwrap()
    };
    let r1001 = reach("M83001", "1001");
    assert_eq!(r1001.values[r1001.days.iter().position(|d| *d == day(10)).unwrap()], 999.0, "the correction wins");
    assert_eq!(r1001.len(), 60);
    assert_eq!(reach("M83009", "1002").days, vec![day(5)], "the moved day is under its latest practice");
    assert!(!reach("M83002", "1002").days.contains(&day(5)), "and not under the old one");
    // The practice filter applies to the latest version: page 1002's day 5 is no longer M83002's.
    let of_m83002 = store.read_fact_series(alpha.read(), &FactFilter::default().practices([m83002])).await.unwrap();
    assert!(of_m83002.iter().all(|s| s.practice.as_str() == "M83002"), "{of_m83002:?}");
    let reach_of_m83002 = of_m83002.iter().find(|s| s.breakdown.is_empty()).unwrap();
    assert_eq!(reach_of_m83002.len(), 59, "page 1002's reach without its moved day");
    assert!(!reach_of_m83002.days.contains(&day(5)));
    let sundays = store
        .read_fact_series(
            alpha.read(),
            &FactFilter::default().metrics([CanonicalMetric::PageEngagedByAgeGender]).sundays_or_from(day(58)),
        )
        .await
        .unwrap();
    assert!(sundays.iter().flat_map(|s| &s.days).all(|d| d.weekday() == chrono::Weekday::Sun || *d >= day(58)));
    let theirs = store.read_fact_series(beta.read(), &FactFilter::default()).await.unwrap();
    assert_eq!(theirs.iter().map(|s| s.len()).sum::<usize>(), 30, "another tenant's series are its own");
}

async fn another_tenants_scope_sees_nothing<S: Store>(store: &S) {
    let (alpha, beta) = scopes();
    store.write_page_insights(&alpha, &window(0)).await.unwrap();
    store.write_posts(&alpha, &posts()).await.unwrap();
    store.write_post_snapshots(&alpha, &snapshots(0)).await.unwrap();
    store.save_checkpoints(&alpha, &[checkpoint(day(5), 0)]).await.unwrap();
    store.record_run(&alpha, &[run("r1", 0)]).await.unwrap();
    store.replace_report(&alpha, &REACH_WEEKLY, &main(), &reach_report(3)).await.unwrap();
    assert!(store.read_page_insights(&beta, &FactFilter::default()).await.unwrap().is_empty());
    assert!(store.read_posts(&beta, &PostFilter::default()).await.unwrap().is_empty());
    assert!(store.read_post_snapshots(&beta, &PostFilter::default()).await.unwrap().is_empty());
    assert!(store.load_checkpoints(&beta).await.unwrap().is_empty());
    assert!(store.read_runs(&beta).await.unwrap().is_empty());
    assert_eq!(store.read_report(&beta, &REACH_WEEKLY, &main()).await.unwrap().num_rows(), 0);
    // And beta's writes never show up in alpha's reads.
    store.write_page_insights(&beta, &window(0)[..3]).await.unwrap();
    assert_eq!(store.read_page_insights(&alpha, &FactFilter::default()).await.unwrap().len(), window(0).len());
    assert_eq!(store.read_page_insights(&beta, &FactFilter::default()).await.unwrap().len(), 3);
}

fn posts() -> Vec<Post> {
    (0..5)
        .map(|i| Post {
            practice: "M83001".parse().unwrap(),
            page: "1001".parse().unwrap(),
            post: format!("1001_{i}").parse().unwrap(),
            created_time: Utc.with_ymd_and_hms(2018, 1, 10 + i, 18, 30, 0).unwrap(),
            post_type: if i == 0 { "video".into() } else { "photo".into() },
            message: format!("Post {i}: flu clinic this Saturday ? 'quoted' \"double\" \\ back"),
            permalink: format!("https://www.facebook.com/1001/posts/{i}"),
            fetched_at: at(i as i64),
        })
        .collect()
}

fn snapshots(fetched: i64) -> Vec<PostInsightSnapshot> {
    let mut out = Vec::new();
    for snap in 0..3u32 {
        for (metric, breakdown, value) in [
            (CanonicalMetric::PostVideoViews, "", 1000.0 * (snap + 1) as f64),
            (CanonicalMetric::PostVideoViewTimeByAgeGender, "F.45-54", 5000.0),
        ] {
            out.push(PostInsightSnapshot {
                practice: "M83001".parse().unwrap(),
                page: "1001".parse().unwrap(),
                post: "1001_0".parse().unwrap(),
                metric,
                graph_metric: "post_video_views",
                breakdown: breakdown.into(),
                snapshot_day: day(10 + snap * 7),
                value,
                api_version: ApiVersion::new(2, 12),
                fetched_at: at(fetched),
            });
        }
    }
    out
}

fn checkpoint(through: NaiveDate, updated: i64) -> Checkpoint {
    Checkpoint {
        practice: "M83001".parse().unwrap(),
        page: "1001".parse().unwrap(),
        stream: Stream::PageInsights(Period::Day),
        through_day: through,
        updated_at: at(updated),
    }
}

fn run(id: &str, started: i64) -> IngestRunRecord {
    IngestRunRecord {
        run_id: id.into(),
        practice: "M83001".parse().unwrap(),
        started_at: at(started),
        finished_at: at(started + 90),
        requests: 120,
        retries: 3,
        throttled_ms: 1500,
        rows_written: 4200,
        errors: 0,
        pages_needing_reauth: 0,
        status: pulse_domain::RunStatus::Ok,
        message: String::new(),
    }
}

fn reach_report(weeks: usize) -> RecordBatch {
    let f = |v: fn(usize) -> Option<f64>| -> Arc<dyn arrow::array::Array> {
        Arc::new(Float64Array::from_iter((0..weeks).map(v)))
    };
    RecordBatch::try_new(
        REACH_WEEKLY.schema(),
        vec![
            Arc::new(StringArray::from_iter_values((0..weeks).map(|_| "M83001"))),
            Arc::new(StringArray::from_iter_values((0..weeks).map(|_| "1001"))),
            Arc::new(Date32Array::from_iter_values((0..weeks).map(|w| 17538 + 7 * w as i32))),
            f(|w| Some(800.0 + w as f64)),
            f(|_| Some(120.0)),
            f(|w| Some(2000.0 + w as f64)),
            f(|_| Some(150.0)),
            f(|_| None),
            f(|_| Some(12.0)),
            f(|w| Some(150.0 / (2000.0 + w as f64))),
            f(|w| if w == 0 { None } else { Some(0.01) }),
            f(|w| Some(w as f64 - 1.5)),
            Arc::new(StringArray::from_iter_values(
                (0..weeks).map(|w| if w == 3 { "reach per follower 3.1 MADs above the tenant's median" } else { "" }),
            )),
            Arc::new(UInt32Array::from_iter_values((0..weeks).map(|_| 7))),
        ],
    )
    .unwrap()
}

async fn posts_and_snapshots_round_trip_without_doubling<S: Store>(store: &S) {
    let (alpha, _) = scopes();
    store.write_posts(&alpha, &posts()).await.unwrap();
    store.write_posts(&alpha, &posts()).await.unwrap();
    let mut back = store.read_posts(&alpha, &PostFilter::default()).await.unwrap();
    back.sort_by(|a, b| a.post.cmp(&b.post));
    assert_eq!(back, posts());
    let filter = PostFilter { from: Some(day(11)), to: Some(day(12)), ..PostFilter::default() };
    assert_eq!(store.read_posts(&alpha, &filter).await.unwrap().len(), 2);

    store.write_post_snapshots(&alpha, &snapshots(0)).await.unwrap();
    store.write_post_snapshots(&alpha, &snapshots(10)).await.unwrap();
    let back = store.read_post_snapshots(&alpha, &PostFilter::default()).await.unwrap();
    assert_eq!(back.len(), snapshots(0).len(), "each (post, metric, breakdown, snapshot day) once");
    assert!(back.iter().all(|s| s.fetched_at == at(10)), "the later snapshot fetch wins");
    let views: Vec<f64> = {
        let mut v: Vec<_> = back.iter().filter(|s| s.metric == CanonicalMetric::PostVideoViews).collect();
        v.sort_by_key(|s| s.snapshot_day);
        v.iter().map(|s| s.value).collect()
    };
    assert_eq!(views, vec![1000.0, 2000.0, 3000.0], "the growth curve is kept");

    // How far back an incremental run reads posts and snapshots: the days of those fetched since a time.
    let (_, beta) = scopes();
    let days = |rows: Fetched, since: i64| {
        let alpha = &alpha;
        async move { store.days_fetched_since(alpha, rows, at(since)).await.unwrap().into_iter().collect::<Vec<_>>() }
    };
    assert_eq!(
        days(Fetched::Posts, 3).await,
        vec![day(13), day(14)],
        "posts by created day, a fetch at the time counts"
    );
    assert!(days(Fetched::Posts, 5).await.is_empty(), "no post fetched since");
    assert_eq!(days(Fetched::Snapshots, 5).await, vec![day(10), day(17), day(24)], "snapshots by snapshot day");
    assert!(days(Fetched::Snapshots, 11).await.is_empty(), "no snapshot fetched since");
    let theirs = store.days_fetched_since(&beta, Fetched::Snapshots, at(-1)).await.unwrap();
    assert!(theirs.is_empty(), "another tenant's fetches are not this one's");
}

async fn checkpoints_keep_the_latest<S: Store>(store: &S) {
    let (alpha, _) = scopes();
    store.save_checkpoints(&alpha, &[checkpoint(day(5), 0)]).await.unwrap();
    store.save_checkpoints(&alpha, &[checkpoint(day(9), 10)]).await.unwrap();
    let mut posts_cp = checkpoint(day(3), 10);
    posts_cp.stream = Stream::Posts;
    store.save_checkpoints(&alpha, &[posts_cp.clone()]).await.unwrap();
    let mut back = store.load_checkpoints(&alpha).await.unwrap();
    back.sort_by_key(|c| c.stream);
    assert_eq!(back, vec![checkpoint(day(9), 10), posts_cp]);
}

async fn run_records_are_kept_newest_first<S: Store>(store: &S) {
    let (alpha, _) = scopes();
    store.record_run(&alpha, &[run("r1", 0)]).await.unwrap();
    store.record_run(&alpha, &[run("r2", 1000)]).await.unwrap();
    store.record_run(&alpha, &[run("r2", 1000)]).await.unwrap();
    let back = store.read_runs(&alpha).await.unwrap();
    assert_eq!(back, vec![run("r2", 1000), run("r1", 0)]);
}

fn audit(id: &str, secs: i64) -> pulse_domain::ExportAuditRecord {
    pulse_domain::ExportAuditRecord {
        export_id: id.into(),
        created_at: at(secs),
        requested_by: "key 0123abcd".into(),
        tenants: "alpha,beta".into(),
        project: "stroke-eval".into(),
        purpose: "DSA-1".into(),
        spec_hash: "abc".into(),
        spec: "{\"from\":null}".into(),
        rows: 1234,
        files: "{\"reach_weekly.csv\":\"ff\"}".into(),
    }
}

async fn the_export_audit_trail_only_grows_and_stays_in_its_tenant<S: Store>(store: &S) {
    let (alpha, beta) = scopes();
    store.append_export_audit(&alpha, &audit("e1", 0)).await.unwrap();
    store.append_export_audit(&alpha, &audit("e2", 60)).await.unwrap();
    store.append_export_audit(&beta, &audit("e2", 60)).await.unwrap();
    assert_eq!(store.read_export_audit(alpha.read()).await.unwrap(), vec![audit("e2", 60), audit("e1", 0)]);
    assert_eq!(store.read_export_audit(beta.read()).await.unwrap(), vec![audit("e2", 60)]);
}

/// An incremental run replaces a partitioned report from a month on: the months before stay as they were, the
/// months after the new rows are gone, other variants are untouched, and a replacement that is not from a month's
/// first day, or holds rows before it, is refused with nothing written.
async fn a_report_replaced_from_a_month_keeps_the_months_before<S: Store>(store: &S) {
    let (alpha, _) = scopes();
    let (feb, mar) = (NaiveDate::from_ymd_opt(2018, 2, 1).unwrap(), NaiveDate::from_ymd_opt(2018, 3, 1).unwrap());
    let q1 = ReportVariant::named("2018-01-01..2018-03-31").unwrap();
    store.replace_report(&alpha, &REACH_WEEKLY, &q1, &reach_report(3)).await.unwrap();
    // Weeks ending 7 January 2018 on: four in January, four in February, four in March.
    store.replace_report(&alpha, &REACH_WEEKLY, &main(), &reach_report(12)).await.unwrap();
    let from_feb = store.read_report_from(&alpha, &REACH_WEEKLY, &main(), feb).await.unwrap();
    assert_eq!(from_feb, reach_report(12).slice(4, 8), "the rows from February on");
    // February on replaced by ten weeks (to April): January as it was.
    let ack = store.replace_report_from(&alpha, &REACH_WEEKLY, &main(), feb, &reach_report(14).slice(4, 10)).await;
    let written = ack.unwrap().rows;
    assert!(
        (10..=14).contains(&written),
        "the ten rows, and January's too when the whole slice is rewritten: {written}"
    );
    assert_eq!(store.read_report(&alpha, &REACH_WEEKLY, &main()).await.unwrap(), reach_report(14));
    // March on replaced by one week: April is gone.
    store.replace_report_from(&alpha, &REACH_WEEKLY, &main(), mar, &reach_report(9).slice(8, 1)).await.unwrap();
    assert_eq!(store.read_report(&alpha, &REACH_WEEKLY, &main()).await.unwrap(), reach_report(9));
    assert_eq!(store.read_report(&alpha, &REACH_WEEKLY, &q1).await.unwrap(), reach_report(3), "another variant");
    // Refused, nothing written: not a month's first day; rows before `from`; a table stored whole.
    let feb2 = feb.succ_opt().unwrap();
    let err = store.replace_report_from(&alpha, &REACH_WEEKLY, &main(), feb2, &reach_report(9).slice(5, 4)).await;
    assert!(matches!(err, Err(StoreError::Report { .. })), "{err:?}");
    let err = store.replace_report_from(&alpha, &REACH_WEEKLY, &main(), mar, &reach_report(9).slice(7, 2)).await;
    assert!(matches!(err, Err(StoreError::Report { .. })), "{err:?}");
    let runs = &pulse_store::report::REPORT_RUNS;
    let err = store.replace_report_from(&alpha, runs, &main(), mar, &runs.empty()).await;
    assert!(matches!(err, Err(StoreError::Report { .. })), "{err:?}");
    assert_eq!(store.read_report(&alpha, &REACH_WEEKLY, &main()).await.unwrap(), reach_report(9));
    // Emptied from February on.
    store.replace_report_from(&alpha, &REACH_WEEKLY, &main(), feb, &reach_report(0)).await.unwrap();
    assert_eq!(store.read_report(&alpha, &REACH_WEEKLY, &main()).await.unwrap(), reach_report(4));
}

/// `weeks` weeks of reach from 7 January 2018 (eight: January and February) of page 1001, then of page 1002: page
/// by page.
fn two_pages_of_reach(weeks: usize) -> RecordBatch {
    let page = |id: &str| {
        let b = reach_report(weeks);
        let mut columns = b.columns().to_vec();
        columns[1] = Arc::new(StringArray::from_iter_values((0..b.num_rows()).map(|_| id)));
        RecordBatch::try_new(b.schema(), columns).unwrap()
    };
    arrow::compute::concat_batches(&REACH_WEEKLY.schema(), [&page("1001"), &page("1002")]).unwrap()
}

/// A partitioned report reads back month by month, each month's rows in the order written (here page by page), on
/// every store: what an incremental run writes a month at a time then reads back as a full run's.
async fn a_partitioned_report_reads_back_month_by_month<S: Store>(store: &S) {
    let (alpha, _) = scopes();
    let written = two_pages_of_reach(8);
    store.replace_report(&alpha, &REACH_WEEKLY, &main(), &written).await.unwrap();
    let back = store.read_report(&alpha, &REACH_WEEKLY, &main()).await.unwrap();
    let pages = back.column(1).as_any().downcast_ref::<StringArray>().unwrap();
    let weeks = back.column(2).as_any().downcast_ref::<Date32Array>().unwrap();
    let order: Vec<(String, i32)> = (0..back.num_rows()).map(|i| (pages.value(i).to_owned(), weeks.value(i))).collect();
    let expected: Vec<(String, i32)> = [(0..4), (4..8)]
        .into_iter()
        .flat_map(|weeks| {
            let weeks: Vec<i32> = weeks.map(|w| 17538 + 7 * w).collect();
            ["1001", "1002"].into_iter().flat_map(move |p| weeks.clone().into_iter().map(move |w| (p.to_owned(), w)))
        })
        .collect();
    assert_eq!(order, expected, "January page by page, then February page by page");
}

async fn report_slices_are_replaced_whole<S: Store>(store: &S) {
    let (alpha, _) = scopes();
    assert_eq!(store.read_report(&alpha, &REACH_WEEKLY, &main()).await.unwrap().num_rows(), 0);
    store.replace_report(&alpha, &REACH_WEEKLY, &main(), &reach_report(5)).await.unwrap();
    let back = store.read_report(&alpha, &REACH_WEEKLY, &main()).await.unwrap();
    assert_eq!(back, reach_report(5));
    store.replace_report(&alpha, &REACH_WEEKLY, &main(), &reach_report(2)).await.unwrap();
    assert_eq!(store.read_report(&alpha, &REACH_WEEKLY, &main()).await.unwrap(), reach_report(2));
    // A named variant (a narrower jobs run) is a slice of its own: writing it leaves the main slice as it was.
    let q1 = ReportVariant::named("2018-01-01..2018-03-31").unwrap();
    store.replace_report(&alpha, &REACH_WEEKLY, &q1, &reach_report(1)).await.unwrap();
    assert_eq!(store.read_report(&alpha, &REACH_WEEKLY, &q1).await.unwrap(), reach_report(1));
    assert_eq!(store.read_report(&alpha, &REACH_WEEKLY, &main()).await.unwrap(), reach_report(2));
    store.replace_report(&alpha, &REACH_WEEKLY, &q1, &reach_report(3)).await.unwrap();
    assert_eq!(store.read_report(&alpha, &REACH_WEEKLY, &main()).await.unwrap(), reach_report(2));
    assert_eq!(store.read_report(&alpha, &REACH_WEEKLY, &q1).await.unwrap(), reach_report(3));
    store.replace_report(&alpha, &REACH_WEEKLY, &main(), &reach_report(0)).await.unwrap();
    assert_eq!(store.read_report(&alpha, &REACH_WEEKLY, &main()).await.unwrap().num_rows(), 0);
    assert_eq!(store.read_report(&alpha, &REACH_WEEKLY, &q1).await.unwrap(), reach_report(3));
    assert!(ReportVariant::named("../x").is_err() && ReportVariant::named("").is_err());
    // A batch in the wrong shape is refused before anything is written.
    let wrong = RecordBatch::try_new(
        Arc::new(arrow::datatypes::Schema::new(vec![arrow::datatypes::Field::new(
            "x",
            arrow::datatypes::DataType::Utf8,
            false,
        )])),
        vec![Arc::new(StringArray::from(vec!["a"]))],
    )
    .unwrap();
    let err = store.replace_report(&alpha, &REACH_WEEKLY, &main(), &wrong).await.unwrap_err();
    assert!(matches!(err, StoreError::Report { .. }), "{err}");
}

async fn migrate_twice_is_a_no_op<S: Store>(store: &S) {
    let second = store.migrate().await.unwrap();
    assert!(second.applied.is_empty(), "second migrate applied {:?}", second.applied);
}

fn event(id: &str, stream: &str, key: &str, secs: i64) -> pulse_domain::StateEvent {
    pulse_domain::StateEvent {
        id: id.into(),
        stream: stream.into(),
        key: key.into(),
        at: at(secs),
        body: format!("{{\"state\":\"{id}\"}}"),
    }
}

async fn the_state_journal_appends_once_per_event_in_order_and_per_tenant<S: Store>(store: &S) {
    let (alpha, beta) = scopes();
    store.append_state(&alpha, &[event("e2", "delivery", "k", 20), event("e1", "delivery", "k", 10)]).await.unwrap();
    store.append_state(&alpha, &[event("e3", "schedule", "digest", 15)]).await.unwrap();
    // Written again (a retried write): still once.
    store.append_state(&alpha, &[event("e2", "delivery", "k", 20)]).await.unwrap();
    store.append_state(&beta, &[event("b1", "delivery", "k", 5)]).await.unwrap();
    let back = store.read_state(&alpha, "delivery").await.unwrap();
    assert_eq!(back, vec![event("e1", "delivery", "k", 10), event("e2", "delivery", "k", 20)]);
    assert_eq!(store.read_state(&alpha, "schedule").await.unwrap(), vec![event("e3", "schedule", "digest", 15)]);
    assert_eq!(store.read_state(&beta, "delivery").await.unwrap(), vec![event("b1", "delivery", "k", 5)]);
    assert!(store.read_state(&beta, "schedule").await.unwrap().is_empty());
}

async fn a_lease_has_one_holder_until_released_or_expired<S: Store>(store: &S) {
    use pulse_store::LeaseOutcome;
    use std::time::Duration;
    let (alpha, beta) = scopes();
    let ttl = Duration::from_secs(2);
    // Holders on another host (their liveness cannot be checked from here): only expiry or release frees them.
    let h = |i: u32| format!("elsewhere:{}:h{i}", 1000 + i);
    // Four rivals at once: exactly one wins, and the others are told who.
    let (h1, h2, h3, h4) = (h(1), h(2), h(3), h(4));
    let (a, b, c, d) = tokio::join!(
        store.try_lease(&alpha, "digest", &h1, ttl),
        store.try_lease(&alpha, "digest", &h2, ttl),
        store.try_lease(&alpha, "digest", &h3, ttl),
        store.try_lease(&alpha, "digest", &h4, ttl),
    );
    let outcomes = [a.unwrap(), b.unwrap(), c.unwrap(), d.unwrap()];
    let winners: Vec<&pulse_domain::Lease> =
        outcomes.iter().filter_map(|o| if let LeaseOutcome::Acquired(l) = o { Some(l) } else { None }).collect();
    assert_eq!(winners.len(), 1, "{outcomes:?}");
    let winner = winners[0].holder.clone();
    for o in &outcomes {
        if let LeaseOutcome::HeldBy(l) = o {
            assert_eq!(l.holder, winner);
        }
    }
    // Another name, or another tenant's lease of the same name, is independent.
    assert!(store.try_lease(&alpha, "ingest", &h(5), ttl).await.unwrap().acquired());
    assert!(store.try_lease(&beta, "digest", &h(5), ttl).await.unwrap().acquired());
    // The holder renews; a rival is still refused; a release lets the rival in.
    assert!(store.try_lease(&alpha, "digest", &winner, ttl).await.unwrap().acquired());
    assert!(!store.try_lease(&alpha, "digest", &h(9), ttl).await.unwrap().acquired());
    store.release_lease(&alpha, "digest", &h(9)).await.unwrap(); // not the holder: no effect
    assert!(!store.try_lease(&alpha, "digest", &h(9), ttl).await.unwrap().acquired());
    store.release_lease(&alpha, "digest", &winner).await.unwrap();
    assert!(store.try_lease(&alpha, "digest", &h(9), ttl).await.unwrap().acquired());
    // With leases in a coordination service (the cluster's ZooKeeper), a lease ends with its holder's session,
    // never by its expiry time or a process id (crates/pulse-store/tests/keeper.rs tests that); in the store, expiry
    // and a holder's process gone from this host free it.
    let coordinated = store.lease_holder(alpha.read(), "digest").await.unwrap() != pulse_store::LeaseView::Unknown;
    tokio::time::sleep(ttl + Duration::from_millis(200)).await;
    assert_eq!(store.try_lease(&alpha, "digest", &h(10), ttl).await.unwrap().acquired(), !coordinated);
    // A holder on this host whose process has exited (pid 4194400 is above Linux's pid_max).
    let dead = format!("{}:4194400:gone", pulse_domain::this_host());
    assert!(store.try_lease(&alpha, "ingest-2", &dead, Duration::from_secs(600)).await.unwrap().acquired());
    let taken = store.try_lease(&alpha, "ingest-2", &h(11), ttl).await.unwrap();
    assert_eq!(taken.acquired(), cfg!(target_os = "linux") && !coordinated, "{taken:?}");
}

/// A batch of several tenants (one insert per table on ClickHouse, per shard on a cluster) lands each tenant's rows
/// in its own tenant, checkpoints included, and a retried batch doubles nothing.
async fn a_batch_of_tenants_writes_each_into_its_own<S: Store>(store: &S) {
    let access = pulse_config::testing::operator(["alpha", "beta", "gamma"].map(|t| TenantId::new(t).unwrap()));
    let [alpha, beta, gamma] = ["alpha", "beta", "gamma"].map(|t| access.write_scope(t).unwrap());
    let (facts, few, posts, snapshots) = (window(0), window(0)[..3].to_vec(), posts(), snapshots(0));
    let (cp_alpha, cp_beta, cp_gamma) = ([checkpoint(day(5), 0)], [checkpoint(day(2), 0)], [checkpoint(day(1), 0)]);
    let batch = [
        TenantBatch { scope: &alpha, facts: &facts, posts: &posts, snapshots: &snapshots, checkpoints: &cp_alpha },
        TenantBatch { scope: &beta, facts: &few, posts: &[], snapshots: &[], checkpoints: &cp_beta },
        TenantBatch { scope: &gamma, facts: &[], posts: &[], snapshots: &[], checkpoints: &cp_gamma },
    ];
    let ack = store.write_batch(&batch).await.unwrap();
    assert_eq!(ack.rows, facts.len() + few.len() + posts.len() + snapshots.len());
    store.write_batch(&batch).await.unwrap();
    assert_eq!(store.write_batch(&[]).await.unwrap().rows, 0);
    let read = |scope: &WriteScope| access.scope(scope.as_str()).unwrap();
    assert_eq!(sorted(store.read_page_insights(&read(&alpha), &FactFilter::default()).await.unwrap()), sorted(facts));
    assert_eq!(sorted(store.read_page_insights(&read(&beta), &FactFilter::default()).await.unwrap()), sorted(few));
    assert!(store.read_page_insights(&read(&gamma), &FactFilter::default()).await.unwrap().is_empty());
    assert_eq!(store.read_posts(&read(&alpha), &PostFilter::default()).await.unwrap().len(), posts.len());
    assert!(store.read_posts(&read(&beta), &PostFilter::default()).await.unwrap().is_empty());
    assert_eq!(store.read_post_snapshots(&read(&alpha), &PostFilter::default()).await.unwrap().len(), snapshots.len());
    assert_eq!(store.load_checkpoints(&read(&alpha)).await.unwrap(), cp_alpha.to_vec());
    assert_eq!(store.load_checkpoints(&read(&beta)).await.unwrap(), cp_beta.to_vec());
    assert_eq!(store.load_checkpoints(&read(&gamma)).await.unwrap(), cp_gamma.to_vec());
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod lake_backend {
            $(
                #[tokio::test]
                async fn $name() {
                    let dir = tempfile::tempdir().unwrap();
                    let store = super::LakeStore::open(dir.path().join("lake")).unwrap();
                    super::Store::migrate(&store).await.unwrap();
                    super::$name(&store).await;
                }
            )*
        }
        mod clickhouse_backend {
            $(
                #[tokio::test]
                async fn $name() {
                    let Some(db) = super::TestDatabase::create().await else { return };
                    super::$name(&db.store).await;
                    db.drop().await;
                }
            )*
        }
        /// The same suite on a real cluster (2 shards x 2 replicas, ZooKeeper): DDL ON CLUSTER, Replicated local
        /// tables behind Distributed ones, synchronous inserts, one tenant's reads on its shard.
        mod clickhouse_cluster_backend {
            $(
                #[tokio::test]
                async fn $name() {
                    let Some(cluster) = super::cluster::LocalCluster::from_env() else { return };
                    let (store, name) = cluster.fresh("pulse_conf").await;
                    super::$name(&store).await;
                    cluster.drop_database(&name);
                }
            )*
        }
    };
}

conformance!(
    facts_are_never_doubled,
    the_days_fetched_since_a_time_are_the_days_written_since,
    a_corrected_value_supersedes_and_a_stale_one_does_not,
    reads_filter_by_metric_date_practice_and_page,
    series_are_the_facts_read_grouped,
    another_tenants_scope_sees_nothing,
    a_batch_of_tenants_writes_each_into_its_own,
    posts_and_snapshots_round_trip_without_doubling,
    checkpoints_keep_the_latest,
    run_records_are_kept_newest_first,
    the_export_audit_trail_only_grows_and_stays_in_its_tenant,
    report_slices_are_replaced_whole,
    a_report_replaced_from_a_month_keeps_the_months_before,
    a_partitioned_report_reads_back_month_by_month,
    the_state_journal_appends_once_per_event_in_order_and_per_tenant,
    a_lease_has_one_holder_until_released_or_expired,
    migrate_twice_is_a_no_op,
);

/// A fresh, migrated ClickHouse database for one test, or `None` (with a message) when ClickHouse is not configured
/// and not required.
struct TestDatabase {
    store: ClickHouseStore,
    url: String,
    name: String,
}

fn clickhouse_url() -> Option<String> {
    pulse_config::testing::clickhouse_url("the ClickHouse half of the store conformance suite")
}

impl TestDatabase {
    async fn create() -> Option<Self> {
        let url = clickhouse_url()?;
        let name = format!("pulse_test_{}", uuid::Uuid::new_v4().simple());
        let store = ClickHouseStore::new(ClickHouseSettings {
            url: url.clone(),
            database: name.clone(),
            user: "default".into(),
            password: None,
            cluster: None,
            replica_urls: Default::default(),
            zookeeper: None,
        });
        let report = store
            .migrate()
            .await
            .unwrap_or_else(|e| panic!("ClickHouse at {url} is required for this test and failed: {e}"));
        assert_eq!(report.applied.len(), pulse_store::migrations::MIGRATIONS.len());
        Some(Self { store, url, name })
    }

    async fn drop(self) {
        let client = ::clickhouse::Client::default().with_url(&self.url).with_validation(false);
        let _ = client.query(&format!("DROP DATABASE IF EXISTS {}", self.name)).execute().await;
    }
}

// ----- backend-specific failure modes --------------------------------------------------------------------------

#[tokio::test]
async fn a_lake_report_written_whole_before_months_is_read_and_then_kept_by_month() {
    let dir = tempfile::tempdir().unwrap();
    let lake = LakeStore::open(dir.path()).unwrap();
    let (alpha, _) = scopes();
    // January only: one month's file; made into the layout of a lake written before reports were kept by month.
    lake.replace_report(&alpha, &REACH_WEEKLY, &main(), &reach_report(4)).await.unwrap();
    let slice =
        std::fs::read_dir(dir.path().join("reports/report_reach_weekly")).unwrap().next().unwrap().unwrap().path();
    let files: Vec<_> =
        std::fs::read_dir(&slice).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    let part = files.iter().find(|f| f.starts_with("part-2018-01-")).expect("January's file");
    std::fs::rename(slice.join(part), slice.join("data.parquet")).unwrap();
    std::fs::remove_file(slice.join("manifest.json")).unwrap();
    assert_eq!(lake.read_report(&alpha, &REACH_WEEKLY, &main()).await.unwrap(), reach_report(4), "the whole file");
    let feb = NaiveDate::from_ymd_opt(2018, 2, 1).unwrap();
    lake.replace_report_from(&alpha, &REACH_WEEKLY, &main(), feb, &reach_report(6).slice(4, 2)).await.unwrap();
    assert_eq!(lake.read_report(&alpha, &REACH_WEEKLY, &main()).await.unwrap(), reach_report(6));
    let files: Vec<_> =
        std::fs::read_dir(&slice).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert!(files.contains(&"manifest.json".to_owned()) && !files.contains(&"data.parquet".to_owned()), "{files:?}");
    assert_eq!(files.iter().filter(|f| f.starts_with("part-")).count(), 2, "a file per month: {files:?}");
}

#[tokio::test]
async fn a_lake_report_file_no_manifest_names_is_removed_after_an_interrupted_write() {
    let dir = tempfile::tempdir().unwrap();
    let (alpha, _) = scopes();
    let slice = {
        let lake = LakeStore::open(dir.path()).unwrap();
        lake.replace_report(&alpha, &REACH_WEEKLY, &main(), &reach_report(8)).await.unwrap();
        std::fs::read_dir(dir.path().join("reports/report_reach_weekly")).unwrap().next().unwrap().unwrap().path()
    };
    // A writer killed after writing a month's new file, before the manifest named it.
    let named = std::fs::read_dir(&slice)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("part-2018-02-"));
    std::fs::copy(named.unwrap(), slice.join("part-2018-02-000000000000.parquet")).unwrap();
    std::fs::write(dir.path().join(".writing"), b"").unwrap();
    let lake = LakeStore::open(dir.path()).unwrap();
    let files: Vec<String> =
        std::fs::read_dir(&slice).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert!(!files.contains(&"part-2018-02-000000000000.parquet".to_owned()), "{files:?}");
    assert_eq!(files.iter().filter(|f| f.starts_with("part-")).count(), 2, "January's and February's: {files:?}");
    assert_eq!(lake.read_report(&alpha, &REACH_WEEKLY, &main()).await.unwrap(), reach_report(8));
}

#[tokio::test]
async fn lake_refuses_a_newer_format() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("_pulse_lake.json"), r#"{"format": 99}"#).unwrap();
    let err = LakeStore::open(dir.path()).unwrap_err();
    assert!(matches!(err, StoreError::LakeTooNew { found: 99, .. }), "{err}");
    assert!(err.to_string().contains("upgrade pulse"));
}

#[tokio::test]
async fn lake_reports_a_corrupt_file_and_never_overwrites_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = LakeStore::open(dir.path()).unwrap();
    let (alpha, _) = scopes();
    store.write_page_insights(&alpha, &window(0)).await.unwrap();
    store.settle(&alpha).await.unwrap();
    let file = dir.path().join("page_insights/tenant=alpha/month=2018-01/data.parquet");
    assert!(file.exists());
    std::fs::write(&file, b"PAR1 this is not parquet").unwrap();
    let err = store.read_page_insights(&alpha, &FactFilter::default()).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{text}");
    assert!(text.contains("month=2018-01") && text.contains("Move it aside"), "{text}");
    // Writing into the corrupt partition is refused and leaves the file as it was.
    let err = store.write_page_insights(&alpha, &window(1)[..1]).await.unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }));
    assert_eq!(std::fs::read(&file).unwrap(), b"PAR1 this is not parquet");
    // Other months still read.
    let feb = store.read_page_insights(&alpha, &FactFilter::days(day(32), day(59))).await.unwrap();
    assert_eq!(feb.len(), 28 * 2 * 3);
    // No temporary files are left behind.
    let leftovers: Vec<_> = walk(dir.path()).into_iter().filter(|p| p.contains(".tmp-")).collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[tokio::test]
async fn lake_writes_append_parts_that_reads_merge_and_compaction_folds() {
    let dir = tempfile::tempdir().unwrap();
    let store = LakeStore::open(dir.path()).unwrap();
    let (alpha, _) = scopes();
    let jan = dir.path().join("page_insights/tenant=alpha/month=2018-01");
    let files = |d: &std::path::Path| {
        let mut names: Vec<String> =
            std::fs::read_dir(d).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        names
    };
    // Each write is a new part; nothing already written is read or rewritten.
    let first = window(0);
    store.write_page_insights(&alpha, &first).await.unwrap();
    let after_one = files(&jan);
    assert_eq!(after_one.len(), 1, "{after_one:?}");
    assert!(after_one[0].starts_with("part-") && after_one[0].ends_with(".parquet"), "{after_one:?}");
    // The same identities again with higher versions (Meta revised them), and once with a lower one (a stale
    // re-write): the highest version wins whichever part it is in.
    let revised: Vec<PageInsightFact> = first
        .iter()
        .map(|f| PageInsightFact {
            value: f.value + 1000.0,
            fetched_at: f.fetched_at + chrono::Duration::seconds(60),
            ..f.clone()
        })
        .collect();
    store.write_page_insights(&alpha, &revised).await.unwrap();
    let stale: Vec<PageInsightFact> = first
        .iter()
        .map(|f| PageInsightFact { value: -1.0, fetched_at: f.fetched_at - chrono::Duration::seconds(60), ..f.clone() })
        .collect();
    store.write_page_insights(&alpha, &stale[..5]).await.unwrap();
    assert_eq!(files(&jan).len(), 3);
    let read = store.read_page_insights(&alpha, &FactFilter::default()).await.unwrap();
    assert_eq!(read.len(), first.len(), "one row per identity");
    assert!(read.iter().all(|f| f.value >= 1000.0), "the revised values won");
    // The write that makes the 64th part compacts the partition (facts collect 64: a run's end compacts them too):
    // one file, the same rows.
    for _ in 0..60 {
        store.write_page_insights(&alpha, &stale[..1]).await.unwrap();
    }
    assert_eq!(files(&jan).len(), 63, "63 parts, not compacted yet");
    {
        store.write_page_insights(&alpha, &stale[..1]).await.unwrap();
    }
    assert_eq!(files(&jan), vec!["data.parquet".to_owned()]);
    let compacted = store.read_page_insights(&alpha, &FactFilter::default()).await.unwrap();
    assert_eq!(sorted(compacted), sorted(read.clone()));
    // A run's end folds what it appended (the ingester calls settle), and what is scanned in place is one file per
    // partition with one row per identity.
    store.write_page_insights(&alpha, &revised[..3]).await.unwrap();
    assert_eq!(files(&jan).len(), 2);
    let in_place = store.fact_files(&alpha, &FactFilter::default()).await.unwrap().unwrap();
    assert!(in_place.iter().all(|p| p.ends_with("data.parquet")), "{in_place:?}");
    assert_eq!(files(&jan), vec!["data.parquet".to_owned()]);
    store.write_page_insights(&alpha, &revised[..3]).await.unwrap();
    store.settle(&alpha).await.unwrap();
    assert_eq!(files(&jan), vec!["data.parquet".to_owned()]);
    assert_eq!(sorted(store.read_page_insights(&alpha, &FactFilter::default()).await.unwrap()), sorted(read));
}

/// Readers take no lock, so a writer's compaction can fold and remove a part between a reader's listing and its read
/// (CI once saw `pulse schedule status` fail with the part's "No such file or directory"). Two handles on one lake, as
/// two processes would be: one appends events one at a time (a compaction every 16th write), the other reads all the
/// while. Every read succeeds and holds at least every event confirmed before it began.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lake_reads_see_every_row_while_another_writer_compacts() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let writer = LakeStore::open(dir.path()).unwrap();
    let reader = LakeStore::open(dir.path()).unwrap();
    let (alpha, _) = scopes();
    let confirmed = Arc::new(AtomicUsize::new(0));
    const WRITES: usize = 400;
    let writing = {
        let (confirmed, alpha) = (confirmed.clone(), alpha.clone());
        tokio::spawn(async move {
            for i in 0..WRITES {
                let e = event(&format!("e{i:04}"), "delivery", "k", i as i64);
                writer.append_state(&alpha, &[e]).await.unwrap();
                confirmed.store(i + 1, Ordering::SeqCst);
            }
        })
    };
    let mut reads = 0;
    while !writing.is_finished() {
        let before = confirmed.load(Ordering::SeqCst);
        let got = reader.read_state(&alpha, "delivery").await.unwrap_or_else(|e| panic!("read {reads}: {e}"));
        assert!(got.len() >= before, "read {reads} saw {} events, {before} were confirmed before it", got.len());
        reads += 1;
    }
    writing.await.unwrap();
    assert_eq!(reader.read_state(&alpha, "delivery").await.unwrap().len(), WRITES);
    assert!(reads > 25, "only {reads} reads overlapped the writes");
}

/// The incremental jobs ask which days were fetched since their last run; the lake answers from its files' times. While
/// another handle writes a day at a time (revisions included, so partitions compact again and again), every answer
/// holds every day confirmed written before it was asked: a partition caught mid-compaction is read again, never
/// skipped as if nothing in it were new.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lake_days_fetched_since_miss_nothing_while_another_writer_compacts() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let writer = LakeStore::open(dir.path()).unwrap();
    let reader = LakeStore::open(dir.path()).unwrap();
    let (alpha, _) = scopes();
    // Days written an hour ago, compacted: each partition starts as one old file that the new writes fold into.
    let old: Vec<PageInsightFact> =
        (1..=59).map(|d| fact("M83002", "1002", CanonicalMetric::PageReach, day(d), "", 1.0, 0)).collect();
    writer.write_page_insights(&alpha, &old).await.unwrap();
    writer.settle(&alpha).await.unwrap();
    let an_hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    for month in ["2018-01", "2018-02"] {
        let path = dir.path().join(format!("page_insights/tenant=alpha/month={month}/data.parquet"));
        std::fs::File::options().write(true).open(&path).unwrap().set_modified(an_hour_ago).unwrap();
    }
    let since = Utc::now() - Duration::seconds(5);
    let confirmed = Arc::new(AtomicUsize::new(0));
    const DAYS: u32 = 59;
    let writing = {
        let (confirmed, alpha) = (confirmed.clone(), alpha.clone());
        tokio::spawn(async move {
            for round in 0..4 {
                for d in 1..=DAYS {
                    let mut f = fact("M83001", "1001", CanonicalMetric::PageReach, day(d), "", f64::from(round), 0);
                    f.fetched_at = Utc::now();
                    writer.write_page_insights(&alpha, &[f]).await.unwrap();
                    confirmed.store(if round == 0 { d as usize } else { DAYS as usize }, Ordering::SeqCst);
                }
            }
        })
    };
    let mut asked = 0;
    while !writing.is_finished() {
        let before = confirmed.load(Ordering::SeqCst);
        let days = reader
            .days_fetched_since(&alpha, Fetched::Facts, since)
            .await
            .unwrap_or_else(|e| panic!("ask {asked}: {e}"));
        assert!(days.len() >= before, "ask {asked} found {} days, {before} were confirmed before it", days.len());
        asked += 1;
    }
    writing.await.unwrap();
    assert_eq!(reader.days_fetched_since(&alpha, Fetched::Facts, since).await.unwrap().len(), DAYS as usize);
    assert!(asked > 10, "only {asked} asks overlapped the writes");
}

#[tokio::test]
async fn lake_fact_files_name_a_corrupt_file_before_anyone_scans_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = LakeStore::open(dir.path()).unwrap();
    let (alpha, beta) = scopes();
    store.write_page_insights(&alpha, &window(0)).await.unwrap();
    store.write_page_insights(&beta, &window(0)[..1]).await.unwrap();
    let files = store.fact_files(&alpha, &FactFilter::days(day(1), day(40))).await.unwrap().unwrap();
    assert_eq!(files.len(), 2, "January and February: {files:?}");
    assert!(files.iter().all(|f| f.to_string_lossy().contains("tenant=alpha")), "{files:?}");
    let jan = store.fact_files(&alpha, &FactFilter::days(day(1), day(20))).await.unwrap().unwrap();
    assert_eq!(jan.len(), 1, "months outside the range are pruned");
    std::fs::write(&files[0], b"PAR1 this is not parquet").unwrap();
    let err = store.fact_files(&alpha, &FactFilter::days(day(1), day(40))).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, StoreError::Corrupt { .. }) && text.contains("month=2018-01"), "{text}");
    assert!(text.contains("Move it aside"), "says what to do: {text}");
}

#[tokio::test]
async fn lake_removes_temporary_files_left_by_a_killed_writer_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let store = LakeStore::open(dir.path()).unwrap();
    let (alpha, _) = scopes();
    store.write_page_insights(&alpha, &window(0)).await.unwrap();
    store.settle(&alpha).await.unwrap();
    let month = dir.path().join("page_insights/tenant=alpha/month=2018-01");
    let orphan = month.join(".tmp-0b1e2c3d");
    std::fs::write(&orphan, b"half a parquet file").unwrap();
    // A writer killed mid-write leaves its temporary file and its in-progress marker.
    std::fs::write(dir.path().join(".writing"), b"").unwrap();
    drop(store);
    let store = LakeStore::open(dir.path()).unwrap();
    assert!(!orphan.exists(), "the orphan is removed on open");
    assert!(!dir.path().join(".writing").exists(), "and the marker with it");
    assert!(month.join("data.parquet").exists(), "real data is untouched");
    assert_eq!(store.read_page_insights(&alpha, &FactFilter::default()).await.unwrap().len(), window(0).len());
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path.display().to_string());
        }
    }
    out
}

#[tokio::test]
async fn lake_layout_is_hive_partitioned_by_tenant_and_month() {
    let dir = tempfile::tempdir().unwrap();
    let store = LakeStore::open(dir.path()).unwrap();
    let (alpha, beta) = scopes();
    store.write_page_insights(&alpha, &window(0)).await.unwrap();
    store.write_page_insights(&beta, &window(0)[..1]).await.unwrap();
    // Once a run's writes are settled, each partition is one compacted file.
    store.settle(&alpha).await.unwrap();
    store.settle(&beta).await.unwrap();
    let mut files: Vec<String> = walk(dir.path())
        .into_iter()
        .map(|p| p.trim_start_matches(&dir.path().display().to_string()).to_owned())
        .filter(|p| p.ends_with(".parquet"))
        .collect();
    files.sort();
    assert_eq!(
        files,
        vec![
            "/page_insights/tenant=alpha/month=2018-01/data.parquet",
            "/page_insights/tenant=alpha/month=2018-02/data.parquet",
            "/page_insights/tenant=alpha/month=2018-03/data.parquet",
            "/page_insights/tenant=beta/month=2018-01/data.parquet",
        ]
    );
}

#[tokio::test]
async fn clickhouse_unreachable_names_the_url_and_what_to_check() {
    let store = ClickHouseStore::new(ClickHouseSettings {
        url: "http://127.0.0.1:9".into(),
        database: "pulse".into(),
        user: "default".into(),
        password: Some("hunter2-secret".into()),
        cluster: None,
        replica_urls: Default::default(),
        zookeeper: None,
    });
    let (alpha, _) = scopes();
    let err = store.read_page_insights(&alpha, &FactFilter::default()).await.unwrap_err();
    let text = err.to_string();
    assert!(err.is_transient());
    assert!(text.contains("cannot reach ClickHouse at http://127.0.0.1:9"), "{text}");
    assert!(text.contains("check that the server is running"), "{text}");
    assert!(!text.contains("hunter2-secret"));
}

/// A ClickHouse slice whose months are not its first rows in order (written before reports were kept month by
/// month: here page by page) is replaced from a month as the whole slice would be: its rows before the month in the
/// order they read, then the new ones. Copying them with their ordinals would interleave them with the new rows.
#[tokio::test]
async fn clickhouse_a_slice_written_before_months_is_replaced_from_a_month_in_order() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let (alpha, _) = scopes();
    let written = two_pages_of_reach(13);
    db.store.replace_report(&alpha, &REACH_WEEKLY, &main(), &written).await.unwrap();
    // Ordinals page by page, as a slice written in that order has them.
    let client = ::clickhouse::Client::default().with_url(&db.url).with_database(&db.name).with_validation(false);
    client
        .query(
            "ALTER TABLE report_reach_weekly UPDATE row_ordinal = \
             toUInt32(if(page_id = '1001', 0, 13) + intDiv(toUInt32(week_ending) - 17538, 7)) WHERE tenant_id = 'alpha'",
        )
        .execute()
        .await
        .unwrap();
    wait_for_mutations(&client, &db.name).await;
    assert_eq!(db.store.read_report(&alpha, &REACH_WEEKLY, &main()).await.unwrap(), written, "page by page");
    // Replaced from March: January and February (two months of the old order) are written again month by month,
    // as the lake writes them, then March's rows.
    let march = NaiveDate::from_ymd_opt(2018, 3, 1).unwrap();
    let tail = REACH_WEEKLY.rows_from(&written, march).unwrap();
    let ack = db.store.replace_report_from(&alpha, &REACH_WEEKLY, &main(), march, &tail).await.unwrap();
    assert_eq!(ack.rows, tail.num_rows(), "the rows of the replaced months");
    let expected = REACH_WEEKLY.in_storage_order(&written).unwrap();
    assert_eq!(db.store.read_report(&alpha, &REACH_WEEKLY, &main()).await.unwrap(), expected);
    // Now in storage order: the next replacements copy the months before inside ClickHouse, and read back the same.
    let april = NaiveDate::from_ymd_opt(2018, 4, 1).unwrap();
    db.store.replace_report_from(&alpha, &REACH_WEEKLY, &main(), april, &tail.slice(0, 0)).await.unwrap();
    let before_april = REACH_WEEKLY.split(&expected, april).unwrap().0;
    assert_eq!(db.store.read_report(&alpha, &REACH_WEEKLY, &main()).await.unwrap(), before_april, "from April");
    let feb = NaiveDate::from_ymd_opt(2018, 2, 1).unwrap();
    let again = db
        .store
        .replace_report_from(&alpha, &REACH_WEEKLY, &main(), feb, &REACH_WEEKLY.rows_from(&written, feb).unwrap())
        .await
        .unwrap();
    assert_eq!(again.rows, 18, "only the rows from February on are sent");
    assert_eq!(db.store.read_report(&alpha, &REACH_WEEKLY, &main()).await.unwrap(), expected);
    // The three superseded versions are deleted by one sweep (a mutation, so it can take a moment), leaving one.
    assert_eq!(db.store.sweep_reports().await.unwrap(), 3, "the versions superseded so far");
    assert_eq!(db.store.sweep_reports().await.unwrap(), 0, "nothing left to sweep");
    wait_for_mutations(&client, &db.name).await;
    let versions: u64 = client
        .query("SELECT uniqExact(version) FROM report_reach_weekly WHERE tenant_id = 'alpha'")
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(versions, 1, "the superseded versions' rows deleted");
    assert_eq!(db.store.read_report(&alpha, &REACH_WEEKLY, &main()).await.unwrap(), expected);
    // A server holding fewer of the current slice's rows than were written (a replica behind) is not copied from:
    // the replacement is refused and nothing changes.
    client.query("ALTER TABLE report_reach_weekly DELETE WHERE week_ending = '2018-01-07'").execute().await.unwrap();
    wait_for_mutations(&client, &db.name).await;
    let behind = db.store.read_report(&alpha, &REACH_WEEKLY, &main()).await.unwrap();
    assert_eq!(behind.num_rows(), expected.num_rows() - 2);
    let err = db.store.replace_report_from(&alpha, &REACH_WEEKLY, &main(), march, &tail).await.unwrap_err();
    assert!(err.to_string().contains("holds 24 of the current slice's 26 rows"), "{err}");
    assert_eq!(db.store.read_report(&alpha, &REACH_WEEKLY, &main()).await.unwrap(), behind, "nothing replaced");
    db.drop().await;
}

/// A ClickHouse writer that never sweeps leaves a bounded number of superseded report slices behind: a replacement
/// sweeps by itself once 256 are pending.
#[tokio::test]
async fn clickhouse_superseded_slices_stay_bounded_without_a_sweep() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let (alpha, _) = scopes();
    // 260 replacements: 259 superseded slices, 256 of them swept by the replacement that reached 256.
    for _ in 0..260 {
        db.store.replace_report(&alpha, &REACH_WEEKLY, &main(), &reach_report(1)).await.unwrap();
    }
    assert_eq!(db.store.sweep_reports().await.unwrap(), 3, "only the ones superseded since the store swept itself");
    assert_eq!(db.store.read_report(&alpha, &REACH_WEEKLY, &main()).await.unwrap(), reach_report(1));
    db.drop().await;
}

/// Waits (up to ten seconds) until the database's mutations are done.
async fn wait_for_mutations(client: &::clickhouse::Client, database: &str) {
    for _ in 0..200 {
        let pending: u64 = client
            .query("SELECT count() FROM system.mutations WHERE database = ? AND is_done = 0")
            .bind(database)
            .fetch_one()
            .await
            .unwrap();
        if pending == 0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("mutations still running in {database} after ten seconds");
}

/// Blocks the server wrote and how many of them it found already in key order, for the queries logged under
/// `query_id` whose text starts with `prefix` (18.16 keeps profile events as two arrays, current ClickHouse as a map).
async fn blocks_written(client: &::clickhouse::Client, query_id: &str, prefix: &str) -> (u64, u64) {
    client.query("SYSTEM FLUSH LOGS").execute().await.unwrap();
    let filter = "FROM system.query_log WHERE query_id = ? AND type = 2 AND query LIKE ? \
                  AND query NOT LIKE '%ingest_checkpoints%'";
    let arrays = format!(
        "SELECT sum(ProfileEvents.Values[indexOf(ProfileEvents.Names, 'MergeTreeDataWriterBlocks')]), \
         sum(ProfileEvents.Values[indexOf(ProfileEvents.Names, 'MergeTreeDataWriterBlocksAlreadySorted')]) {filter}"
    );
    let map = format!(
        "SELECT sum(ProfileEvents['MergeTreeDataWriterBlocks']), \
         sum(ProfileEvents['MergeTreeDataWriterBlocksAlreadySorted']) {filter}"
    );
    let pattern = format!("{prefix}%");
    match client.query(&arrays).bind(query_id).bind(&pattern).fetch_one::<(u64, u64)>().await {
        Ok(counts) => counts,
        Err(_) => client.query(&map).bind(query_id).bind(&pattern).fetch_one::<(u64, u64)>().await.unwrap(),
    }
}

/// The store sends each insert in its table's key order, so the server skips its own sort of every block (about a
/// sixth of its CPU in the national ingest benchmark). Rows are given in reverse, tenants interleaved, with page
/// ids whose text order is not their numeric order and breakdowns at several addresses: the server's own count of
/// blocks it found sorted must be every block it wrote.
#[tokio::test]
async fn clickhouse_inserts_arrive_in_key_order_so_the_server_skips_its_sort() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let query_id = format!("{}-batch", db.name);
    let store = db.store.clone().with_query_log(&query_id);
    let access = pulse_config::testing::operator(["alpha", "beta", "gamma"].map(|t| TenantId::new(t).unwrap()));
    let [alpha, beta, gamma] = ["alpha", "beta", "gamma"].map(|t| access.write_scope(t).unwrap());
    let mut facts = window(0);
    for (i, page) in ["999", "10010", "1001"].iter().enumerate() {
        for d in 1..=70 {
            let cell = if d % 2 == 0 { "U.18-24" } else { "F.25-34" };
            facts.push(fact("M83003", page, CanonicalMetric::PageEngagedByAgeGender, day(d), cell, i as f64, 0));
        }
    }
    facts.reverse();
    let (mut posts, mut snapshots) = (posts(), snapshots(0));
    posts.reverse();
    snapshots.reverse();
    let (beta_facts, gamma_facts) = (facts.iter().step_by(3).cloned().collect::<Vec<_>>(), facts[..50].to_vec());
    let batch = [
        TenantBatch { scope: &gamma, facts: &gamma_facts, posts: &posts, snapshots: &[], checkpoints: &[] },
        TenantBatch { scope: &alpha, facts: &facts, posts: &posts, snapshots: &snapshots, checkpoints: &[] },
        TenantBatch { scope: &beta, facts: &beta_facts, posts: &[], snapshots: &snapshots, checkpoints: &[] },
    ];
    store.write_batch(&batch).await.unwrap();
    // And one tenant's write alone.
    store.write_page_insights(&beta, &facts).await.unwrap();
    let client = ::clickhouse::Client::default().with_url(&db.url).with_database(&db.name).with_validation(false);
    let (blocks, sorted) = blocks_written(&client, &query_id, "INSERT INTO").await;
    // Facts span three months (a block each), posts and snapshots one or more: at least seven blocks.
    assert!(blocks >= 7, "{blocks} blocks logged under {query_id}: the inserts were not found in system.query_log");
    assert_eq!(sorted, blocks, "blocks the server had to sort itself: {}", blocks - sorted);
    // The measure can tell: the same rows inserted in reverse key order are blocks the server sorts.
    let control = format!("{}-control", db.name);
    client
        .clone()
        .with_setting("log_queries", "1")
        .with_setting("query_id", control.as_str())
        .query("INSERT INTO page_insights SELECT * FROM page_insights ORDER BY day DESC, page_id DESC")
        .execute()
        .await
        .unwrap();
    let (blocks, sorted) = blocks_written(&client, &control, "INSERT INTO").await;
    assert!(blocks >= 3 && sorted < blocks, "the reversed insert: {sorted} of {blocks} blocks found sorted");
    db.drop().await;
}

#[tokio::test]
async fn clickhouse_tables_match_their_declarations() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let client = ::clickhouse::Client::default().with_url(&db.url).with_database(&db.name).with_validation(false);
    // Every table `pulse migrate` made, core and report, against its one declaration (table.rs, report.rs).
    for (table, expected) in pulse_store::table::clickhouse_tables() {
        // DESCRIBE works on 18.16 and current (system.columns has no `position` on 18.16).
        let bytes = client
            .query(&format!("DESCRIBE TABLE {table}"))
            .fetch_bytes("TabSeparated")
            .unwrap()
            .collect()
            .await
            .unwrap();
        let got: Vec<(String, String)> = String::from_utf8(bytes.to_vec())
            .unwrap()
            .lines()
            .map(|l| {
                let mut f = l.split('\t');
                (f.next().unwrap().to_owned(), f.next().unwrap().to_owned())
            })
            .collect();
        let expected: Vec<(String, String)> = expected.into_iter().map(|(n, t)| (n.to_owned(), t)).collect();
        assert_eq!(got, expected, "{table}");
    }
    db.drop().await;
}

#[tokio::test]
async fn clickhouse_refuses_a_schema_from_a_newer_version_and_an_unmigrated_one() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let client = ::clickhouse::Client::default().with_url(&db.url).with_database(&db.name).with_validation(false);
    client
        .query("INSERT INTO schema_migrations (version, name, checksum, applied_at) VALUES (99, 'future', 'x', now())")
        .execute()
        .await
        .unwrap();
    let err = db.store.migrate().await.unwrap_err();
    assert!(matches!(err, StoreError::SchemaTooNew { found: 99, .. }), "{err}");
    // A fresh client (no cached check) refuses to read or write it too.
    let fresh = ClickHouseStore::new(ClickHouseSettings {
        url: db.url.clone(),
        database: db.name.clone(),
        user: "default".into(),
        password: None,
        cluster: None,
        replica_urls: Default::default(),
        zookeeper: None,
    });
    let (alpha, _) = scopes();
    let err = fresh.write_page_insights(&alpha, &window(0)).await.unwrap_err();
    assert!(matches!(err, StoreError::SchemaTooNew { .. }), "{err}");

    let unmigrated = ClickHouseStore::new(ClickHouseSettings {
        url: db.url.clone(),
        database: format!("{}_never", db.name),
        user: "default".into(),
        password: None,
        cluster: None,
        replica_urls: Default::default(),
        zookeeper: None,
    });
    let err = unmigrated.read_page_insights(&alpha, &FactFilter::default()).await.unwrap_err();
    assert!(err.to_string().contains("run `pulse migrate`"), "{err}");
    db.drop().await;
}
