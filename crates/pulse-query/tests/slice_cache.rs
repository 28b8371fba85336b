//! Report slices kept in the service: with the answer cache off, a question answered from a kept slice equals the
//! same question read from the store, for every report the query API reads, the first time (the slice is read and
//! kept) and after (answered from the slice).

mod support;

use pulse_query::{Answer, Cache, DEFAULT_CACHE_BYTES, DEFAULT_SLICE_BYTES, Query};

#[test]
fn answers_from_kept_slices_equal_answers_from_the_store() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let support::Demo { _dir, config, lake: store, directory } = support::demo().await;
        let access = config.operator_access();
        let cache = Cache::with_limits(0, DEFAULT_CACHE_BYTES, DEFAULT_SLICE_BYTES);
        let bodies = [
            r#"{"metrics":["gross_reach","views","reach_per_1000"],"dimensions":["practice"],"date_range":["2018-01-01","2018-03-31"]}"#,
            r#"{"metrics":["engagement_rate"],"dimensions":["week"],"date_range":"all"}"#,
            r#"{"metrics":["posts","gross_reach","video_views"],"dimensions":["post_type","topic"],"date_range":"all"}"#,
            r#"{"metrics":["people","reach_per_1000"],"dimensions":["age_band","gender"],"date_range":["2018-03-01","2018-03-31"]}"#,
            r#"{"metrics":["effect","lift_pct"],"dimensions":["campaign","campaign_metric"],"date_range":"all"}"#,
        ];
        let mut compared = 0;
        for tenant in config.tenants.iter().map(|t| t.id.to_string()) {
            for body in bodies {
                let q = Query::parse(body.replacen('{', &format!(r#"{{"site_id":"{tenant}","#), 1).as_bytes()).unwrap();
                let plain: Answer = pulse_query::run(&store, &directory, &access, &q, None).await.unwrap();
                for round in ["read and kept", "from the slice"] {
                    let got = pulse_query::run(&store, &directory, &access, &q, Some(&cache)).await.unwrap();
                    assert!(!got.meta.cached, "the answer cache is off");
                    assert_eq!(got.results, plain.results, "{tenant} {body} ({round})");
                    assert_eq!(got.meta.notes, plain.meta.notes, "{tenant} {body} ({round})");
                    assert_eq!(got.meta.date_range, plain.meta.date_range);
                    compared += 1;
                }
            }
        }
        assert_eq!(compared, 2 * 5 * config.tenants.len());
        assert_eq!(cache.slices_kept(), 4 * config.tenants.len(), "one slice per tenant and report read");
    });
}
