//! The analyst query's aggregation pushed into ClickHouse answers exactly what the service's own aggregation
//! answers: random weekly-reach queries (every metric, both dimensions in either order, every kind of range, every
//! filter kind, orders and pages) over the case-study demo's reports copied into ClickHouse, each answered both ways
//! on the same store, and the service's way on the lake the reports came from.
//!
//! Needs a ClickHouse server: `PULSE_TEST_CLICKHOUSE_URL=http://127.0.0.1:8123`; skipped without one unless
//! `PULSE_REQUIRE_CLICKHOUSE=1` (CI sets it, so there it fails instead).

mod support;

use pulse_query::{self as query, Aggregation, Answer, Query};
use pulse_store::clickhouse::{ClickHouseSettings, ClickHouseStore};
use pulse_store::report::{REACH_WEEKLY, REPORT_RUNS};
use pulse_store::{AnyStore, ReportVariant, Store};
use serde_json::{Value, json};

/// A small deterministic generator (xorshift64*), so a failing seed can be run again.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

fn random_query(rng: &mut Rng, practices: &[String], weeks: &[String]) -> Value {
    let metrics = ["gross_reach", "gross_engaged_users", "views", "engagements", "engagement_rate", "reach_per_1000"];
    let mut chosen: Vec<&str> = metrics.iter().copied().filter(|_| rng.chance(45)).collect();
    if chosen.is_empty() {
        chosen.push(*rng.pick(&metrics));
    }
    let dims: Vec<&str> = match rng.below(5) {
        0 => vec![],
        1 => vec!["practice"],
        2 => vec!["week"],
        3 => vec!["practice", "week"],
        _ => vec!["week", "practice"],
    };
    let range = match rng.below(6) {
        0 => json!("all"),
        1 => json!("28d"),
        2 => json!("91d"),
        3 => json!("12mo"),
        _ => {
            let (a, b) = (rng.pick(weeks).clone(), rng.pick(weeks).clone());
            let (a, b) = if a <= b { (a, b) } else { (b, a) };
            // Sometimes a day inside a week, not its Sunday.
            let a = if rng.chance(30) { format!("{}{}", &a[..8], "01") } else { a };
            json!([a, b])
        }
    };
    let mut filters = Vec::new();
    for _ in 0..rng.below(3) {
        let (dim, pool) = if rng.chance(60) { ("practice", practices) } else { ("week", weeks) };
        let op = *rng.pick(&["is", "is_not", "contains"]);
        let values: Vec<String> = (0..1 + rng.below(4))
            .map(|_| {
                let v = rng.pick(pool).clone();
                match op {
                    // A part of a value, in the other case sometimes: contains ignores case.
                    // Letters that fold differently, or that ClickHouse refuses to fold: answered the same anyway.
                    "contains" if rng.chance(8) => (*rng.pick(&["ı", "\u{212A}", "É", "ſ"])).to_owned(),
                    "contains" => {
                        let cut = &v[..1 + rng.below(v.len())];
                        if rng.chance(50) { cut.to_lowercase() } else { cut.to_owned() }
                    }
                    _ => v,
                }
            })
            .collect();
        filters.push(json!([op, dim, values]));
    }
    let mut q = json!({"metrics": chosen, "dimensions": dims, "date_range": range, "filters": filters});
    if rng.chance(60) {
        let names: Vec<&str> = chosen.iter().chain(&dims).copied().collect();
        q["order_by"] = json!([[rng.pick(&names), rng.pick(&["asc", "desc"])]]);
    }
    if rng.chance(40) {
        q["pagination"] = json!({"limit": 1 + rng.below(40), "offset": rng.below(30)});
    }
    q
}

