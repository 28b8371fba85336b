//! Report queries through the application layer, on a lake: names beside codes, sort, top-N, latest week, an empty
//! report as a valid answer, variants kept apart, counts as integers, JSON nulls with reasons, the data dictionary,
//! and a tenant the reader may not see.

use std::sync::Arc;

use arrow::array::{ArrayRef, Date32Array, Float64Array, StringArray, UInt32Array};
use arrow::record_batch::RecordBatch;
use chrono::NaiveDate;
use pulse_app::report::{self, Kind, ReportQuery};
use pulse_domain::day_number;
use pulse_store::lake::LakeStore;
use pulse_store::report::{DATA_QUALITY, REACH_WEEKLY, REPORT_RUNS};
use pulse_store::{ReportVariant, Store};

fn d(m: u32, day: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(2018, m, day).unwrap()
}

/// Weekly reach rows: (practice, week ending, reach, engaged users).
fn reach(rows: &[(&str, NaiveDate, f64, Option<f64>)]) -> RecordBatch {
    let n = rows.len();
    let strs = |f: &dyn Fn(usize) -> String| Arc::new(StringArray::from((0..n).map(f).collect::<Vec<_>>())) as ArrayRef;
    let nums = |v: Vec<Option<f64>>| Arc::new(Float64Array::from(v)) as ArrayRef;
    let columns: Vec<ArrayRef> = vec![
        strs(&|i| rows[i].0.to_owned()),
        strs(&|i| format!("10000000000{}", &rows[i].0[5..])),
        Arc::new(Date32Array::from(rows.iter().map(|r| day_number(r.1)).collect::<Vec<_>>())),
        nums(rows.iter().map(|r| Some(r.2)).collect()),
        nums(rows.iter().map(|r| r.3).collect()),
        nums(rows.iter().map(|r| Some(r.2 * 3.0 + 0.4)).collect()),
        nums(vec![Some(10.0); n]),
        nums(vec![Some(500.0); n]),
        nums(vec![Some(2.0); n]),
        nums(vec![Some(0.02); n]),
        nums(vec![None; n]),
        nums(vec![Some(0.1); n]),
        strs(&|_| String::new()),
        Arc::new(UInt32Array::from(vec![7; n])),
    ];
    RecordBatch::try_new(REACH_WEEKLY.schema(), columns).unwrap()
}

fn run_record(variant: &str, from: NaiveDate, to: NaiveDate) -> RecordBatch {
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(vec!["jobs-1"])),
        Arc::new(StringArray::from(vec![variant])),
        Arc::new(Date32Array::from(vec![day_number(from)])),
        Arc::new(Date32Array::from(vec![day_number(to)])),
        Arc::new(StringArray::from(vec!["2018-04-01T00:00:00Z"])),
        Arc::new(arrow::array::Int64Array::from(vec![100])),
        Arc::new(arrow::array::Int64Array::from(vec![3])),
        Arc::new(StringArray::from(vec!["2018-04-01T00:00:00Z"])),
        Arc::new(StringArray::from(vec![""])),
        Arc::new(StringArray::from(vec!["full"])),
    ];
    RecordBatch::try_new(REPORT_RUNS.schema(), columns).unwrap()
}

const CONFIG: &str = r#"
[store]
backend = "lake"
lake_dir = "lake"

[[tenant]]
id = "alpha"
name = "Alpha CCG"
[[tenant.practice]]
code = "M83001"
name = "Brookfield Surgery"
[[tenant.practice]]
code = "M83002"
name = "Riverside Practice"

[[tenant]]
id = "beta"
name = "Beta CCG"
[[tenant.practice]]
code = "M84001"
name = "Hillside Medical Centre"
"#;

