//! Campaign effects through the query API: `effect`, `effect_low`, `effect_high`, `interval_level` and `lift_pct` by
//! `campaign` and `campaign_metric` (and `practice`) equal the campaigns report row for row on the case-study demo,
//! and a group holding several campaigns or figures answers n/a with a note instead of a sum of effects.

mod support;

use pulse_app::report::{self, Kind, ReportQuery};
use pulse_query::{Answer, Query};

fn ask(body: &str) -> Query {
    Query::parse(body.as_bytes()).unwrap_or_else(|e| panic!("{body}: {e}"))
}

fn close(a: Option<f64>, b: Option<f64>) -> bool {
    match (a, b) {
        (Some(x), Some(y)) => (x - y).abs() <= 1e-3 * x.abs().max(1.0),
        (None, None) => true,
        _ => false,
    }
}

#[test]
fn campaign_effects_by_campaign_and_figure_equal_the_campaigns_report() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let support::Demo { _dir, config, lake: store, directory } = support::demo().await;
        let access = config.operator_access();
        let mut compared = 0;
        for tenant in config.tenants.iter().map(|t| t.id.to_string()) {
            let mut rq = ReportQuery::new(Kind::Campaigns);
            rq.tenant = Some(tenant.clone());
            let rows = report::query(&store, &config, &access, &rq).await.unwrap().campaign_effects().unwrap();
            assert!(rows.iter().any(|r| r.practice_code == "ALL"), "{tenant} has campaign totals");
            for by_practice in [false, true] {
                let dims = if by_practice { r#"["campaign","campaign_metric","practice"]"# } else { r#"["campaign","campaign_metric"]"# };
                let q = ask(&format!(
                    r#"{{"site_id":"{tenant}","metrics":["effect","effect_low","effect_high","interval_level","lift_pct"],"dimensions":{dims},"date_range":"all","pagination":{{"limit":10000}}}}"#
                ));
                let answer: Answer = pulse_query::run(&store, &directory, &access, &q, None).await.unwrap();
                let expected: Vec<_> = rows.iter().filter(|r| (r.practice_code != "ALL") == by_practice).collect();
                assert_eq!(answer.results.len(), expected.len(), "{tenant} by practice {by_practice}: one row each");
                for r in expected {
                    let mut key = vec![r.campaign.clone(), r.metric.clone()];
                    if by_practice {
                        key.push(r.practice_code.clone());
                    }
                    let got = answer
                        .results
                        .iter()
                        .find(|x| x.dimensions == key)
                        .unwrap_or_else(|| panic!("{key:?} missing from {:?}", answer.results));
                    let want = [r.effect, r.effect_lo, r.effect_hi, r.interval_level, r.lift_pct];
                    for (i, (g, w)) in got.metrics.iter().zip(want).enumerate() {
                        assert!(close(*g, w), "{tenant} {key:?} metric {i}: query {g:?}, report {w:?}");
                    }
                    if r.effect.is_none() && !r.note.is_empty() {
                        assert!(answer.meta.notes.iter().any(|n| n.contains(&r.note)), "the missing estimate's reason: {:?}", answer.meta.notes);
                    }
                    compared += 1;
                }
            }
            // By campaign alone a group holds four figures: no sum of effects, and a note saying how to ask.
            let q = ask(&format!(r#"{{"site_id":"{tenant}","metrics":["effect","views"],"dimensions":["campaign"],"date_range":"all"}}"#));
            let answer = pulse_query::run(&store, &directory, &access, &q, None).await.unwrap();
            assert!(!answer.results.is_empty());
            assert!(answer.results.iter().all(|r| r.metrics[0].is_none() && r.metrics[1].is_some()), "{:?}", answer.results);
            assert!(answer.meta.notes.iter().any(|n| n.contains("ask by campaign and campaign_metric")), "{:?}", answer.meta.notes);
            // Filtering the figure makes each campaign one row again.
            let q = ask(&format!(
                r#"{{"site_id":"{tenant}","metrics":["effect"],"dimensions":["campaign"],"filters":[["is","campaign_metric",["views"]]],"date_range":"all"}}"#
            ));
            let answer = pulse_query::run(&store, &directory, &access, &q, None).await.unwrap();
            assert!(!answer.results.is_empty(), "the views estimates of {tenant}'s campaigns");
            for r in &answer.results {
                let want = rows.iter().find(|x| x.practice_code == "ALL" && x.metric == "views" && x.campaign == r.dimensions[0]).unwrap();
                assert!(close(r.metrics[0], want.effect), "{r:?} vs {:?}", want.effect);
            }
        }
        assert!(compared >= 40, "{compared} rows compared");
    });
}