/// Answers agree: the same rows in the same order, figures equal (to rounding), the same days, totals and notes.
fn same(a: &Answer, b: &Answer) -> Result<(), String> {
    if a.meta.total_rows != b.meta.total_rows {
        return Err(format!("total rows {} vs {}", a.meta.total_rows, b.meta.total_rows));
    }
    if a.meta.date_range != b.meta.date_range {
        return Err(format!("date range {:?} vs {:?}", a.meta.date_range, b.meta.date_range));
    }
    if a.meta.notes != b.meta.notes {
        return Err(format!("notes {:?} vs {:?}", a.meta.notes, b.meta.notes));
    }
    if a.meta.practice_names != b.meta.practice_names {
        return Err("practice names differ".into());
    }
    if a.results.len() != b.results.len() {
        return Err(format!("{} rows vs {}", a.results.len(), b.results.len()));
    }
    for (i, (x, y)) in a.results.iter().zip(&b.results).enumerate() {
        if x.dimensions != y.dimensions {
            return Err(format!("row {i}: {:?} vs {:?}", x.dimensions, y.dimensions));
        }
        for (m, (u, v)) in x.metrics.iter().zip(&y.metrics).enumerate() {
            let close = match (u, v) {
                (Some(u), Some(v)) => (u - v).abs() <= 1e-4 * u.abs().max(v.abs()).max(1.0),
                (None, None) => true,
                _ => false,
            };
            if !close {
                return Err(format!("row {i} {:?} metric {m}: {u:?} vs {v:?}", x.dimensions));
            }
        }
    }
    Ok(())
}