async fn setup() -> (tempfile::TempDir, pulse_config::Config, LakeStore) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pulse.toml"), CONFIG).unwrap();
    let config = pulse_config::load(&dir.path().join("pulse.toml")).unwrap();
    let store = LakeStore::open(dir.path().join("lake")).unwrap();
    let alpha = config.operator_access().write_scope("alpha").unwrap();
    let main = ReportVariant::main();
    let rows = [
        ("M83001", d(3, 4), 400.0, Some(40.0)),
        ("M83002", d(3, 4), 900.0, None),
        ("M83001", d(3, 11), 700.0, Some(70.0)),
        ("M83002", d(3, 11), 300.0, Some(30.0)),
    ];
    store.replace_report(&alpha, &REACH_WEEKLY, &main, &reach(&rows)).await.unwrap();
    store.replace_report(&alpha, &DATA_QUALITY, &main, &DATA_QUALITY.empty()).await.unwrap();
    store.replace_report(&alpha, &REPORT_RUNS, &main, &run_record("", d(1, 1), d(3, 11))).await.unwrap();
    // A narrower run in a variant of its own.
    let march = ReportVariant::named("2018-03-01..2018-03-07").unwrap();
    store.replace_report(&alpha, &REACH_WEEKLY, &march, &reach(&rows[..1])).await.unwrap();
    store.replace_report(&alpha, &REPORT_RUNS, &march, &run_record(march.as_str(), d(3, 1), d(3, 7))).await.unwrap();
    (dir, config, store)
}

fn query(kind: Kind) -> ReportQuery {
    ReportQuery { tenant: Some("alpha".into()), ..ReportQuery::new(kind) }
}

fn strings(batch: &RecordBatch, name: &str) -> Vec<String> {
    let a = batch.column_by_name(name).unwrap().as_any().downcast_ref::<StringArray>().unwrap().clone();
    a.iter().map(|s| s.unwrap_or_default().to_owned()).collect()
}

#[tokio::test]
async fn names_sort_top_and_latest_week() {
    let (_dir, config, store) = setup().await;
    let access = config.operator_access();
    let q = ReportQuery { sort: Some("-reach".into()), top: Some(2), ..query(Kind::Reach) };
    let answer = report::query(&store, &config, &access, &q).await.unwrap();
    assert_eq!(answer.batch.num_rows(), 2);
    assert_eq!(strings(&answer.batch, "practice_name"), vec!["Riverside Practice", "Brookfield Surgery"]);
    let reach = answer.batch.column_by_name("reach").unwrap().as_any().downcast_ref::<Float64Array>().unwrap();
    assert_eq!((reach.value(0), reach.value(1)), (900.0, 700.0));
    let run = answer.run.as_ref().unwrap();
    assert_eq!((run.range_from, run.range_to), (d(1, 1), d(3, 11)));
    let latest = ReportQuery { latest_week: true, ..query(Kind::Reach) };
    let answer = report::query(&store, &config, &access, &latest).await.unwrap();
    assert_eq!(answer.batch.num_rows(), 2, "only the week ending 2018-03-11");
    let text = report::text(&answer);
    assert!(text.contains("Brookfield Surgery") && text.contains("range 2018-01-01 to 2018-03-11"), "{text}");
    // Paging: the second page of two rows by reach.
    let page2 = ReportQuery { sort: Some("-reach".into()), offset: Some(2), top: Some(2), ..query(Kind::Reach) };
    let answer = report::query(&store, &config, &access, &page2).await.unwrap();
    let reach = answer.batch.column_by_name("reach").unwrap().as_any().downcast_ref::<Float64Array>().unwrap();
    assert_eq!((reach.value(0), reach.value(1)), (400.0, 300.0));
    let past_the_end = ReportQuery { offset: Some(10), ..query(Kind::Reach) };
    let answer = report::query(&store, &config, &access, &past_the_end).await.unwrap();
    assert!(answer.batch.num_rows() == 0 && answer.empty_note.as_deref().unwrap().contains("no rows match"));
    let bad = ReportQuery { sort: Some("reech".into()), ..query(Kind::Reach) };
    let err = report::query(&store, &config, &access, &bad).await.unwrap_err().to_string();
    assert!(err.contains("cannot sort by `reech`") && err.contains("reach"), "{err}");
}

