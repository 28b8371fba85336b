//! The analyst API over a real demo world (two tenants, lake store), through HTTP: queries and their cache, bad
//! input answered with 4xx and a JSON error, keys (unknown, revoked, scopes, regional admin), report downloads, rate
//! limits, the request log, and a randomised check that no query ever returns another tenant's rows.

mod common;

use std::collections::BTreeSet;

use common::{
    captured_logs, client, config, dashboard_page, dashboard_session, demo_copy, key, practices, serve, serve_with,
};
use pulse_app::keys::KeyScope;
use serde_json::{Value, json};

/// Sends `request` as raw bytes over one connection and reads the answer to its end: (status line and headers, body).
async fn raw_exchange(url: &str, request: &str) -> (String, String) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let addr = url.trim_start_matches("http://");
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(10), tcp.read_to_end(&mut out))
        .await
        .expect("the server answers and closes within 10 s")
        .unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (head.to_owned(), body.to_owned())
}

/// POSTs JSON to a full URL, answering the status and the JSON body.
async fn post_to(url: &str, key: &str, body: &Value) -> (u16, Value) {
    let resp = client().post(url).bearer_auth(key).json(body).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn post(url: &str, key: &str, body: &Value) -> (u16, Value) {
    let resp = client().post(format!("{url}/api/v2/query")).bearer_auth(key).json(body).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_answers_with_names_and_is_cached_until_the_reports_change() {
    let s = serve().await;
    let k = key(&s.config, &["north-staffs"], &[KeyScope::Read]);
    let body = json!({"metrics": ["gross_reach", "views", "reach_per_1000"], "dimensions": ["practice"], "date_range": "all",
                      "order_by": [["views", "desc"]], "pagination": {"limit": 5}});
    let (status, a) = post(&s.url, &k, &body).await;
    assert_eq!(status, 200, "{a}");
    let own = practices(&s.config, "north-staffs");
    let results = a["results"].as_array().unwrap();
    assert_eq!(results.len(), 5);
    assert!(a["meta"]["total_rows"].as_u64().unwrap() >= 5);
    let views: Vec<f64> = results.iter().map(|r| r["metrics"][1].as_f64().unwrap()).collect();
    assert!(views.windows(2).all(|w| w[0] >= w[1]), "ordered by views desc: {views:?}");
    for r in results {
        let code = r["dimensions"][0].as_str().unwrap();
        assert!(own.contains(&code.to_owned()));
        assert!(a["meta"]["practice_names"][code].as_str().is_some_and(|n| !n.is_empty()), "name for {code}");
    }
    // Penetration is the average weekly reach per 1,000 registered patients (the practice's list size).
    let first = &results[0];
    let code = first["dimensions"][0].as_str().unwrap();
    let list_size = s.config.tenants[0].practices.iter().find(|p| p.code.as_str() == code).unwrap().list_size.unwrap();
    let weeks_q = json!({"metrics": ["gross_reach"], "dimensions": ["week"], "filters": [["is", "practice", [code]]]});
    let (_, weeks) = post(&s.url, &k, &weeks_q).await;
    let weeks = weeks["results"].as_array().unwrap();
    let reach: f64 = weeks.iter().map(|w| w["metrics"][0].as_f64().unwrap()).sum();
    assert_eq!(reach, first["metrics"][0].as_f64().unwrap());
    let expected = reach / weeks.len() as f64 / f64::from(list_size) * 1000.0;
    let pen = first["metrics"][2].as_f64().unwrap();
    assert!((pen - expected).abs() < 1e-3, "penetration {pen} vs {expected}");
    assert_eq!(a["meta"]["cached"], false);
    assert_eq!(a["meta"]["source"], "report_reach_weekly");
    // The same query, written differently (filters in another order, same defaults), comes from the cache.
    let (_, again) = post(&s.url, &k, &body).await;
    assert_eq!(again["meta"]["cached"], true);
    assert_eq!(again["results"], a["results"]);
    assert!(
        a["meta"]["notes"].as_array().unwrap().iter().any(|n| n.as_str().unwrap().contains("counts twice")),
        "a gross sum says so: {}",
        a["meta"]["notes"]
    );
    // The former names (`reach` read as unique people; `penetration` clashed with the age-bands report's fraction)
    // still answer, with the same figures under the new names and a note saying so, also from the cache; an order
    // by a former name orders by the metric.
    let old = json!({"metrics": ["reach", "views", "penetration"], "dimensions": ["practice"], "date_range": "all",
                     "order_by": [["penetration", "desc"]], "pagination": {"limit": 5}});
    let new = json!({"metrics": ["gross_reach", "views", "reach_per_1000"], "dimensions": ["practice"], "date_range": "all",
                     "order_by": [["reach_per_1000", "desc"]], "pagination": {"limit": 5}});
    let (st, by_old) = post(&s.url, &k, &old).await;
    assert_eq!(st, 200, "{by_old}");
    let (_, by_new) = post(&s.url, &k, &new).await;
    assert_eq!(by_old["results"], by_new["results"]);
    assert_eq!(by_old["query"]["metrics"], json!(["gross_reach", "views", "reach_per_1000"]));
    let notes = |a: &Value| {
        a["meta"]["notes"].as_array().unwrap().iter().map(|n| n.as_str().unwrap().to_owned()).collect::<Vec<_>>()
    };
    for (was, is) in [("reach", "gross_reach"), ("penetration", "reach_per_1000")] {
        let said = format!("metric `{was}` is now called `{is}`");
        assert!(notes(&by_old).iter().any(|n| n.contains(&said)), "{said}: {:?}", notes(&by_old));
        assert!(!notes(&by_new).iter().any(|n| n.contains(&said)), "no rename note for new names");
    }
    assert_eq!(by_new["meta"]["cached"], true, "the same query under new names is the cached answer");
    // A query carrying hundreds of filter values is answered but never cached (a flood of them leaves memory as it
    // was), and answers the same as the service's own filtering of fewer values would.
    let mut values: Vec<String> = (0..500).map(|i| format!("{}{i:04}", "Z".repeat(150))).collect();
    values[0] = code.to_lowercase();
    let big = json!({"metrics": ["views"], "dimensions": ["practice"], "date_range": "all", "filters": [["contains", "practice", values]]});
    for _ in 0..2 {
        let (st, a) = post(&s.url, &k, &big).await;
        assert_eq!(st, 200, "{a}");
        assert_eq!(a["meta"]["cached"], false, "a large query's answer is not kept");
        assert_eq!(a["results"].as_array().unwrap().len(), 1, "contains ignores case: {}", a["results"]);
        assert_eq!(a["results"][0]["dimensions"][0], code);
    }

    // Totals: the practice breakdown adds up to the tenant total for an additive metric.
    let (_, total) = post(&s.url, &k, &json!({"metrics": ["views"]})).await;
    let (_, by_practice) = post(&s.url, &k, &json!({"metrics": ["views"], "dimensions": ["practice"]})).await;
    let sum: f64 =
        by_practice["results"].as_array().unwrap().iter().map(|r| r["metrics"][0].as_f64().unwrap_or(0.0)).sum();
    assert_eq!(total["results"][0]["metrics"][0].as_f64().unwrap(), sum);
}

/// The reports keep history: the stroke-video month's age bands and last year's weeks answer, `meta` states the days
/// the rows cover (not the range asked), and an empty answer says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_answers_by_date_with_the_days_covered_and_empty_answers_say_why() {
    let s = serve().await;
    let k = key(&s.config, &["north-staffs"], &[KeyScope::Read]);
    let notes = |a: &Value| {
        a["meta"]["notes"].as_array().unwrap().iter().map(|n| n.as_str().unwrap().to_owned()).collect::<Vec<_>>()
    };
    let ask = |metric: &str, dims: Vec<&str>, from: &str, to: &str| json!({"metrics": [metric], "dimensions": dims, "date_range": [from, to]});
    let (status, a) = post(&s.url, &k, &ask("people", vec!["age_band"], "2018-03-01", "2018-03-31")).await;
    assert_eq!(status, 200, "{a}");
    assert_eq!(a["results"].as_array().unwrap().len(), 7, "seven bands in March 2018: {a}");
    assert_eq!(a["meta"]["date_range"], json!(["2018-02-26", "2018-03-25"]), "the window ending 25 March: 28 days");
    assert!(notes(&a).iter().any(|n| n.contains("28-day window ending 25 March 2018")), "{:?}", notes(&a));
    // The window a week earlier answers a range ending then, with its own figures.
    let (_, earlier) = post(&s.url, &k, &ask("people", vec!["age_band"], "2018-03-01", "2018-03-18")).await;
    assert_eq!(earlier["meta"]["date_range"], json!(["2018-02-19", "2018-03-18"]));
    assert_ne!(earlier["results"], a["results"]);
    // Weeks ending in March begin in February: said.
    let (_, weeks) = post(&s.url, &k, &ask("gross_reach", vec!["week"], "2018-03-01", "2018-03-31")).await;
    assert_eq!(weeks["meta"]["date_range"], json!(["2018-02-26", "2018-03-25"]));
    let said = "weeks ending 4 March 2018 to 25 March 2018 answered: they cover 26 February 2018";
    assert!(notes(&weeks).iter().any(|n| n.contains(said)), "{:?}", notes(&weeks));
    // The same month a year before: the history is there for year-on-year.
    let (_, last_year) = post(&s.url, &k, &ask("gross_reach", vec!["week"], "2017-03-01", "2017-03-31")).await;
    assert_eq!(last_year["results"].as_array().unwrap().len(), 4, "{last_year}");
    // Empty answers say why.
    let (status, before) = post(&s.url, &k, &ask("people", vec!["age_band"], "2015-01-01", "2015-03-01")).await;
    assert_eq!(status, 200);
    assert!(before["results"].as_array().unwrap().is_empty());
    assert!(notes(&before).iter().any(|n| n.contains("no facts that early")), "{:?}", notes(&before));
    let (_, after) = post(&s.url, &k, &ask("gross_reach", vec![], "2026-01-01", "2026-02-01")).await;
    assert!(notes(&after).iter().any(|n| n.contains("not computed yet")), "{:?}", notes(&after));
    let (_, short) = post(&s.url, &k, &ask("gross_reach", vec!["week"], "2018-03-06", "2018-03-09")).await;
    assert!(notes(&short).iter().any(|n| n.contains("no complete week")), "{:?}", notes(&short));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_bad_input_gets_a_4xx_saying_what_and_how_to_fix_it() {
    let s = serve().await;
    let k = key(&s.config, &["north-staffs"], &[KeyScope::Read]);
    let other = practices(&s.config, "stoke")[0].clone();
    let cases: Vec<(Value, u16, &str)> = vec![
        (json!({"metrics": ["reech"]}), 400, "metrics[0]"),
        (json!({"metrics": ["reach"], "dimensions": ["colour"]}), 400, "dimensions[0]"),
        (json!({"metrics": ["reach"], "date_range": ["2018-02-30", "2018-03-10"]}), 400, "date_range[0]"),
        (json!({"metrics": ["reach"], "date_range": ["2010-01-01", "2018-03-10"]}), 400, "date_range"),
        (json!({"metrics": ["reach"], "pagination": {"limit": 1000000}}), 400, "pagination.limit"),
        (json!({"metrics": ["people"], "dimensions": ["week"]}), 400, "metrics"),
        (json!({"metrics": ["reach"], "filters": [["is", "practice", [other]]]}), 400, "filters"),
        // ISO 8601 dates only: "18-03-01" is not the year 18.
        (json!({"metrics": ["reach"], "date_range": ["18-03-01", "2018-03-10"]}), 400, "date_range[0]"),
        // Bounded inputs: values per filter, filters per query.
        (json!({"metrics": ["reach"], "filters": [["contains", "practice", vec!["M8"; 501]]]}), 400, "filters[0]"),
        (json!({"metrics": ["reach"], "filters": vec![json!(["is_not", "practice", ["X"]]); 17]}), 400, "filters"),
        (json!({"metrics": ["reach"], "site_id": "stoke"}), 403, ""),
        (json!({"metrics": ["reach"], "site_id": "no-such-tenant"}), 403, ""),
    ];
    for (body, status, field) in cases {
        let (got, e) = post(&s.url, &k, &body).await;
        assert_eq!(got, status, "{body} -> {e}");
        assert!(e["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{e}");
        if !field.is_empty() {
            assert_eq!(e["error"]["field"], field, "{body} -> {e}");
            assert!(e["error"]["hint"].is_string(), "{e}");
        }
        // Nothing about the other tenant's practices or data comes back.
        assert!(!e.to_string().contains("Stoke") || body.to_string().contains("stoke"), "{e}");
    }
    // Broken JSON.
    let resp = client().post(format!("{}/api/v2/query", s.url)).bearer_auth(&k).body("{metrics:").send().await.unwrap();
    assert_eq!(resp.status(), 400);
    // No key, a malformed key, a forged key.
    let resp =
        client().post(format!("{}/api/v2/query", s.url)).json(&json!({"metrics": ["reach"]})).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    assert!(resp.headers().contains_key("www-authenticate"));
    let (st, _) = post(&s.url, "hunter2", &json!({"metrics": ["reach"]})).await;
    assert_eq!(st, 401);
    let forged = format!("{}{}", &k[..k.len() - 4], "0000");
    let (st, e) = post(&s.url, &forged, &json!({"metrics": ["reach"]})).await;
    assert_eq!(st, 401);
    assert!(!e.to_string().contains(&forged), "the key is never echoed");
    // The scheme is case-insensitive: `bearer` is `Bearer`.
    let resp = client()
        .post(format!("{}/api/v2/query", s.url))
        .header("authorization", format!("bearer {k}"))
        .json(&json!({"metrics": ["reach"], "date_range": "all"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // Errors the router answers itself are JSON with a hint too: no such path, a wrong method.
    for (resp, status) in [
        (client().get(format!("{}/api/v1/nope", s.url)).bearer_auth(&k).send().await.unwrap(), 404),
        (client().get(format!("{}/api/v2/query", s.url)).bearer_auth(&k).send().await.unwrap(), 405),
    ] {
        assert_eq!(resp.status().as_u16(), status);
        let e: Value = resp.json().await.unwrap();
        assert!(e["error"]["message"].is_string() && e["error"]["hint"].is_string(), "{status}: {e}");
    }
    // A body declared over the limit is refused from its headers alone, before a byte of it is sent (a client
    // still writing megabytes would otherwise race the server's answer): 413, JSON with a hint, connection closed.
    let (head, body) = raw_exchange(
        &s.url,
        &format!(
            "POST /api/v2/query HTTP/1.1\r\nhost: pulse\r\nauthorization: Bearer {k}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            3 << 20
        ),
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    assert!(head.to_ascii_lowercase().contains("connection: close"), "{head}");
    let e: Value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("413 body is JSON: {body}"));
    assert!(e["error"]["message"].is_string() && e["error"]["hint"].is_string(), "413: {e}");
    // Report endpoint: unknown report, bad date, other tenant's practice, unknown parameter.
    for (path, status) in [
        ("/api/v1/reports/nope".to_owned(), 404),
        ("/api/v1/reports/reach?from=2018-13-01".to_owned(), 400),
        (format!("/api/v1/reports/reach?practice={other}"), 400),
        ("/api/v1/reports/reach?key=abc".to_owned(), 400),
        ("/api/v1/reports/reach?format=xlsx".to_owned(), 400),
    ] {
        let resp = client().get(format!("{}{path}", s.url)).bearer_auth(&k).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), status, "{path}");
        let e: Value = resp.json().await.unwrap();
        assert!(e["error"]["message"].is_string(), "{path}: {e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_scoped_revocable_and_a_regional_key_names_its_tenant() {
    let s = serve().await;
    let read = key(&s.config, &["stoke"], &[KeyScope::Read]);
    let region = key(&s.config, &["north-staffs", "stoke"], &[KeyScope::Read, KeyScope::Admin]);
    let (st, e) = post(&s.url, &region, &json!({"metrics": ["reach"]})).await;
    assert_eq!(st, 400, "a regional key must say which tenant: {e}");
    assert_eq!(e["error"]["field"], "site_id");
    for t in ["north-staffs", "stoke"] {
        let (st, a) = post(&s.url, &region, &json!({"metrics": ["reach"], "site_id": t})).await;
        assert_eq!(st, 200, "{a}");
        assert_eq!(a["meta"]["tenant"], t);
    }
    // Admin endpoints need the admin scope.
    let resp = client().get(format!("{}/api/v1/keys", s.url)).bearer_auth(&read).send().await.unwrap();
    assert_eq!(resp.status(), 403);
    let resp = client().get(format!("{}/api/v1/keys", s.url)).bearer_auth(&region).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let listed: Value = resp.json().await.unwrap();
    assert!(!listed.to_string().contains("hash"), "hashes are not listed");
    // The admin revokes the stoke key; it stops working on its next request.
    let id = read.split('_').nth(1).unwrap();
    let resp = client().post(format!("{}/api/v1/keys/{id}/revoke", s.url)).bearer_auth(&region).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let (st, e) = post(&s.url, &read, &json!({"metrics": ["reach"]})).await;
    assert_eq!(st, 401);
    assert!(e["error"]["message"].as_str().unwrap().contains("revoked"), "{e}");
    // me
    let me: Value =
        client().get(format!("{}/api/v1/me", s.url)).bearer_auth(&region).send().await.unwrap().json().await.unwrap();
    assert_eq!(me["tenants"].as_array().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_download_as_json_csv_and_parquet() {
    let s = serve().await;
    let k = key(&s.config, &["north-staffs"], &[KeyScope::Read]);
    let get = |q: &str| client().get(format!("{}/api/v1/reports/{q}", s.url)).bearer_auth(&k).send();
    let json: Value = get("reach?sort=-reach&limit=3").await.unwrap().json().await.unwrap();
    assert_eq!(json["rows"].as_array().unwrap().len(), 3);
    // Never cut silently: the total, and a link to the next page, which follows on from this one.
    let total = json["total"].as_u64().unwrap();
    assert!(total > 3, "{}", json["total"]);
    assert_eq!((json["offset"].as_u64(), json["returned"].as_u64()), (Some(0), Some(3)));
    let next = json["next"].as_str().unwrap().to_owned();
    assert!(next.contains("offset=3") && next.contains("limit=3") && next.contains("sort=-reach"), "{next}");
    let page2: Value =
        client().get(format!("{}{next}", s.url)).bearer_auth(&k).send().await.unwrap().json().await.unwrap();
    assert_eq!(page2["offset"], 3);
    assert_ne!(page2["rows"][0], json["rows"][0]);
    let last: Value =
        get(&format!("reach?sort=-reach&limit=3&offset={}", total - 1)).await.unwrap().json().await.unwrap();
    assert_eq!((last["returned"].as_u64(), last["next"].is_null()), (Some(1), true));
    // A CSV page says so in its headers.
    let csv = get("reach?format=csv&limit=5").await.unwrap();
    assert_eq!(csv.headers()["x-total-count"].to_str().unwrap(), total.to_string());
    assert!(csv.headers()["link"].to_str().unwrap().contains("offset=5"), "{:?}", csv.headers());
    assert!(csv.headers().contains_key("x-pulse-partial"));
    // Ranges are bounded as in the query API.
    let far = get("reach?from=2010-01-01&to=2018-03-01").await.unwrap();
    assert_eq!(far.status(), 400);
    assert!(json["run"]["run_id"].is_string());
    assert!(json["rows"][0]["practice_name"].is_string());
    let csv = get("campaigns?format=csv").await.unwrap();
    assert_eq!(csv.headers()["content-type"], "text/csv; charset=utf-8");
    assert!(csv.headers()["content-disposition"].to_str().unwrap().contains("north-staffs-campaigns.csv"));
    let text = csv.text().await.unwrap();
    assert!(text.starts_with("campaign,practice_code,practice_name,"), "{}", &text[..80]);
    assert!(text.contains("UHNM stroke video"));
    let pq = get("posts?format=parquet").await.unwrap().bytes().await.unwrap();
    assert_eq!(&pq[..4], b"PAR1");
    let index: Value =
        client().get(format!("{}/api/v1/reports", s.url)).bearer_auth(&k).send().await.unwrap().json().await.unwrap();
    assert_eq!(index["reports"].as_array().unwrap().len(), pulse_app::report::Kind::ALL.len());
    // The OpenAPI document needs no key and lists the query endpoint.
    let doc: Value = client().get(format!("{}/api/v1/openapi.json", s.url)).send().await.unwrap().json().await.unwrap();
    assert!(doc["paths"]["/api/v2/query"]["post"].is_object());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_over_its_rate_limit_gets_429_with_retry_after_and_others_are_unaffected() {
    let mut config = config();
    config.server.rate_limit_per_minute = 5;
    let s = serve_with(config).await;
    let k1 = key(&s.config, &["north-staffs"], &[KeyScope::Read]);
    let k2 = key(&s.config, &["north-staffs"], &[KeyScope::Read]);
    let mut statuses = Vec::new();
    for _ in 0..7 {
        statuses.push(post(&s.url, &k1, &json!({"metrics": ["reach"]})).await.0);
    }
    assert_eq!(&statuses[..5], &[200; 5]);
    assert_eq!(statuses[6], 429);
    let resp = client()
        .post(format!("{}/api/v2/query", s.url))
        .bearer_auth(&k1)
        .json(&json!({"metrics": ["reach"]}))
        .send()
        .await
        .unwrap();
    assert!(resp.headers()["retry-after"].to_str().unwrap().parse::<u64>().unwrap() >= 1);
    assert_eq!(post(&s.url, &k2, &json!({"metrics": ["reach"]})).await.0, 200);
}

/// Beside the request rate, each key has a budget of the server's work (ms a minute): a key whose requests used it
/// up gets 429 saying so, while the rate limit alone would still let it in; other keys are unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_that_used_its_work_budget_waits_and_others_are_unaffected() {
    let mut config = config();
    config.server.work_ms_per_minute = 1;
    let s = serve_with(config).await;
    let k1 = key(&s.config, &["north-staffs"], &[KeyScope::Read]);
    let k2 = key(&s.config, &["north-staffs"], &[KeyScope::Read]);
    let queries = [
        json!({"metrics": ["reach"], "dimensions": ["practice", "week"]}),
        json!({"metrics": ["views"], "dimensions": ["practice", "week"]}),
        json!({"metrics": ["engagements"], "dimensions": ["practice", "week"]}),
    ];
    let mut refused = None;
    for q in &queries {
        let (st, body) = post(&s.url, &k1, q).await;
        if st == 429 {
            refused = Some(body);
            break;
        }
        assert_eq!(st, 200, "{body}");
    }
    let body = refused.expect("three uncached queries use up a budget of 1 ms a minute");
    assert!(body["error"]["message"].as_str().unwrap().contains("budget of the server's work"), "{body}");
    assert_eq!(post(&s.url, &k2, &queries[0]).await.0, 200);
}

/// A plan made on the dashboard is charged to the key's work budget, as the API's are: after one plan, the same
/// key's next request waits (429) and another key's does not. Without the charge the dashboard's planner would be
/// free work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_on_the_dashboard_is_charged_to_the_keys_work_budget() {
    let mut config = config();
    config.server.work_ms_per_minute = 1;
    let s = serve_with(config).await;
    let k1 = key(&s.config, &["north-staffs"], &[KeyScope::Read]);
    let k2 = key(&s.config, &["north-staffs"], &[KeyScope::Read]);
    let session = dashboard_session(&s.url, &k1).await;
    let answer = dashboard_page(&s.url, &session, "/campaigns/plan?start=2018-03-10&target=20000").await;
    assert!(answer.contains("id=\"mde\""), "the plan was made");
    let q = json!({"metrics": ["reach"], "dimensions": ["practice"]});
    let (status, body) = post(&s.url, &k1, &q).await;
    assert_eq!(status, 429, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("budget of the server's work"), "{body}");
    assert_eq!(post(&s.url, &k2, &q).await.0, 200);
}

/// A small deterministic generator (no dependency): xorshift.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[(self.next() % xs.len() as u64) as usize]
    }
    fn chance(&mut self, pct: u64) -> bool {
        self.next() % 100 < pct
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_queries_with_two_tenants_keys_never_return_a_row_of_the_other_tenant() {
    let s = serve().await;
    let tenants = ["north-staffs", "stoke"];
    let keys: Vec<String> = tenants.iter().map(|t| key(&s.config, &[t], &[KeyScope::Read])).collect();
    let own: Vec<BTreeSet<String>> = tenants.iter().map(|t| practices(&s.config, t).into_iter().collect()).collect();
    let all_practices: Vec<String> = own.iter().flatten().cloned().collect();
    let metrics = [
        "reach",
        "engaged_users",
        "views",
        "engagements",
        "engagement_rate",
        "penetration",
        "video_views",
        "posts",
        "people",
    ];
    let dims = ["practice", "week", "age_band", "gender", "campaign", "post_type", "topic"];
    let ranges = [
        json!("all"),
        json!("28d"),
        json!("12mo"),
        json!(["2018-01-01", "2018-03-31"]),
        json!(["2017-06-01", "2018-06-30"]),
    ];
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let (mut answered, mut refused, mut rows_checked) = (0, 0, 0usize);
    for round in 0..300 {
        let who = (round % 2) as usize;
        let mut body = json!({
            "metrics": (0..1 + rng.next() % 3).map(|_| *rng.pick(&metrics)).collect::<BTreeSet<_>>(),
            "dimensions": (0..rng.next() % 3).map(|_| *rng.pick(&dims)).collect::<BTreeSet<_>>(),
            "date_range": rng.pick(&ranges).clone(),
        });
        if rng.chance(30) {
            let p = rng.pick(&all_practices).clone();
            body["filters"] = json!([[rng.pick(&["is", "is_not"]), "practice", [p]]]);
        }
        if rng.chance(15) {
            body["site_id"] = json!(rng.pick(&tenants));
        }
        let (status, a) = post(&s.url, &keys[who], &body).await;
        match status {
            200 => {
                answered += 1;
                assert_eq!(a["meta"]["tenant"], tenants[who], "{body}");
                let dim_names: Vec<&str> =
                    a["query"]["dimensions"].as_array().unwrap().iter().map(|d| d.as_str().unwrap()).collect();
                if let Some(pi) = dim_names.iter().position(|d| *d == "practice") {
                    for r in a["results"].as_array().unwrap() {
                        let code = r["dimensions"][pi].as_str().unwrap();
                        assert!(own[who].contains(code), "{code} is not {}'s: {body}", tenants[who]);
                        rows_checked += 1;
                    }
                }
                for code in a["meta"]["practice_names"].as_object().unwrap().keys() {
                    assert!(own[who].contains(code), "name of {code} leaked: {body}");
                }
            }
            400 | 403 | 409 => {
                refused += 1;
                let text = a.to_string();
                // A refusal never carries the other tenant's practice names.
                let other_names: Vec<String> =
                    s.config.tenants[1 - who].practices.iter().map(|p| p.name.clone()).collect();
                assert!(other_names.iter().all(|n| !text.contains(n.as_str())), "{text}");
            }
            other => panic!("unexpected status {other} for {body}: {a}"),
        }
    }
    println!("{answered} answered, {refused} refused, {rows_checked} practice rows checked");
    assert!(answered > 100 && refused > 10 && rows_checked > 500, "{answered} {refused} {rows_checked}");
}

/// Log lines written by the server in this test binary.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_is_logged_with_key_id_tenant_rows_and_time_never_the_secret() {
    let logs = captured_logs();
    let s = serve().await;
    let k = key(&s.config, &["stoke"], &[KeyScope::Read]);
    let id = k.split('_').nth(1).unwrap().to_owned();
    let (st, _) = post(&s.url, &k, &json!({"metrics": ["views"], "dimensions": ["practice"]})).await;
    assert_eq!(st, 200);
    let forged = format!("pulse_{id}_{}", "f".repeat(64));
    assert_eq!(post(&s.url, &forged, &json!({"metrics": ["views"]})).await.0, 401);
    let resp = client().get(format!("{}/api/v1/reports/quality", s.url)).bearer_auth(&k).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let text = String::from_utf8(logs.lock().unwrap().clone()).unwrap();
    let ours: Vec<&str> = text.lines().filter(|l| l.contains(&format!("key=\"{id}\""))).collect();
    assert!(ours.len() >= 2, "{text}");
    let query_line = ours.iter().find(|l| l.contains("/api/v2/query")).expect("the query is logged");
    for part in ["tenant=\"stoke\"", "rows=", "status=200", "ms=", "\\\"views\\\""] {
        assert!(query_line.contains(part), "{part} missing from {query_line}");
    }
    assert!(text.contains("status=401"), "the refused request is logged too");
    // An error after the key was accepted keeps the tenant in its line.
    let (st, _) = post(&s.url, &k, &json!({"metrics": ["reach"], "date_range": ["2018-03-10", "2018-03-01"]})).await;
    assert_eq!(st, 400);
    let text = String::from_utf8(logs.lock().unwrap().clone()).unwrap();
    let bad = text.lines().rfind(|l| l.contains(&format!("key=\"{id}\"")) && l.contains("status=400"));
    assert!(bad.is_some_and(|l| l.contains("tenant=\"stoke\"")), "{bad:?}");
    let secret = k.rsplit('_').next().unwrap();
    assert!(!text.contains(secret) && !text.contains(&"f".repeat(64)), "a secret reached the log");
}

/// A key in a URL is refused with a 400 that does not echo it, before any handler or log line sees it, on the API and
/// the dashboard; the access log carries parameter names and a digest, never values; `next` after login is a path
/// on this site without control characters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_in_urls_are_refused_and_never_logged() {
    let logs = captured_logs();
    let s = serve().await;
    let k = key(&s.config, &["stoke"], &[KeyScope::Read]);
    let secret = k.rsplit('_').next().unwrap().to_owned();
    let c = client();
    let urls = [
        format!("{}/api/v1/reports/reach?tenant=stoke&key={k}", s.url),
        format!("{}/api/v1/reports/reach?tenant=stoke&api_key={k}", s.url),
        format!("{}/?key={k}", s.url),
        format!("{}/practices?from=2018-03-01&q={k}", s.url),
        format!("{}/login?next=%2F&access_token=abc", s.url),
    ];
    for url in &urls {
        let r = c.get(url).bearer_auth(&k).send().await.unwrap();
        assert_eq!(r.status(), 400, "{url}");
        assert!(r.headers().get("location").is_none(), "not sent on to a login page carrying it");
        let body = r.text().await.unwrap();
        assert!(!body.contains(&secret) && body.contains("not accepted in URLs"), "{body}");
    }
    // A report asked properly is logged with its parameters' names and a digest, not their values.
    let r = c
        .get(format!("{}/api/v1/reports/reach?tenant=stoke&from=2018-03-01&to=2018-03-31", s.url))
        .bearer_auth(&k)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = String::from_utf8(logs.lock().unwrap().clone()).unwrap();
    assert!(!text.contains(&secret), "a secret reached the log");
    let line = text.lines().find(|l| l.contains("GET /api/v1/reports/reach params=from,tenant,to q=")).expect(&text);
    assert!(!line.contains("2018-03-31"), "{line}");
    // A long query is logged by size and digest.
    let many: Vec<String> = (0..2000).map(|i| format!("M{i:05}")).collect();
    let q = json!({"metrics": ["views"], "dimensions": ["practice"], "filters": [["contains", "practice", many]]});
    let _ = post(&s.url, &k, &q).await;
    let text = String::from_utf8(logs.lock().unwrap().clone()).unwrap();
    assert!(!text.contains("M01999"), "a long query's values reached the log");
    // After login, only a same-site path without control characters or spaces.
    let form = c.get(format!("{}/login", s.url)).send().await.unwrap();
    let set = form.headers()["set-cookie"].to_str().unwrap().to_owned();
    let token = set.split(';').next().unwrap().split_once('=').unwrap().1.to_owned();
    let cases = [
        ("/\t/evil.example/", "/"),
        ("/a\nb", "/"),
        ("//evil.example", "/"),
        ("/practices?from=2018-03-01", "/practices?from=2018-03-01"),
    ];
    for (next, expect) in cases {
        let r = c
            .post(format!("{}/login", s.url))
            .header("cookie", format!("pulse_login_csrf={token}"))
            .form(&[("csrf", token.as_str()), ("next", next), ("key", k.as_str())])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 303, "{next:?}");
        assert_eq!(r.headers()["location"], expect, "{next:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_sessions_need_the_login_form_token_and_end_on_logout_or_revocation() {
    let s = serve().await;
    let k = key(&s.config, &["north-staffs"], &[KeyScope::Read]);
    let c = client();
    // Without a session, a page sends the browser to log in and come back.
    let r = c.get(format!("{}/practices?from=2018-03-01", s.url)).send().await.unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/login?next=%2Fpractices%3Ffrom%3D2018-03-01");
    // The login form sets a token cookie; a post without the matching token is refused.
    let form = c.get(format!("{}/login", s.url)).send().await.unwrap();
    let set = form.headers()["set-cookie"].to_str().unwrap().to_owned();
    let token = set.split(';').next().unwrap().split_once('=').unwrap().1.to_owned();
    let r = c
        .post(format!("{}/login", s.url))
        .header("cookie", format!("pulse_login_csrf={token}"))
        .form(&[("key", k.as_str()), ("csrf", "forged"), ("next", "/")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let login = |key: String| {
        let c = c.clone();
        let url = s.url.clone();
        let token = token.clone();
        async move {
            c.post(format!("{url}/login"))
                .header("cookie", format!("pulse_login_csrf={token}"))
                .form(&[("key", key.as_str()), ("csrf", token.as_str()), ("next", "//evil.example/")])
                .send()
                .await
                .unwrap()
        }
    };
    assert_eq!(login("pulse_00000000_00".into()).await.status(), 401);
    let r = login(k.clone()).await;
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/", "an off-site `next` is ignored");
    let cookie = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|v| v.starts_with("pulse_session="))
        .unwrap();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"), "{cookie}");
    let session = cookie.split(';').next().unwrap().to_owned();
    let page = c.get(format!("{}/", s.url)).header("cookie", &session).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.headers()["content-security-policy"].to_str().unwrap().contains("default-src 'none'"));
    let html = page.text().await.unwrap();
    assert!(html.contains("<svg") && html.contains("North Staffordshire"));
    let csrf = html.split("name=\"csrf\" value=\"").nth(1).unwrap().split('"').next().unwrap().to_owned();
    // Logging out needs the session's token.
    let r = c.post(format!("{}/logout", s.url)).header("cookie", &session).form(&[("csrf", "x")]).send().await.unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(c.get(format!("{}/", s.url)).header("cookie", &session).send().await.unwrap().status(), 200);
    let r = c
        .post(format!("{}/logout", s.url))
        .header("cookie", &session)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(c.get(format!("{}/", s.url)).header("cookie", &session).send().await.unwrap().status(), 303);
    // A new session ends when its key is revoked.
    let r = login(k.clone()).await;
    let session = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|v| v.starts_with("pulse_session="))
        .unwrap();
    let session = session.split(';').next().unwrap().to_owned();
    assert_eq!(c.get(format!("{}/posts", s.url)).header("cookie", &session).send().await.unwrap().status(), 200);
    pulse_app::keys::Keys::for_config(&s.config).revoke(k.split('_').nth(1).unwrap()).unwrap();
    assert_eq!(c.get(format!("{}/posts", s.url)).header("cookie", &session).send().await.unwrap().status(), 303);
    // Failed logins are limited per address: after 10 wrong keys (one was tried above) the 11th try, even with a
    // good key, waits, with Retry-After.
    let good = key(&s.config, &["north-staffs"], &[KeyScope::Read]);
    for _ in 0..9 {
        assert_eq!(login("pulse_00000000_00".into()).await.status(), 401);
    }
    let r = login(good).await;
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    assert!(r.text().await.unwrap().contains("too many failed logins"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_scoped_key_gets_a_package_of_its_own_tenant_and_the_export_is_audited() {
    let s = serve().await;
    let read_only = key(&s.config, &["north-staffs"], &[KeyScope::Read]);
    let exporter = key(&s.config, &["north-staffs"], &[KeyScope::Read, KeyScope::Export]);
    let other = key(&s.config, &["stoke"], &[KeyScope::Export]);
    let request = json!({"project": "study", "purpose": "DSA-7 evaluation", "tenants": ["north-staffs"]});
    let send =
        |k: &str, body: &Value| client().post(format!("{}/api/v1/exports", s.url)).bearer_auth(k).json(body).send();
    assert_eq!(send(&read_only, &request).await.unwrap().status(), 403, "read scope cannot export");
    assert_eq!(send(&other, &request).await.unwrap().status(), 403, "another tenant's key cannot export it");
    let e: Value = send(&exporter, &json!({"project": "study"})).await.unwrap().json().await.unwrap();
    assert!(e["error"]["message"].as_str().unwrap().contains("purpose"), "{e}");
    let resp = send(&exporter, &request).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/x-tar");
    let tar = resp.bytes().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("p.tar"), &tar).unwrap();
    let listing = std::process::Command::new("tar").arg("-tf").arg(dir.path().join("p.tar")).output().unwrap();
    let listing = String::from_utf8(listing.stdout).unwrap();
    for f in ["datapackage.json", "reach_weekly.csv", "age_bands.parquet", "SHA256SUMS", "README.md"] {
        assert!(listing.lines().any(|l| l.ends_with(f)), "{f} missing from {listing}");
    }
    let status =
        std::process::Command::new("tar").arg("-xf").arg(dir.path().join("p.tar")).arg("-C").arg(dir.path()).status();
    assert!(status.unwrap().success());
    let id = exporter.split('_').nth(1).unwrap();
    let store = pulse_app::open::store(&s.config).unwrap();
    let log = pulse_export::log(&store, &s.config.operator_access(), Some("north-staffs")).await.unwrap();
    assert!(log.iter().any(|r| r.requested_by == format!("key {id}") && r.purpose == "DSA-7 evaluation"), "{log:?}");
    // The two refused requests are in the audit trail too, under the key that made them and with why.
    let refused: Vec<(String, String)> =
        log.iter().filter_map(|r| pulse_export::refusal(r).map(|why| (r.requested_by.clone(), why))).collect();
    let ro = read_only.split('_').nth(1).unwrap();
    let st = other.split('_').nth(1).unwrap();
    assert!(
        refused.iter().any(|(by, why)| by == &format!("key {ro}") && why.contains("`export` scope")),
        "{refused:?}"
    );
    assert!(refused.iter().any(|(by, _)| by == &format!("key {st}")), "{refused:?}");
    let stoke = pulse_export::log(&store, &s.config.operator_access(), Some("stoke")).await.unwrap();
    assert!(
        stoke.iter().any(|r| r.requested_by == format!("key {st}") && r.rows == 0),
        "the asking key's tenant sees it too"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digest_lists_are_managed_per_tenant_and_the_unsubscribe_link_works_once_signed() {
    let s = serve().await;
    let c = client();
    let read = key(&s.config, &["stoke"], &[KeyScope::Read]);
    let admin = key(&s.config, &["stoke"], &[KeyScope::Read, KeyScope::Admin]);
    let other_admin = key(&s.config, &["north-staffs"], &[KeyScope::Read, KeyScope::Admin]);
    let get = |k: String| {
        let (c, url) = (c.clone(), s.url.clone());
        async move {
            let r = c.get(format!("{url}/api/v1/subscriptions")).bearer_auth(k).send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    // A tenant's key sees its own lists only.
    let (status, body) = get(read.clone()).await;
    assert_eq!(status, 200, "{body}");
    let names: Vec<&str> =
        body["subscriptions"].as_array().unwrap().iter().map(|l| l["name"].as_str().unwrap()).collect();
    assert_eq!(names, vec!["stoke-weekly"]);
    let add = |k: String, list: &str, body: Value| {
        let (c, url) = (c.clone(), format!("{}/api/v1/subscriptions/{list}/recipients", s.url));
        async move {
            let r = c.post(url).bearer_auth(k).json(&body).send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    // Changing a list needs admin, of the list's tenant; a bad address is refused with the field.
    assert_eq!(add(read.clone(), "stoke-weekly", json!({"email": "new@stoke.example.nhs.uk"})).await.0, 403);
    assert_eq!(add(other_admin.clone(), "stoke-weekly", json!({"email": "new@stoke.example.nhs.uk"})).await.0, 403);
    let (status, err) = add(admin.clone(), "stoke-weekly", json!({"email": "not an address"})).await;
    assert_eq!((status, err["error"]["field"].as_str()), (400, Some("email")), "{err}");
    assert_eq!(add(admin.clone(), "no-such-list", json!({"email": "a@b.nhs.uk"})).await.0, 404);
    let (status, list) = add(admin.clone(), "stoke-weekly", json!({"email": "new@stoke.example.nhs.uk"})).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["recipients"], json!(["lead@stoke.example.nhs.uk", "new@stoke.example.nhs.uk"]));
    let r = c
        .delete(format!("{}/api/v1/subscriptions/stoke-weekly/recipients/new@stoke.example.nhs.uk", s.url))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["recipients"], json!(["lead@stoke.example.nhs.uk"]));

    // The link in a digest: GET asks to confirm (and changes nothing), a forged token is refused, POST unsubscribes.
    let link =
        pulse_app::subscriptions::unsubscribe_link(&s.config, "stoke-weekly", "lead@stoke.example.nhs.uk").unwrap();
    let link = link.replace(&s.config.digest.dashboard_url, &s.url);
    let page = c.get(&link).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("<form method=\"post\""));
    assert_eq!(get(read.clone()).await.1["subscriptions"][0]["recipients"], json!(["lead@stoke.example.nhs.uk"]));
    let forged = link.replace("token=", "token=0");
    assert_eq!(c.post(&forged).send().await.unwrap().status(), 403);
    let other = link.replace("lead%40stoke", "boss%40stoke");
    assert_eq!(c.post(&other).send().await.unwrap().status(), 403, "a token is for one address");
    // One-click (RFC 8058) and the confirm button are the same POST; twice is fine.
    for _ in 0..2 {
        let r = c.post(&link).body("List-Unsubscribe=One-Click").send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    let after = get(read).await.1;
    assert_eq!(after["subscriptions"][0]["recipients"], json!([]), "{after}");
    assert_eq!(after["subscriptions"][0]["unsubscribed"], json!(["lead@stoke.example.nhs.uk"]));
}

/// The dashboard reads well: engaged users on their own axis, dates in one (UK) style, tenants by name in the
/// picker, the campaign interval explained, the token status dated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_reads_as_people_write() {
    let s = serve().await;
    let k = key(&s.config, &["north-staffs", "stoke"], &[KeyScope::Read, KeyScope::Admin]);
    let session = dashboard_session(&s.url, &k).await;
    let page = |path: &str| dashboard_page(&s.url, &session, path);
    let iso = regex_free_iso_dates;
    let overview = page("/?tenant=north-staffs").await;
    // Two charts, each with its own axis: reach, then engaged users.
    assert!(
        overview.contains("Weekly reach across the tenant")
            && overview.contains("Weekly engaged users across the tenant")
    );
    assert!(!overview.contains("Weekly reach and engaged users"), "not one chart sharing an axis");
    // The lede's week in UK style; no ISO date in the visible text (URLs and form values keep ISO).
    let lede = overview.split("<p class=\"lede\">").nth(1).unwrap().split("</p>").next().unwrap();
    assert!(lede.starts_with("Week ending ") && iso(lede).is_empty(), "{lede}");
    let week = lede.trim_start_matches("Week ending ").split(" · ").next().unwrap();
    assert!(chrono::NaiveDate::parse_from_str(week, "%d %b %Y").is_ok(), "UK style day: {lede}");
    // Tenants by name in the picker, their ids as the values.
    for t in &s.config.tenants {
        assert!(
            overview.contains(&format!("<option value=\"{}\"", t.id))
                && overview.contains(&format!(">{}</option>", t.name)),
            "picker names {}",
            t.name
        );
    }
    for path in ["/?tenant=stoke", "/posts?tenant=stoke", "/quality?tenant=stoke", "/campaigns?tenant=north-staffs"] {
        let html = page(path).await;
        let visible = visible_text(&html);
        assert!(iso(&visible).is_empty(), "{path} shows ISO dates {:?}", iso(&visible));
    }
    let campaigns = page("/campaigns?tenant=north-staffs").await;
    assert!(
        campaigns.contains("How to read an effect") && campaigns.contains("94 times in 100"),
        "the interval is explained"
    );
    // Each post is named by its text, linked to its permalink, posted at a London time; video views of a photo do not
    // apply ("–").
    let posts = page("/posts?tenant=stoke&from=2018-03-01&to=2018-03-31").await;
    assert!(
        posts.contains("<td class=\"excerpt\"><a href=\"https://www.facebook.com/")
            && posts.contains("rel=\"noopener noreferrer\""),
        "posts link to their permalinks: {}",
        posts.split("<tbody>").nth(1).unwrap_or_default().lines().take(3).collect::<Vec<_>>().join("\n")
    );
    let rows: Vec<&str> = posts.split("<tbody>").nth(1).unwrap_or_default().split("<tr>").skip(1).collect();
    assert!(!rows.is_empty());
    for row in &rows {
        let cells: Vec<&str> = row.split("<td").skip(1).collect();
        let kind = visible_text(&format!("<td{}", cells[3]));
        let video = visible_text(&format!("<td{}", cells[7]));
        if kind.trim() != "video" {
            assert_eq!(video.trim(), "–", "video views of a {kind}: {row}");
        }
        let posted = visible_text(&format!("<td{}", cells[0]));
        assert!(
            posted.trim().ends_with(|c: char| c.is_ascii_digit()) && posted.contains(':'),
            "a time of day: {posted}"
        );
    }
    // No range chosen: the last 52 weeks of the reports, said on the page with a link to this page's all history;
    // links and the picker leave the default out, so it follows the reports and each tenant's own.
    let run = pulse_app::report::main_run(&s.state.store, &s.config.operator_access(), "stoke").await.unwrap().unwrap();
    let from = run.range_to - chrono::Duration::days(363);
    let uk = |d: chrono::NaiveDate| d.format("%-d %b %Y").to_string();
    let practices = page("/practices?tenant=stoke&sort=views").await;
    let note = practices.split("range-note").nth(1).unwrap_or_default().split("</p>").next().unwrap_or_default();
    assert!(
        note.contains(&format!("The last 52 weeks of the reports: {} to {}", uk(from), uk(run.range_to)))
            && note.contains("href=\"/practices?sort=views&#38;tenant=stoke&#38;all=1\""),
        "{note}"
    );
    assert!(practices.contains("name=\"from\" value=\"\""), "the picker is left for a choice");
    assert!(practices.contains("/posts?tenant=stoke\""), "links leave the default out");
    let practice = page(&format!("/practices/{}?tenant=stoke", common::practices(&s.config, "stoke")[0])).await;
    assert!(
        practice.contains(&format!("/practices/{}?tenant=stoke&#38;all=1", common::practices(&s.config, "stoke")[0])),
        "all history of the same page"
    );
    let campaigns = page("/campaigns?tenant=north-staffs").await;
    assert!(!campaigns.contains("range-note"), "campaigns are not cut at a date");
    let all = page("/practices?all=1&tenant=stoke").await;
    assert!(all.contains("name=\"from\" value=\"\"") && !all.contains("The last 52 weeks"), "all history on asking");
    assert!(all.contains("/posts?tenant=stoke&#38;all=1"), "and it stays asked for from page to page");
    let reach_of = |html: &str| -> f64 {
        // The practices table's first numeric cell of each row is the gross reach: add them up.
        html.split("<tbody>")
            .nth(1)
            .unwrap_or_default()
            .split("<tr>")
            .skip(1)
            .filter_map(|row| {
                row.split("<td class=\"n\">").nth(1)?.split('<').next()?.replace(',', "").parse::<f64>().ok()
            })
            .sum()
    };
    assert!(
        reach_of(&all) > reach_of(&practices) && reach_of(&practices) > 0.0,
        "all history adds up more than its last year"
    );
    let quality = page("/quality?tenant=stoke").await;
    assert!(
        quality.contains("Tokens last checked by an ingest run on ")
            && quality.contains("This list is from the reports computed "),
        "the token status is dated: {}",
        quality.split("<h2>").nth(1).unwrap_or_default()
    );
}

/// The text a reader sees: tags, attribute values and the contents of `<script>`/`<style>` removed.
fn visible_text(html: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for ch in html.chars() {
        match ch {
            '<' => in_tag = true,
            '>' => {
                in_tag = false;
                out.push(' ');
            }
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out
}

/// ISO dates (`2018-03-25`) in `text`.
fn regex_free_iso_dates(text: &str) -> Vec<String> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    for i in 0..b.len().saturating_sub(9) {
        let w = &b[i..i + 10];
        let digits = |r: std::ops::Range<usize>| w[r].iter().all(u8::is_ascii_digit);
        if digits(0..4) && w[4] == b'-' && digits(5..7) && w[7] == b'-' && digits(8..10) {
            out.push(String::from_utf8_lossy(w).into_owned());
        }
    }
    out
}

/// The regional view: a key's tenants side by side, with adoption counted from the config (official page, claimed
/// page, none; those without listed) and reach equal to the query API's; a one-tenant key sees its tenant only; the
/// dashboard shows it to a regional key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_regional_view_sets_tenants_side_by_side_with_adoption() {
    use pulse_domain::PageKind;
    let s = serve().await;
    let region = key(&s.config, &["north-staffs", "stoke"], &[KeyScope::Read, KeyScope::Admin]);
    let get = |path: String, key: String| async move {
        let r = client().get(path).bearer_auth(key).send().await.unwrap();
        (r.status().as_u16(), r.json::<Value>().await.unwrap())
    };
    let (st, r) = get(format!("{}/api/v1/region", s.url), region.clone()).await;
    assert_eq!(st, 200, "{r}");
    let sides = r["tenants"].as_array().unwrap();
    assert_eq!(sides.len(), 2);
    for t in &s.config.tenants {
        let side = sides.iter().find(|x| x["tenant"] == t.id.as_str()).unwrap_or_else(|| panic!("{} in {r}", t.id));
        let has = |p: &pulse_config::PracticeConfig, k: PageKind| p.pages.iter().any(|g| g.kind == k);
        let official = t.practices.iter().filter(|p| has(p, PageKind::Official)).count();
        let claimed = t.practices.iter().filter(|p| !has(p, PageKind::Official) && has(p, PageKind::Claimed)).count();
        let none: BTreeSet<String> =
            t.practices.iter().filter(|p| p.pages.is_empty()).map(|p| p.code.to_string()).collect();
        assert_eq!(side["practices"], t.practices.len());
        assert_eq!(side["official"], official);
        assert_eq!(side["claimed"], claimed);
        assert_eq!(side["without_page"], none.len());
        let listed: BTreeSet<String> = side["practices_without_page"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["code"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(listed, none, "{}: the practices without a page", t.id);
        // The case study: about two thirds of practices use social media, and some claimed an unofficial page.
        let adoption = side["adoption"].as_f64().unwrap();
        assert!((0.5..0.9).contains(&adoption) && claimed > 0 && !none.is_empty(), "{side}");
        // Weekly reach is the query API's gross reach by week, averaged over the weeks with figures.
        let (st, a) = post(
            &s.url,
            &region,
            &json!({"site_id": t.id.as_str(), "metrics": ["gross_reach"], "dimensions": ["week"], "date_range": "all", "pagination": {"limit": 10000}}),
        )
        .await;
        assert_eq!(st, 200, "{a}");
        let weekly: Vec<f64> =
            a["results"].as_array().unwrap().iter().filter_map(|r| r["metrics"][0].as_f64()).collect();
        let mean = weekly.iter().sum::<f64>() / weekly.len() as f64;
        let got = side["weekly_reach"].as_f64().unwrap();
        assert!((got - mean).abs() <= 1e-6 * mean.max(1.0) + 0.5, "{}: {got} vs the query API's {mean}", t.id);
        let per_1000 = side["reach_per_1000"].as_f64().unwrap();
        assert!((per_1000 - got / side["registered"].as_f64().unwrap() * 1000.0).abs() < 1e-6);
    }
    // A range narrows the weeks; a one-tenant key sees its own tenant only; a wrong parameter is named.
    let (_, narrow) = get(format!("{}/api/v1/region?from=2018-03-01&to=2018-03-31", s.url), region.clone()).await;
    for t in narrow["tenants"].as_array().unwrap() {
        let weeks = t["weeks"].as_u64().unwrap();
        assert!((3..=5).contains(&weeks), "March 2018 has four or five weeks with figures: {t}");
    }
    let (st, e) = get(format!("{}/api/v1/region?from=2015-01-01&to=2018-12-31", s.url), region.clone()).await;
    assert_eq!((st, e["error"]["field"].as_str()), (400, Some("from")), "over three years: {e}");
    let one = key(&s.config, &["stoke"], &[KeyScope::Read]);
    let (_, mine) = get(format!("{}/api/v1/region", s.url), one.clone()).await;
    assert_eq!(mine["tenants"].as_array().unwrap().len(), 1);
    assert_eq!(mine["tenants"][0]["tenant"], "stoke");
    let (st, e) = get(format!("{}/api/v1/region?form=2018-01-01", s.url), region.clone()).await;
    assert_eq!((st, e["error"]["field"].as_str()), (400, Some("form")), "{e}");
    // The dashboard: the regional key has a Region page naming both tenants and who has no page; a one-tenant key
    // has no such link.
    let page = |key: String, path: &'static str| {
        let url = s.url.clone();
        async move {
            let session = dashboard_session(&url, &key).await;
            let r = client().get(format!("{url}{path}")).header("cookie", session).send().await.unwrap();
            assert_eq!(r.status(), 200);
            // Names as a reader sees them (askama writes & and ' as character references).
            r.text().await.unwrap().replace("&#38;", "&").replace("&#39;", "'")
        }
    };
    let html = page(region.clone(), "/region").await;
    for t in &s.config.tenants {
        assert!(html.contains(&t.name), "{} on the region page", t.name);
        let first = t.practices.iter().find(|p| p.pages.is_empty()).unwrap();
        assert!(html.contains(&format!("{} ({})", first.name, first.code)), "{} listed without a page", first.code);
    }
    assert!(html.contains("Practices without a page") && html.contains("<svg"));
    assert!(page(region, "/").await.contains("href=\"/region"), "the regional key's nav has the Region page");
    assert!(!page(one, "/").await.contains("href=\"/region"), "a one-tenant key's does not");
}

/// The planner through the API and the dashboard: the key's tenant only, the same answer as the CLI's JSON, bad
/// input a 400 naming its field (beside the form on the dashboard), and the dashboard's table and chart drawn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_campaign_plan_is_answered_in_the_api_and_the_dashboard_for_the_keys_tenant_only() {
    let s = serve().await;
    let k = key(&s.config, &["north-staffs"], &[KeyScope::Read]);
    let get = |path: String, key: String| async move {
        let r = client().get(path).bearer_auth(key).send().await.unwrap();
        (r.status().as_u16(), r.json::<Value>().await.unwrap_or(Value::Null))
    };
    let url = |q: &str| format!("{}/api/v1/campaigns/plan?{q}", s.url);
    let (status, plan) = get(url("start=2018-03-10&days=2&share=0.67&target=20000"), k.clone()).await;
    assert_eq!(status, 200, "{plan}");
    assert_eq!(plan["tenant"], "north-staffs");
    assert_eq!(plan["plan"]["pages"], 31, "the tenant's own pages: {plan}");
    assert!(plan["plan"]["mde"].as_f64().unwrap() > 0.0 && plan["plan"]["level"].as_f64().unwrap() >= 0.95);
    assert_eq!(plan["options"].as_array().unwrap().len(), 20);
    // The same as the CLI's (and the operator's) plan: the answer depends on the tenant's history, not on who asks.
    let operator = pulse_app::plan::plan_on(
        &s.state.store,
        &s.config,
        &s.config.operator_access(),
        &pulse_app::plan::PlanRequest {
            tenant: "north-staffs".into(),
            start: chrono::NaiveDate::from_ymd_opt(2018, 3, 10).unwrap(),
            days: 2,
            share: 0.67,
            metric: "views".into(),
            target: Some(20000.0),
        },
    )
    .await
    .unwrap();
    // Compared as text parsed the same way (serde_json's default float parsing can move the last digit).
    let same: Value = serde_json::from_str(&pulse_app::plan::plan_json(&operator).to_string()).unwrap();
    assert_eq!(plan, same);
    // Another tenant's plan is refused; bad input names its field.
    let (status, e) = get(url("tenant=stoke&start=2018-03-10"), k.clone()).await;
    assert_eq!(status, 403, "{e}");
    for (q, field) in [
        ("days=2", "start"),
        ("start=2018-02-30", "start"),
        ("start=2018-03-10&share=2", "share"),
        ("start=2018-03-10&share=half", "share"),
        ("start=2018-03-10&days=99", "days"),
        ("start=2018-03-10&metric=likes", "metric"),
        ("start=2018-03-10&target=-1", "target"),
        ("start=2018-03-10&colour=red", "colour"),
        ("start=2017-01-05", "start"),
    ] {
        let (status, e) = get(url(q), k.clone()).await;
        assert_eq!(status, 400, "{q}: {e}");
        assert_eq!(e["error"]["field"], field, "{q}: {e}");
    }
    // The dashboard: the form, then the plan with its table and chart; a wrong input said beside the form.
    let session = dashboard_session(&s.url, &k).await;
    let page = |path: &str| dashboard_page(&s.url, &session, path);
    assert!(page("/campaigns").await.contains("href=\"/campaigns/plan"), "the campaigns page links the planner");
    let empty = page("/campaigns/plan").await;
    assert!(empty.contains("<form method=\"get\" action=\"/campaigns/plan\"") && !empty.contains("plan-answer"));
    let answer = page("/campaigns/plan?start=2018-03-10&days=2&share=0.67&target=20000").await;
    let mde = pulse_app::text::thousands(operator.plan.mde);
    assert!(answer.contains(&format!("<strong>{mde}</strong>")), "the MDE as the CLI says it");
    assert!(answer.contains("id=\"plan-options\"") && answer.contains("<svg") && answer.contains("Needed:"));
    assert!(answer.contains("10 March 2018") || answer.contains("10 Mar 2018"), "the start in UK style");
    let wrong = page("/campaigns/plan?start=2018-03-10&share=3").await;
    let said = wrong.split("id=\"plan-error\">").nth(1).unwrap_or_default();
    assert!(said.starts_with("share 3 must be"), "said beside the form: {said}");
    assert!(wrong.contains("id=\"share\" min=\"0.05\" max=\"1\" step=\"0.05\" value=\"3\""), "the form keeps it");
    // Another tenant's planner is refused on the dashboard too.
    let r = client()
        .get(format!("{}/campaigns/plan?tenant=stoke&start=2018-03-10", s.url))
        .header("cookie", session.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
}

/// Campaigns registered through the API and dashboard: pre-registered with their plan before the start, post hoc on
/// or after it; the first registration of a name wins even at the same moment; withdrawn ones stay on record and stop
/// being computed; only admin keys of the tenant may change them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn campaigns_are_registered_before_or_after_their_start_and_stay_on_record() {
    let (_dir, config) = demo_copy();
    let s = serve_with(config).await;
    let admin = key(&s.config, &["north-staffs"], &[KeyScope::Read, KeyScope::Admin]);
    let reader = key(&s.config, &["north-staffs"], &[KeyScope::Read]);
    let stoke_reader = key(&s.config, &["stoke"], &[KeyScope::Read]);
    let list = |k: String| {
        let url = format!("{}/api/v1/campaigns", s.url);
        async move {
            let r = client().get(url).bearer_auth(k).send().await.unwrap();
            assert_eq!(r.status(), 200);
            r.json::<Value>().await.unwrap()["campaigns"].as_array().unwrap().clone()
        }
    };
    let named = |all: &[Value], name: &str| all.iter().find(|c| c["name"] == name).cloned();
    // The config's campaigns are listed as configured.
    let before = list(reader.clone()).await;
    let stroke = named(&before, "UHNM stroke video").expect("the config's campaign");
    assert_eq!((stroke["source"].as_str(), stroke["registration"].as_str()), (Some("config"), Some("configured")));

    // Registered after its start (the stroke weekend again, by its link): post hoc, no plan made knowing the outcome.
    let url = format!("{}/api/v1/campaigns", s.url);
    let body = json!({"tenant": "north-staffs", "name": "Stroke film by link", "start": "2018-03-10", "days": 2,
        "link": "https://www.uhnm.nhs.uk/our-services/stroke", "post_type": "video"});
    let (status, _) = post_to(&url, &reader, &body).await;
    assert_eq!(status, 403, "a read key does not register");
    let (status, posthoc) = post_to(&url, &admin, &body).await;
    assert_eq!(status, 200, "{posthoc}");
    assert_eq!(posthoc["registration"], "post hoc");
    assert!(posthoc["plan"].is_null() && posthoc["plan_note"].as_str().unwrap().contains("with its posts in view"));
    assert!(posthoc["registered_by"].as_str().unwrap().starts_with("key "));
    // The same name again, or a config campaign's name: a conflict on the name, and nothing changes.
    for name in ["Stroke film by link", "UHNM stroke video"] {
        let mut again = body.clone();
        again["name"] = json!(name);
        again["start"] = json!("2018-04-01");
        let (status, e) = post_to(&url, &admin, &again).await;
        assert_eq!((status, e["error"]["field"].as_str()), (409, Some("name")), "{e}");
    }
    // Bad definitions name their field (the start in Facebook's time and at most two years ahead, a matcher of at most
    // 200 characters, the plan's metric and share checked after the start too).
    for (change, field) in [
        (json!({"hashtag": "#ActFAST"}), "hashtag"),
        (json!({"days": 0}), "days"),
        (json!({"days": 29}), "days"),
        (json!({"start": "2018-02-30"}), "start"),
        (json!({"post_type": "reel"}), "post_type"),
        (json!({"name": " "}), "name"),
        (json!({"start": "1969-12-31"}), "start"),
        (json!({"start": "2150-01-01"}), "start"),
        (json!({"hashtag": "#".repeat(201), "link": null}), "hashtag"),
        (json!({"metric": "likes"}), "metric"),
        (json!({"share": 3}), "share"),
    ] {
        let mut bad = body.clone();
        bad["name"] = json!("Bad one");
        for (k, v) in change.as_object().unwrap() {
            bad[k] = v.clone();
        }
        let (status, e) = post_to(&url, &admin, &bad).await;
        assert_eq!((status, e["error"]["field"].as_str()), (400, Some(field)), "{change}: {e}");
    }
    // Another tenant is refused.
    let mut other = body.clone();
    other["tenant"] = json!("stoke");
    other["name"] = json!("Not ours");
    assert_eq!(post_to(&url, &admin, &other).await.0, 403);
    let r = client().get(format!("{url}?tenant=stoke")).bearer_auth(&admin).send().await.unwrap();
    assert_eq!(r.status(), 403, "another tenant's campaigns are not listed");
    let mut unknown = body.clone();
    unknown["colour"] = json!("red");
    assert_eq!(post_to(&url, &admin, &unknown).await.0, 400);

    // Eight registrations of one name at the same moment: exactly one wins, the others are told, one is listed.
    let mut racing = body.clone();
    racing["name"] = json!("Raced");
    let tries: Vec<_> = (0..8)
        .map(|i| {
            let (url, admin, mut b) = (url.clone(), admin.clone(), racing.clone());
            b["days"] = json!(1 + i);
            tokio::spawn(async move { post_to(&url, &admin, &b).await })
        })
        .collect();
    let mut won = Vec::new();
    for t in tries {
        let (status, v) = t.await.unwrap();
        assert!(status == 200 || status == 409, "{status}: {v}");
        if status == 200 {
            won.push(v["days"].clone());
        }
    }
    assert_eq!(won.len(), 1, "one registration wins: {won:?}");
    let listed = list(reader.clone()).await;
    assert_eq!(listed.iter().filter(|c| c["name"] == "Raced").count(), 1);
    assert_eq!(named(&listed, "Raced").unwrap()["days"], won[0], "the winner's definition is the one kept");
    assert!(named(&list(stoke_reader.clone()).await, "Raced").is_none(), "another tenant does not see it");

    // Before its start, the plan is computed from the history before it and stored with it (`now` in 2018, as the
    // simulated world's history is).
    let request = pulse_app::campaigns::RegisterRequest {
        tenant: "north-staffs".into(),
        name: "Spring flu reminder".into(),
        start: "2018-04-14".into(),
        days: 2,
        hashtag: Some("#FluJab".into()),
        link: None,
        text: None,
        posts: vec![],
        post_type: None,
        share: Some(0.5),
        metric: Some("reach".into()),
        target: None,
    };
    let now = chrono::DateTime::parse_from_rfc3339("2018-04-01T09:00:00Z").unwrap().to_utc();
    let access = s.config.operator_access();
    let pre =
        pulse_app::campaigns::register(&s.state.store, &s.config, &access, &request, "operator", now).await.unwrap();
    assert_eq!(pre.registration, "pre-registered");
    let planned = pulse_app::plan::plan_on(
        &s.state.store,
        &s.config,
        &access,
        &pulse_app::plan::PlanRequest {
            tenant: "north-staffs".into(),
            start: chrono::NaiveDate::from_ymd_opt(2018, 4, 14).unwrap(),
            days: 2,
            share: 0.5,
            metric: "reach".into(),
            target: None,
        },
    )
    .await
    .unwrap();
    let stored = named(&list(reader.clone()).await, "Spring flu reminder").unwrap();
    assert_eq!(stored["registration"], "pre-registered");
    assert_eq!(stored["plan"]["plan"]["mde"].as_f64(), Some(planned.plan.mde), "the plan stored is the planner's");
    // Posts from the day before its first day count towards it: the cutoff is midnight Pacific at the start of that
    // day (07:00 UTC in April). A minute before, it is pre-registered; a minute after, post hoc.
    for (at, expected, name) in [
        ("2018-04-13T06:59:00Z", "pre-registered", "Just in time"),
        ("2018-04-13T07:01:00Z", "post hoc", "Just too late"),
    ] {
        let mut r = request.clone();
        r.name = name.into();
        let when = chrono::DateTime::parse_from_rfc3339(at).unwrap().to_utc();
        let m = pulse_app::campaigns::register(&s.state.store, &s.config, &access, &r, "operator", when).await.unwrap();
        assert_eq!(m.registration, expected, "{at}");
    }

    // The next run computes the registered campaigns beside the config's.
    let jobs = pulse_app::jobs::JobsRequest { tenants: vec!["north-staffs".into()], ..Default::default() };
    pulse_app::jobs::run_on(&s.state.store, &s.config, &jobs).await.unwrap();
    let effects = |k: String| {
        let url = format!("{}/api/v1/reports/campaigns?limit=1000", s.url);
        async move {
            let r = client().get(url).bearer_auth(k).send().await.unwrap();
            assert_eq!(r.status(), 200);
            let v = r.json::<Value>().await.unwrap();
            v["rows"].as_array().unwrap().iter().map(|r| r["campaign"].as_str().unwrap().to_owned()).collect::<Vec<_>>()
        }
    };
    let computed = effects(reader.clone()).await;
    for name in ["UHNM stroke video", "Stroke film by link", "Raced", "Spring flu reminder"] {
        assert!(computed.iter().any(|c| c == name), "{name} computed: {computed:?}");
    }
    // A research export's campaigns table says how each campaign was registered.
    let out = tempfile::tempdir().unwrap();
    let spec = pulse_export::ExportSpec {
        tenants: vec!["north-staffs".into()],
        project: "study".into(),
        purpose: "DSA-TEST".into(),
        requested_by: "operator".into(),
        tables: vec!["campaigns".into()],
        campaigns: vec!["Stroke film by link".into(), "UHNM stroke video".into()],
        ..Default::default()
    };
    let package = out.path().join("package");
    pulse_export::run(&s.state.store, &s.config, &access, &spec, &package, &mut |_| {}).await.unwrap();
    let csv = std::fs::read_to_string(package.join("campaigns.csv")).unwrap();
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    let (name_at, registration_at) = (
        header.iter().position(|h| *h == "campaign").unwrap(),
        header.iter().position(|h| *h == "registration").expect("a registration column"),
    );
    let registrations: BTreeSet<(String, String)> = csv
        .lines()
        .skip(1)
        .map(|l| {
            let cells: Vec<&str> = l.split(',').collect();
            (
                cells[name_at].trim_matches('"').to_owned(),
                cells[cells.len() - header.len() + registration_at].to_owned(),
            )
        })
        .collect();
    assert_eq!(
        registrations,
        BTreeSet::from([
            ("Stroke film by link".to_owned(), "post hoc".to_owned()),
            ("UHNM stroke video".to_owned(), "configured".to_owned())
        ]),
        "{csv}"
    );
    // The weekly digest of the stroke weekend says which of its two analyses was registered after the fact.
    let week = chrono::NaiveDate::from_ymd_opt(2018, 3, 11).unwrap();
    let digest = pulse_digest::digest::build(&s.state.store, &s.config, "north-staffs", week).await.unwrap();
    let links = pulse_digest::render::Links { dashboard: s.url.clone(), unsubscribe: None };
    let text = pulse_digest::render::render(&digest, &links).unwrap().text;
    assert!(text.contains("Stroke film by link (post hoc: registered after it started"), "{text}");
    assert!(text.contains("UHNM stroke video") && !text.contains("UHNM stroke video (post hoc"), "{text}");

    // The dashboard: a post hoc badge on the effect, the record with who and when, the form for admins only; a wrong
    // input is said beside the form, which keeps what was typed; a withdrawal keeps the campaign on record.
    let session = dashboard_session(&s.url, &admin).await;
    let page = dashboard_page(&s.url, &session, "/campaigns").await;
    let section = page.split("<h2>Stroke film by link").nth(1).unwrap_or_default();
    assert!(
        section.starts_with(" <span class=\"registration post-hoc\">post hoc</span>"),
        "{}",
        &section[..section.len().min(200)]
    );
    assert!(page.contains("id=\"record\"") && page.contains("id=\"register-campaign\""));
    let reader_page = dashboard_page(&s.url, &dashboard_session(&s.url, &reader).await, "/campaigns").await;
    assert!(reader_page.contains("id=\"record\"") && !reader_page.contains("id=\"register-campaign\""));
    assert!(!reader_page.contains("Withdraw</button>"), "a read key cannot withdraw");
    let csrf = page.split("name=\"csrf\" value=\"").nth(1).unwrap().split('"').next().unwrap().to_owned();
    let form = |path: &str, fields: Vec<(&str, &str)>| {
        let (url, session) = (format!("{}{path}", s.url), session.clone());
        let fields: Vec<(String, String)> = fields.into_iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
        async move {
            let r = client().post(url).header("cookie", session).form(&fields).send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let (status, wrong) = form(
        "/campaigns",
        vec![("csrf", &csrf), ("name", "Typed name"), ("start", "2018-02-30"), ("days", "2"), ("hashtag", "#Typed")],
    )
    .await;
    assert_eq!(status, 400);
    let said = wrong.split("id=\"register-error\">").nth(1).unwrap_or_default();
    assert!(said.starts_with("start: "), "said beside the form: {}", &said[..said.len().min(120)]);
    assert!(wrong.contains("name=\"name\" required maxlength=\"80\" value=\"Typed name\""), "the form keeps it");
    let (status, _) = form("/campaigns", vec![("csrf", "forged"), ("name", "Forged")]).await;
    assert_eq!(status, 403, "a form from elsewhere is refused");
    let (status, done) = form(
        "/campaigns",
        vec![("csrf", &csrf), ("name", "Dashboard one"), ("start", "2018-05-05"), ("days", "2"), ("text", "DNA")],
    )
    .await;
    assert_eq!(status, 200);
    assert!(done.contains("id=\"register-done\">Registered Dashboard one (post hoc)."));
    // A campaign of next winter, registered today on the dashboard: pre-registered (the demo's history is too old to
    // plan from, which is stored as the reason), and withdrawn before its cutoff with the page's button.
    let winter = (chrono::Utc::now() + chrono::Duration::days(60)).date_naive().to_string();
    let (status, done) = form(
        "/campaigns",
        vec![("csrf", &csrf), ("name", "Next winter"), ("start", &winter), ("days", "7"), ("hashtag", "#FluJab")],
    )
    .await;
    assert_eq!(status, 200, "{done}");
    assert!(done.contains("Registered Next winter (pre-registered)."));
    let next = named(&list(reader.clone()).await, "Next winter").unwrap();
    assert!(next["plan_note"].as_str().unwrap().starts_with("no plan could be made"), "{next}");
    assert!(done.contains("name=\"name\" value=\"Next winter\"><button type=\"submit\">Withdraw"));
    let (status, withdrawn) = form("/campaigns/withdraw", vec![("csrf", &csrf), ("name", "Next winter")]).await;
    assert_eq!(status, 200);
    assert!(withdrawn.contains("Withdrew Next winter"));
    let next = named(&list(reader.clone()).await, "Next winter").unwrap();
    assert!(next["withdrawn_at"].is_string() && next["withdrawn_by"].as_str().unwrap().starts_with("key "));
    // A campaign whose posts may be in view cannot be withdrawn (a disappointing one is not dropped quietly); the
    // API needs admin, and the key's own tenant; a config campaign is withdrawn in the config.
    let withdraw = |name: &str, k: &str| {
        let (name, query) = name.split_once('?').unwrap_or((name, ""));
        let (url, k) = (format!("{}/api/v1/campaigns/{name}/withdraw?{query}", s.url), k.to_owned());
        async move { client().post(url).bearer_auth(k).send().await.unwrap().status().as_u16() }
    };
    assert_eq!(withdraw("Raced", &admin).await, 409);
    assert_eq!(withdraw("Raced", &reader).await, 403);
    assert_eq!(withdraw("Raced?tenant=stoke", &admin).await, 403);
    assert_eq!(withdraw("UHNM%20stroke%20video", &admin).await, 400);
    assert_eq!(withdraw("No%20such", &admin).await, 404);
    assert!(named(&list(reader.clone()).await, "Raced").unwrap()["withdrawn_at"].is_null());
    // Withdrawn before its cutoff (as the operator, on 2 April 2018), the spring campaign is not computed by the next
    // run; the rest stay.
    let before = chrono::DateTime::parse_from_rfc3339("2018-04-02T09:00:00Z").unwrap().to_utc();
    let w = pulse_app::campaigns::withdraw(
        &s.state.store,
        &s.config,
        &access,
        "north-staffs",
        "Spring flu reminder",
        "operator",
        before,
    )
    .await
    .unwrap();
    assert!(w.withdrawn_at.unwrap() > w.registered_at.unwrap(), "after its registration in the journal's order");
    pulse_app::jobs::run_on(&s.state.store, &s.config, &jobs).await.unwrap();
    let computed = effects(reader.clone()).await;
    assert!(!computed.iter().any(|c| c == "Spring flu reminder"), "{computed:?}");
    assert!(computed.iter().any(|c| c == "Dashboard one") && computed.iter().any(|c| c == "Raced"));
    // A config campaign added later under a registered name: the config's is computed, the registered one stays on
    // record (with who and when), shadowed.
    let mut shadowing = s.config.clone();
    let mut raced = shadowing.campaigns[0].clone();
    raced.name = "Raced".into();
    shadowing.campaigns.push(raced);
    let scope = access.scope("north-staffs").unwrap();
    let all = pulse_app::campaigns::list(&s.state.store, &shadowing, &scope).await.unwrap();
    let both: Vec<_> = all.iter().filter(|(m, _)| m.name == "Raced").map(|(m, _)| m).collect();
    assert_eq!(both.len(), 2);
    assert!(both[0].source == "config" && both[0].is_active());
    assert!(both[1].shadowed && !both[1].is_active() && both[1].registered_by.is_some());
    let effective = pulse_app::campaigns::effective(&s.state.store, &shadowing, &scope).await.unwrap();
    assert_eq!(effective.iter().filter(|c| c.name == "Raced").count(), 1);
}

/// Peer benchmarks are for tenants that opted in; with the demo's two tenants every band has fewer than three
/// tenants, so every band's tenths are withheld, and a practice is still shown its own rate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn benchmarks_are_for_opted_in_tenants_and_withhold_bands_of_fewer_than_three_tenants() {
    let (dir, _) = demo_copy();
    let path = dir.path().join("pulse.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("id = \"north-staffs\"\n"));
    std::fs::write(&path, text.replace("id = \"north-staffs\"\n", "id = \"north-staffs\"\nbenchmark = true\n"))
        .unwrap();
    let config = pulse_config::load(&path).unwrap();
    let s = serve_with(config).await;
    let north = key(&s.config, &["north-staffs"], &[KeyScope::Read]);
    let stoke = key(&s.config, &["stoke"], &[KeyScope::Read]);
    let get = |q: &str, k: &str| {
        let (url, k) = (format!("{}/api/v1/benchmarks{q}", s.url), k.to_owned());
        async move {
            let r = client().get(url).bearer_auth(k).send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (status, b) = get("", &north).await;
    assert_eq!(status, 200, "{b}");
    assert_eq!((b["tenant"].as_str(), b["tenants_opted_in"].as_u64()), (Some("north-staffs"), Some(1)));
    let bands = b["bands"].as_array().unwrap();
    assert_eq!(bands.len(), 4);
    assert!(
        bands.iter().all(|x| x["deciles"].is_null() && x["withheld"].as_str().unwrap().contains("3 other tenants"))
    );
    let practices = b["practices"].as_array().unwrap();
    assert!(
        !practices.is_empty() && practices.iter().all(|p| p["decile"].is_null() && p["rate"].as_f64().unwrap() >= 0.0)
    );
    let own: BTreeSet<String> = common::practices(&s.config, "north-staffs").into_iter().collect();
    assert!(practices.iter().all(|p| own.contains(p["code"].as_str().unwrap())), "only the tenant's own practices");
    assert_eq!(bands.iter().map(|x| x["own_practices"].as_u64().unwrap()).sum::<u64>(), practices.len() as u64);
    assert!(bands.iter().all(|x| x.get("practices").is_none() && x.get("tenants").is_none()), "no counts of others");
    // One practice's rate, from the weekly reach report as an analyst reads it: its complete weeks' mean
    // engagements per 1,000 registered patients.
    let first = &practices[0];
    let code = first["code"].as_str().unwrap();
    let url = format!(
        "{}/api/v1/reports/reach?practice={code}&from={}&to={}&limit=1000",
        s.url,
        b["from"].as_str().unwrap(),
        b["to"].as_str().unwrap()
    );
    let rows: Value = client().get(url).bearer_auth(&north).send().await.unwrap().json().await.unwrap();
    let pages =
        rows["rows"].as_array().unwrap().iter().map(|r| r["page_id"].as_str().unwrap()).collect::<BTreeSet<_>>().len();
    let rows: Vec<(i32, f64, f64)> = rows["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let week = chrono::NaiveDate::parse_from_str(r["week_ending"].as_str().unwrap(), "%Y-%m-%d").unwrap();
            (pulse_domain::day_number(week), r["engagements"].as_f64().unwrap(), r["days_with_data"].as_f64().unwrap())
        })
        .collect();
    let expected = pulse_query::benchmarks::practice_rate(&rows, pages, first["registered"].as_f64().unwrap()).unwrap();
    assert!((first["rate"].as_f64().unwrap() - expected).abs() < 1e-9, "{first} against {expected}");
    assert!(expected > 0.0);
    // The default range is the reports' last 13 weeks.
    let (from, to) = (b["from"].as_str().unwrap(), b["to"].as_str().unwrap());
    let days = (chrono::NaiveDate::parse_from_str(to, "%Y-%m-%d").unwrap()
        - chrono::NaiveDate::parse_from_str(from, "%Y-%m-%d").unwrap())
    .num_days();
    assert_eq!(days, 13 * 7 - 1);
    // A tenant that did not opt in is refused, saying how to take part; another tenant's is refused; bad input named.
    let (status, e) = get("", &stoke).await;
    assert_eq!(status, 403, "{e}");
    assert!(e["error"]["hint"].as_str().unwrap().contains("benchmark = true"), "{e}");
    assert_eq!(get("?tenant=stoke", &north).await.0, 403);
    for q in
        ["?from=2018-13-01", "?from=2018-04-01&to=2018-04-21", "?from=2010-01-01", "?from=2018-05-01&to=2018-04-01"]
    {
        let (status, e) = get(q, &north).await;
        assert_eq!((status, e["error"]["field"].as_str()), (400, Some("from")), "{q}: {e}");
    }
    assert_eq!(get("?colour=red", &north).await.0, 400);
    // The dashboard: the page is in the menu of an opted-in tenant only, and says what is withheld.
    let session = dashboard_session(&s.url, &north).await;
    let page = dashboard_page(&s.url, &session, "/benchmarks").await;
    assert!(
        page.contains("href=\"/benchmarks\"") && page.contains("withheld: ") && page.contains("class=\"benchmarks\"")
    );
    let stoke_overview = dashboard_page(&s.url, &dashboard_session(&s.url, &stoke).await, "/").await;
    assert!(!stoke_overview.contains("href=\"/benchmarks\""));
}

/// When and what to post, end to end on the demo: the simulator's case study injects posting effects (hour and day
/// of posting, topic) into what the ingest fetched; the API's intervals cover the true relative effects (computed
/// from the world's own posts) in most cells, the strongest and weakest effects are found, and the dashboard draws
/// the page. Tenant scoping and bad input as everywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posting_is_analysed_by_hour_day_topic_and_cadence() {
    use chrono::{Datelike, Timelike};
    let s = serve().await;
    let north = key(&s.config, &["north-staffs"], &[KeyScope::Read]);
    let get = |q: &str, k: &str| {
        let (url, k) = (format!("{}/api/v1/posting{q}", s.url), k.to_owned());
        async move {
            let r = client().get(url).bearer_auth(k).send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (status, p) = get("", &north).await;
    assert_eq!(status, 200, "{p}");
    let day = |f: &str| chrono::NaiveDate::parse_from_str(p[f].as_str().unwrap(), "%Y-%m-%d").unwrap();
    let (from, analysed_to, to) = (day("from"), day("analysed_to"), day("to"));
    assert_eq!((to - from).num_days(), 52 * 7 - 1, "a year by default");
    assert_eq!((to - analysed_to).num_days(), 7, "the last week's posts are still gathering engagement");

    // The truth: the world's posts (but campaigns') in the range, each with its expected engaged share.
    let world = pulse_sim::world::World::new(pulse_sim::scenario::resolve("case-study").unwrap(), None);
    let tenant = world.tenants.iter().position(|t| t.id.as_str() == "north-staffs").unwrap();
    let mut truth_posts = Vec::new();
    for page in world.pages.iter().filter(|pg| world.practices[pg.practice].tenant == tenant) {
        let mut d = from;
        while d <= analysed_to {
            truth_posts.extend(world.posts_on(page.index, d).into_iter().filter(|x| x.campaign.is_none()));
            d += chrono::Duration::days(1);
        }
    }
    let london =
        |x: &pulse_sim::world::Post| pulse_sim::world::World::created_time(x).with_timezone(&chrono_tz::Europe::London);
    let topics: Vec<_> = pulse_config::topics::defaults().iter().map(|t| t.lowercased()).collect();
    let keys_of = |x: &pulse_sim::world::Post| -> Vec<String> {
        let t = x.message.to_lowercase();
        let mut k = vec![
            format!("{:02}:00", london(x).hour()),
            ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
                [london(x).weekday().num_days_from_monday() as usize]
                .to_owned(),
        ];
        let hits: Vec<String> = topics.iter().filter(|d| d.matches_lowercase(&t)).map(|d| d.name.clone()).collect();
        if hits.is_empty() {
            k.push("None of these topics".to_owned());
        }
        k.extend(hits);
        k
    };
    // Compared within pages, as the analysis compares: a group's expected engaged over what its posts' pages'
    // average expected share gives for the same reach.
    let mut page_share: std::collections::HashMap<usize, (f64, f64)> = Default::default();
    for x in &truth_posts {
        let e = page_share.entry(x.page).or_default();
        e.0 += x.totals.reach * x.expected_engaged_share;
        e.1 += x.totals.reach;
    }
    let relative = |k: &str| {
        let (mut engaged, mut expected) = (0.0, 0.0);
        for x in truth_posts.iter().filter(|x| keys_of(x).iter().any(|y| y == k)) {
            let (w, r) = page_share[&x.page];
            engaged += x.totals.reach * x.expected_engaged_share;
            expected += x.totals.reach * w / r;
        }
        engaged / expected
    };
    let analysed = p["posts"].as_u64().unwrap() as usize;
    assert_eq!(analysed, truth_posts.len(), "every ordinary post of the range, and no campaign post, is analysed");
    let (mut cells, mut covered) = (0, 0);
    let rel = |group: &str, k: &str| {
        p[group]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["key"] == k)
            .unwrap_or_else(|| panic!("{group} {k}: {p}"))
            .clone()
    };
    for group in ["by_hour", "by_weekday", "by_topic"] {
        for c in p[group].as_array().unwrap() {
            let (Some(low), Some(high)) = (c["low"].as_f64(), c["high"].as_f64()) else { continue };
            let t = relative(c["key"].as_str().unwrap());
            cells += 1;
            covered += usize::from(low <= t && t <= high);
        }
    }
    eprintln!(
        "posting: the truth in {covered} of {cells} intervals; {analysed} posts, the world's {}",
        truth_posts.len()
    );
    assert!(cells >= 20, "{cells} cells with intervals: {p}");
    assert!(covered * 100 >= cells * 85, "the truth in {covered} of {cells} intervals");
    assert!(rel("by_hour", "09:00")["low"].as_f64() > rel("by_hour", "16:00")["high"].as_f64(), "09:00 beats 16:00");
    assert!(rel("by_topic", "Missed appointments (DNA)")["high"].as_f64().unwrap() < 1.0);
    assert!(rel("by_topic", "Flu vaccination")["low"].as_f64().unwrap() > 1.0);
    let practices = p["cadence"]["practices"].as_array().unwrap();
    let own: BTreeSet<String> = common::practices(&s.config, "north-staffs").into_iter().collect();
    assert!(!practices.is_empty() && practices.iter().all(|x| own.contains(x["code"].as_str().unwrap())));
    // The demo's pages all post at one cadence: nothing to fit, and it says so.
    assert!(p["cadence"]["elasticity"].is_null(), "{}", p["cadence"]);
    assert!(p["cadence"]["note"].as_str().unwrap().contains("too similar"));
    assert!(p["notes"].as_array().unwrap().iter().any(|n| n.as_str().unwrap().contains("campaign posts are left out")));
    assert!(p["topics"].as_array().unwrap().iter().any(|t| t["name"] == "PPG recruitment"));

    // Scoping and bad input.
    assert_eq!(get("?tenant=stoke", &north).await.0, 403);
    for (q, field) in
        [("?from=2018-13-01", "from"), ("?from=2018-05-01&to=2018-04-01", "from"), ("?colour=red", "colour")]
    {
        let (status, e) = get(q, &north).await;
        assert_eq!((status, e["error"]["field"].as_str()), (400, Some(field)), "{q}: {e}");
    }
    // The dashboard draws it, in every tenant's menu.
    let session = dashboard_session(&s.url, &north).await;
    let page = dashboard_page(&s.url, &session, "/posting").await;
    assert!(page.contains("href=\"/posting\"") && page.contains("Hour of posting"), "{page}");
    assert!(page.matches("class=\"interval\"").count() >= cells, "every interval drawn");
    assert!(page.contains("class=\"point\"") && page.contains("Not fitted: the practices post at too similar a rate"));
}

/// Peer benchmarks end to end with enough tenants for tenths to be shown: a small world of four peer tenants of
/// practices of 5,000 to 9,999 patients and one tenant of smaller practices, ingested and computed by the demo, every
/// tenant opted in. Each peer sees its band's tenths, and they are exactly the Harrell–Davis tenths (two figures) of
/// the other three peers' practices' rates, recomputed here from each of those tenants' own reach reports; its own
/// practices are placed by them; the band of smaller practices (one tenant) is withheld from everyone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn benchmarks_show_tenths_of_three_other_tenants_equal_to_their_practices_rates() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("peers.toml");
    std::fs::write(
        &scenario,
        "[world]\nname = \"peers\"\nseed = 7\napi_version = \"v2.12\"\nstart = \"2018-01-01\"\nend = \"2018-03-31\"\n\n\
         [[tenant]]\nid = \"peer\"\nname = \"Peer CCG\"\ncode_prefix = \"P10\"\npractices = 5\nfacebook_share = 1.0\n\
         list_size = [5400, 9400]\ncopies = 4\n\n\
         [[tenant]]\nid = \"small\"\nname = \"Small CCG\"\ncode_prefix = \"S20\"\npractices = 6\nfacebook_share = 1.0\n\
         list_size = [2000, 4600]\n",
    )
    .unwrap();
    let lake = dir.path().join("demo");
    let req = pulse_demo::DemoRequest { dir: lake.clone(), scenario: scenario.display().to_string(), concurrency: 8 };
    assert_eq!(pulse_demo::run(&req, &mut |_| {}).await.unwrap(), 0);
    let path = lake.join("pulse.toml");
    let mut text = std::fs::read_to_string(&path).unwrap();
    let tenants = ["peer-01", "peer-02", "peer-03", "peer-04", "small"];
    for t in tenants {
        let line = format!("id = \"{t}\"\n");
        assert!(text.contains(&line), "{t} in the demo's config");
        text = text.replace(&line, &format!("{line}benchmark = true\n"));
    }
    std::fs::write(&path, text).unwrap();
    let s = serve_with(pulse_config::load(&path).unwrap()).await;
    let keys: Vec<String> = tenants.iter().map(|t| key(&s.config, &[t], &[KeyScope::Read])).collect();
    let get = |url: String, k: String| async move {
        let r = client().get(url).bearer_auth(k).send().await.unwrap();
        assert_eq!(r.status(), 200);
        r.json::<Value>().await.unwrap()
    };
    // Each tenant's practices' rates over a range, as its own analysts can recompute them from its reach report.
    let rates = |t: usize, from: String, to: String| {
        let (url, k) = (s.url.clone(), keys[t].clone());
        let registered = s.config.tenants[t]
            .practices
            .iter()
            .map(|p| (p.code.to_string(), f64::from(p.list_size.unwrap())))
            .collect::<std::collections::BTreeMap<_, _>>();
        async move {
            let rows = get(format!("{url}/api/v1/reports/reach?from={from}&to={to}&limit=10000"), k).await;
            // Practice → (its pages, its weekly (week, engagements, days with data)).
            type Weeks = (BTreeSet<String>, Vec<(i32, f64, f64)>);
            let mut by: std::collections::BTreeMap<String, Weeks> = Default::default();
            for r in rows["rows"].as_array().unwrap() {
                let e = by.entry(r["practice_code"].as_str().unwrap().to_owned()).or_default();
                e.0.insert(r["page_id"].as_str().unwrap().to_owned());
                let week = chrono::NaiveDate::parse_from_str(r["week_ending"].as_str().unwrap(), "%Y-%m-%d").unwrap();
                e.1.push((
                    pulse_domain::day_number(week),
                    r["engagements"].as_f64().unwrap(),
                    r["days_with_data"].as_f64().unwrap(),
                ));
            }
            by.into_iter()
                .filter_map(|(code, (pages, rows))| {
                    pulse_query::benchmarks::practice_rate(&rows, pages.len(), registered[&code]).map(|r| (code, r))
                })
                .collect::<Vec<(String, f64)>>()
        }
    };
    assert_eq!(s.config.tenants.iter().map(|t| t.id.to_string()).collect::<Vec<_>>(), tenants);
    for me in 0..4 {
        let b = get(format!("{}/api/v1/benchmarks", s.url), keys[me].clone()).await;
        assert_eq!(b["tenants_opted_in"].as_u64(), Some(5), "{b}");
        let band = |label: &str| b["bands"].as_array().unwrap().iter().find(|x| x["band"] == label).unwrap().clone();
        let shown = band("5,000 to 9,999");
        let deciles: Vec<f64> = shown["deciles"]
            .as_array()
            .unwrap_or_else(|| panic!("shown: {b}"))
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert!(deciles.len() == 9 && deciles.windows(2).all(|w| w[0] <= w[1]), "{deciles:?}");
        assert!(band("under 5,000 patients")["deciles"].is_null(), "one tenant's small practices are withheld");
        // The tenths are the other peers' practices' rates' Harrell–Davis tenths.
        let (from, to) = (b["from"].as_str().unwrap().to_owned(), b["to"].as_str().unwrap().to_owned());
        let mut others = Vec::new();
        for t in (0..4).filter(|t| *t != me) {
            others.extend(rates(t, from.clone(), to.clone()).await.into_iter().map(|(_, r)| r));
        }
        assert_eq!(others.len(), 15, "every other peer practice has complete weeks");
        others.sort_by(f64::total_cmp);
        let expected: Vec<f64> = (1..=9)
            .map(|d| {
                pulse_query::benchmarks::two_figures(pulse_query::benchmarks::harrell_davis(
                    &others,
                    f64::from(d) / 10.0,
                ))
            })
            .collect();
        assert_eq!(deciles, expected, "tenant {}", tenants[me]);
        // Its own practices are placed by those tenths, and are not in them.
        let own = rates(me, from.clone(), to.clone()).await;
        let placed = b["practices"].as_array().unwrap();
        assert_eq!(placed.len(), own.len());
        for (code, rate) in own {
            let p = placed.iter().find(|p| p["code"] == code.as_str()).unwrap();
            assert!((p["rate"].as_f64().unwrap() - rate).abs() < 1e-9);
            let tenth = 1 + deciles.iter().filter(|c| rate > **c).count() as u64;
            assert_eq!(p["decile"].as_u64(), Some(tenth), "{p}");
        }
    }
    // The small tenant's band has no other tenant in it: withheld; the peers' band is shown to it (four others).
    let b = get(format!("{}/api/v1/benchmarks", s.url), keys[4].clone()).await;
    let bands = b["bands"].as_array().unwrap();
    assert!(bands.iter().find(|x| x["band"] == "under 5,000 patients").unwrap()["deciles"].is_null());
    assert!(b["practices"].as_array().unwrap().iter().all(|p| p["decile"].is_null()), "{b}");
    assert!(bands.iter().find(|x| x["band"] == "5,000 to 9,999").unwrap()["deciles"].is_array(), "{b}");
}

/// One tenant whose journal cannot be read (its campaigns are there) fails its own jobs run, saying so; the other
/// tenant's run goes ahead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_whose_journal_cannot_be_read_fails_alone() {
    let (_dir, config) = demo_copy();
    let journal = config.store.lake_dir.join("state_events/tenant=stoke");
    std::fs::create_dir_all(&journal).unwrap();
    std::fs::write(journal.join("data.parquet"), b"not a parquet file").unwrap();
    let request = pulse_app::jobs::JobsRequest { tenants: vec![], from: None, to: None, full: false, variant: None };
    let jobs = pulse_app::jobs::run(&config, &request).await.expect("the run as a whole goes ahead");
    assert_eq!(jobs.len(), 2);
    let problems: Vec<Option<String>> = jobs.iter().map(|j| j.problem()).collect();
    let stoke = problems.iter().flatten().find(|p| p.starts_with("tenant stoke")).expect("stoke failed");
    assert!(stoke.contains("could not be prepared") && stoke.contains("the other tenants' runs went ahead"), "{stoke}");
    assert!(
        jobs.iter()
            .any(|j| matches!(j, pulse_app::jobs::TenantJob::Done { summary, .. } if summary.tenant == "north-staffs")),
        "{problems:?}"
    );
    // Asked alone (as the scheduler asks, one tenant at a time), its failure is the run's, so the run is retried.
    let alone = pulse_app::jobs::JobsRequest { tenants: vec!["stoke".into()], ..request.clone() };
    let e = pulse_app::jobs::run(&config, &alone).await.err().expect("the run fails as a whole");
    assert!(format!("{e:#}").contains("state_events") || format!("{e:#}").contains("parquet"), "{e:#}");
    // A bad variant is the request's fault: refused before any tenant.
    let bad = pulse_app::jobs::JobsRequest { variant: Some("no/slashes".into()), ..request };
    assert!(pulse_app::jobs::run(&config, &bad).await.is_err());
}