#[test]
fn weekly_reach_aggregated_in_clickhouse_equals_the_services_aggregation() {
    let Ok(url) = std::env::var("PULSE_TEST_CLICKHOUSE_URL") else {
        assert!(
            std::env::var("PULSE_REQUIRE_CLICKHOUSE").as_deref() != Ok("1"),
            "PULSE_REQUIRE_CLICKHOUSE=1 but PULSE_TEST_CLICKHOUSE_URL is not set"
        );
        eprintln!("skipped: set PULSE_TEST_CLICKHOUSE_URL=http://127.0.0.1:8123 to run against a ClickHouse server");
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let support::Demo { _dir, config, lake, directory } = support::demo().await;
        let access = config.operator_access();

        let db = format!("pulse_pushdown_{}", std::process::id());
        let ch = AnyStore::ClickHouse(Box::new(ClickHouseStore::new(ClickHouseSettings {
            url: url.clone(),
            database: db.clone(),
            user: "default".into(),
            password: None,
            cluster: None,
            replica_urls: Default::default(),
            zookeeper: None,
        })));
        ch.migrate().await.expect("migrate");
        let main = ReportVariant::main();
        let tenants: Vec<String> = config.tenants.iter().map(|t| t.id.to_string()).collect();
        for t in &tenants {
            let batch = lake.read_report(&access.scope(t).unwrap(), &REACH_WEEKLY, &main).await.unwrap();
            assert!(batch.num_rows() > 0, "the demo computed weekly reach for {t}");
            ch.replace_report(&access.write_scope(t).unwrap(), &REACH_WEEKLY, &main, &batch).await.unwrap();
            // The run that computed them (the answers' watermark).
            let runs = lake.read_report(&access.scope(t).unwrap(), &REPORT_RUNS, &main).await.unwrap();
            ch.replace_report(&access.write_scope(t).unwrap(), &REPORT_RUNS, &main, &runs).await.unwrap();
        }
        // The store really aggregates (the comparison below would pass trivially if it declined).
        let probe = pulse_store::ReportAggregate {
            group_by: vec!["practice_code"],
            date_column: "week_ending",
            from: None,
            to: None,
            last_days: None,
            filters: vec![],
            sums: vec!["reach"],
            weights: None,
        };
        let pushed = ch.aggregate_report(&access.scope(&tenants[0]).unwrap(), &REACH_WEEKLY, &main, &probe).await;
        assert!(pushed.unwrap().is_some_and(|a| !a.groups.is_empty()), "ClickHouse answers the aggregation");
        assert!(
            lake.aggregate_report(&access.scope(&tenants[0]).unwrap(), &REACH_WEEKLY, &main, &probe)
                .await
                .unwrap()
                .is_none()
        );

        let seeds: u64 = std::env::var("PULSE_PUSHDOWN_QUERIES").ok().and_then(|v| v.parse().ok()).unwrap_or(300);
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut non_empty = 0;
        // As the server asks: the answer cache off, slices kept. A tenant's first question reads its slice from
        // ClickHouse; the later ones are answered from the slice.
        let slices = query::Cache::with_limits(0, query::DEFAULT_CACHE_BYTES, query::DEFAULT_SLICE_BYTES);
        let mut touched = std::collections::BTreeSet::new();
        for i in 0..seeds {
            let tenant = rng.pick(&tenants).clone();
            let scope = access.scope(&tenant).unwrap();
            let batch = lake.read_report(&scope, &REACH_WEEKLY, &main).await.unwrap();
            let practices: Vec<String> = directory.names[&tenant].keys().cloned().collect();
            let weeks: Vec<String> = {
                let col = batch.column_by_name("week_ending").unwrap();
                let col = arrow::compute::cast(col, &arrow::datatypes::DataType::Utf8).unwrap();
                let col = col.as_any().downcast_ref::<arrow::array::StringArray>().unwrap();
                let mut w: Vec<String> = col.iter().flatten().map(str::to_owned).collect();
                w.sort();
                w.dedup();
                w
            };
            let mut body = random_query(&mut rng, &practices, &weeks);
            body["site_id"] = json!(tenant);
            let q = Query::parse(body.to_string().as_bytes()).unwrap_or_else(|e| panic!("query {i} {body}: {e:?}"));
            let (d, a) = (&directory, &access);
            let pushed = query::run_with(&ch, d, a, &q, None, Aggregation::WhereTheDataLives)
                .await
                .unwrap_or_else(|e| panic!("{i} {body}: {e:?}"));
            let here = query::run_with(&ch, d, a, &q, None, Aggregation::InTheService).await.unwrap();
            let on_lake = query::run_with(&lake, d, a, &q, None, Aggregation::InTheService).await.unwrap();
            if let Err(why) = same(&pushed, &here) {
                panic!("query {i} {body}: pushed into ClickHouse vs aggregated in the service: {why}");
            }
            if let Err(why) = same(&here, &on_lake) {
                panic!("query {i} {body}: ClickHouse vs the lake: {why}");
            }
            let sliced = query::run_with(&ch, d, a, &q, Some(&slices), Aggregation::WhereTheDataLives).await.unwrap();
            if let Err(why) = same(&sliced, &here) {
                panic!("query {i} {body}: with slices kept vs aggregated in the service: {why}");
            }
            touched.insert(tenant.clone());
            non_empty += usize::from(!pushed.results.is_empty());
        }
        assert_eq!(slices.slices_kept(), touched.len(), "one weekly-reach slice per tenant asked about");
        // The generator must mostly ask questions with answers, or agreement proves little.
        assert!(non_empty * 2 > seeds as usize, "{non_empty} of {seeds} queries had rows");
        eprintln!("{seeds} queries, {non_empty} with rows: ClickHouse's aggregation equals the service's");
        let drop = format!("DROP DATABASE IF EXISTS {db}");
        let _ = reqwest_free_drop(&url, &drop);
    });
}

/// Drops the test database over HTTP with the standard library (no HTTP client needed for one statement).
fn reqwest_free_drop(url: &str, sql: &str) -> std::io::Result<()> {
    use std::io::{Read as _, Write as _};
    let addr = url.trim_start_matches("http://").trim_end_matches('/');
    let mut tcp = std::net::TcpStream::connect(addr)?;
    write!(tcp, "POST / HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{sql}", sql.len())?;
    let mut out = String::new();
    tcp.read_to_string(&mut out)?;
    Ok(())
}