#[tokio::test]
async fn an_empty_quality_report_is_a_valid_answer() {
    let (_dir, config, store) = setup().await;
    let answer = report::query(&store, &config, &config.operator_access(), &query(Kind::Quality)).await.unwrap();
    assert_eq!(answer.batch.num_rows(), 0);
    assert!(report::text(&answer).contains("no issues"), "{}", report::text(&answer));
    let mut json = Vec::new();
    report::write_json(&answer, &mut json).unwrap();
    assert_eq!(String::from_utf8(json).unwrap().trim(), "[]");
    // A report never computed for a tenant is an error that says what to run.
    let beta = ReportQuery { tenant: Some("beta".into()), ..ReportQuery::new(Kind::Quality) };
    let err = report::query(&store, &config, &config.operator_access(), &beta).await.unwrap_err().to_string();
    assert!(err.contains("pulse jobs run --tenant beta"), "{err}");
}

#[tokio::test]
async fn a_variant_is_read_on_its_own_and_the_main_report_is_untouched() {
    let (_dir, config, store) = setup().await;
    let access = config.operator_access();
    let main = report::query(&store, &config, &access, &query(Kind::Reach)).await.unwrap();
    assert_eq!(main.batch.num_rows(), 4);
    let q = ReportQuery { variant: Some("2018-03-01..2018-03-07".into()), ..query(Kind::Reach) };
    let march = report::query(&store, &config, &access, &q).await.unwrap();
    assert_eq!(march.batch.num_rows(), 1);
    assert_eq!(march.run.unwrap().range_to, d(3, 7));
}

#[tokio::test]
async fn exports_write_counts_as_integers_and_keep_nulls_with_reasons() {
    let (dir, config, store) = setup().await;
    let answer = report::query(&store, &config, &config.operator_access(), &query(Kind::Reach)).await.unwrap();
    let mut csv = Vec::new();
    report::write_csv(&answer, &mut csv).unwrap();
    let csv = String::from_utf8(csv).unwrap();
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    let first: Vec<&str> = csv.lines().nth(1).unwrap().split(',').collect();
    let at = |name: &str| first[header.iter().position(|h| *h == name).unwrap()];
    assert_eq!(at("views"), "1200", "views 1200.4 is a count, written as an integer: {csv}");
    assert_eq!(at("engagement_rate"), "0.02", "a rate stays a fraction");
    let mut json = Vec::new();
    report::write_json(&answer, &mut json).unwrap();
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&json).unwrap();
    let riverside = rows.iter().find(|r| r["practice_code"] == "M83002" && r["week_ending"] == "2018-03-04").unwrap();
    assert!(riverside["engaged_users"].is_null(), "{riverside}");
    assert!(riverside["null_reasons"]["engaged_users"].as_str().unwrap().contains("engaged users"), "{riverside}");
    assert!(riverside.get("reach_change").is_some_and(|v| v.is_null()), "null keys are kept: {riverside}");
    // Parquet keeps the integer type too, and the dictionary goes beside it.
    let path = dir.path().join("reach.parquet");
    report::write_parquet(&answer, &path).unwrap();
    let file = std::fs::File::open(&path).unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
    let schema = reader.schema().clone();
    assert_eq!(schema.field_with_name("reach").unwrap().data_type(), &arrow::datatypes::DataType::Int64);
    let dictionary = report::dictionary(Kind::Reach);
    assert!(dictionary.starts_with("column,type,unit,meaning\n"), "{dictionary}");
    assert!(dictionary.contains("reach,\"integer (null when unavailable)\",\"people\""), "{dictionary}");
    assert!(dictionary.contains("week_ending,\"date (US-Pacific day)\""), "{dictionary}");
    assert_eq!(report::dictionary_path(&path), dir.path().join("reach.parquet.dictionary.csv"));
}

#[tokio::test]
async fn an_analyst_cannot_read_another_tenant_nor_an_unknown_practice() {
    let (_dir, config, store) = setup().await;
    let analyst = config.operator_access().analyst("beta").unwrap();
    let err = report::query(&store, &config, &analyst, &query(Kind::Reach)).await.unwrap_err().to_string();
    assert!(err.contains("not visible to this analyst"), "{err}");
    let q = ReportQuery { practice: Some("M84001".into()), ..query(Kind::Reach) };
    let err = report::query(&store, &config, &config.operator_access(), &q).await.unwrap_err().to_string();
    assert!(err.contains("practice M84001 is not one of tenant alpha's 2 practices"), "{err}");
}
