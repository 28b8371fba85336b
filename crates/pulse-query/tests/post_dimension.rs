//! The `post` dimension: each post of the stroke-video month answered with its figures from the post-performance
//! report and, in `meta.posts`, its time, type, text excerpt and permalink exactly as ingested from the Graph API;
//! `meta.posts` is absent when the answer is not by post; a figure a post cannot have (video views of a photo) is
//! null.

mod support;

use pulse_app::report::{self, Kind, ReportQuery};
use pulse_domain::text::{EXCERPT_CHARS, excerpt};
use pulse_query::{Answer, Query};
use pulse_store::{PostFilter, Store};

#[test]
fn each_post_is_named_by_its_time_type_excerpt_and_permalink() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let support::Demo { _dir, config, lake: store, directory } = support::demo().await;
        let access = config.operator_access();
        let tenant = config.tenants[0].id.to_string();
        let scope = pulse_query::tenant_scope(&access, Some(&tenant)).unwrap();
        let ingested = store.read_posts(&scope, &PostFilter::default()).await.unwrap();
        let mut rq = ReportQuery::new(Kind::Posts);
        rq.tenant = Some(tenant.clone());
        let report = report::query(&store, &config, &access, &rq).await.unwrap().post_views().unwrap();

        let q = Query::parse(
            format!(
                r#"{{"site_id":"{tenant}","metrics":["gross_reach","views","video_views","engagement_rate"],"dimensions":["post"],"date_range":["2018-03-01","2018-03-31"],"order_by":[["gross_reach","desc"]],"pagination":{{"limit":10000}}}}"#
            )
            .as_bytes(),
        )
        .unwrap();
        let answer: Answer = pulse_query::run(&store, &directory, &access, &q, None).await.unwrap();
        let in_march: Vec<_> = ingested
            .iter()
            .filter(|p| p.created_time.date_naive() >= "2018-03-01".parse().unwrap())
            .filter(|p| p.created_time.date_naive() <= "2018-03-31".parse().unwrap())
            .collect();
        assert!(in_march.len() > 10, "the demo has March 2018 posts: {}", in_march.len());
        assert_eq!(answer.results.len(), in_march.len(), "one row per post made in March");
        assert_eq!(answer.meta.posts.len(), in_march.len(), "every row's post is described");
        let (mut videos, mut photos, mut stroke) = (0, 0, 0);
        for row in &answer.results {
            let id = &row.dimensions[0];
            let post = in_march.iter().find(|p| p.post.as_str() == id).unwrap_or_else(|| panic!("{id} was not ingested in March"));
            let details = &answer.meta.posts[id];
            assert_eq!(details.practice, post.practice.as_str());
            assert_eq!(chrono::DateTime::parse_from_rfc3339(&details.posted_at).unwrap(), post.created_time, "{id}");
            assert_eq!(details.post_type, post.post_type);
            assert_eq!(details.excerpt, excerpt(&post.message, EXCERPT_CHARS));
            assert!(details.excerpt.chars().count() <= EXCERPT_CHARS && !details.excerpt.contains('\n'));
            assert!(!details.excerpt.is_empty() || post.message.trim().is_empty(), "{id} has text");
            assert_eq!(details.permalink, post.permalink);
            assert!(details.permalink.starts_with("https://www.facebook.com/"), "{}", details.permalink);
            let r = report.iter().find(|p| &p.post_id == id).expect("in the posts report");
            assert_eq!(row.metrics[0], r.reach, "{id}: the query's reach is the report's");
            assert_eq!(row.metrics[1], r.views, "{id}");
            match post.post_type.as_str() {
                "video" => videos += 1,
                _ => {
                    photos += 1;
                    assert_eq!(row.metrics[2], None, "{id}: a {} has no video views", post.post_type);
                }
            }
            stroke += usize::from(details.excerpt.to_lowercase().contains("stroke"));
        }
        assert!(videos > 0 && photos > 0, "videos {videos}, other posts {photos}");
        assert!(stroke > 0, "the stroke video's posts are among March's");
        // Ordered by reach, missing last.
        let reach: Vec<f64> = answer.results.iter().filter_map(|r| r.metrics[0]).collect();
        assert!(reach.windows(2).all(|w| w[0] >= w[1]), "ordered by reach");

        // Not by post: no post details in the answer.
        let q = Query::parse(format!(r#"{{"site_id":"{tenant}","metrics":["posts"],"dimensions":["post_type"]}}"#).as_bytes()).unwrap();
        let answer = pulse_query::run(&store, &directory, &access, &q, None).await.unwrap();
        assert!(answer.meta.posts.is_empty());
        assert!(serde_json::to_value(&answer).unwrap()["meta"].get("posts").is_none(), "meta.posts absent");

        // A post filter answers that one post.
        let one = &in_march[0];
        let q = Query::parse(
            format!(r#"{{"site_id":"{tenant}","metrics":["posts","gross_reach"],"dimensions":["post"],"filters":[["is","post",["{}"]]],"date_range":"all"}}"#, one.post.as_str())
                .as_bytes(),
        )
        .unwrap();
        let answer = pulse_query::run(&store, &directory, &access, &q, None).await.unwrap();
        assert_eq!(answer.results.len(), 1);
        assert_eq!(answer.results[0].metrics[0], Some(1.0));
        assert_eq!(answer.meta.posts.keys().collect::<Vec<_>>(), vec![one.post.as_str()]);
    });
}
