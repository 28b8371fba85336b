//! Loading facts into polars frames, and report frames into the store's report tables.

use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::{ArrayRef, Date32Array, Float64Array, StringArray, UInt32Array};
use arrow::record_batch::RecordBatch;
use chrono::NaiveDate;
use polars::prelude::*;
use pulse_domain::{CanonicalMetric, PageInsightFact, Period, Post, PostInsightSnapshot};
use pulse_store::{ReportTable, ReportType};

use crate::{PipelineError, Result};

pub use pulse_domain::{EPOCH, day_number, from_day_number};

/// `(metric, period)` pairs a pipeline needs.
pub type Wanted<'a> = &'a [(CanonicalMetric, Period)];

fn wanted_expr(wanted: Wanted) -> Expr {
    wanted.iter().fold(lit(false), |acc, (m, p)| {
        acc.or(col("metric").eq(lit(m.as_str())).and(col("period").eq(lit(p.as_str()))))
    })
}

/// Facts from Parquet files the store handed out (already checked and confined to one tenant): the metric, period
/// and day predicate is pushed into the scan.
pub fn scan_fact_files(files: &[PathBuf], wanted: Wanted, from: NaiveDate, to: NaiveDate) -> Result<LazyFrame> {
    let mut scans = Vec::new();
    for file in files {
        let path = file.to_str().ok_or_else(|| PipelineError::Input(format!("non-UTF-8 path {}", file.display())))?;
        scans.push(LazyFrame::scan_parquet(PlRefPath::new(path), ScanArgsParquet::default())?);
    }
    if scans.is_empty() {
        return Ok(empty_facts().lazy());
    }
    let all = concat(scans, UnionArgs::default())?;
    Ok(all
        .select([
            col("practice_code"),
            col("page_id"),
            col("metric"),
            col("period"),
            col("day"),
            col("breakdown"),
            col("value"),
        ])
        .filter(wanted_expr(wanted).and(col("day").gt_eq(lit(from))).and(col("day").lt_eq(lit(to)))))
}

/// The one-row record of a pipelines run, in [`pulse_store::report::REPORT_RUNS`]'s shape.
pub fn run_record(
    run_id: &str,
    variant: &pulse_store::ReportVariant,
    from: NaiveDate,
    to: NaiveDate,
    computed_at: chrono::DateTime<chrono::Utc>,
    facts: usize,
    rows: usize,
) -> Result<RecordBatch> {
    use arrow::array::Int64Array;
    let table = &pulse_store::report::REPORT_RUNS;
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(vec![run_id])),
        Arc::new(StringArray::from(vec![variant.as_str()])),
        Arc::new(Date32Array::from(vec![day_number(from)])),
        Arc::new(Date32Array::from(vec![day_number(to)])),
        Arc::new(StringArray::from(vec![computed_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)])),
        Arc::new(Int64Array::from(vec![facts as i64])),
        Arc::new(Int64Array::from(vec![rows as i64])),
    ];
    RecordBatch::try_new(table.schema(), columns).map_err(|e| PipelineError::Input(e.to_string()))
}

pub fn empty_facts() -> DataFrame {
    facts_frame(&[]).expect("empty frame builds")
}

/// Facts (from any store) as a frame.
pub fn facts_frame(facts: &[PageInsightFact]) -> Result<DataFrame> {
    let df = df!(
        "practice_code" => facts.iter().map(|f| f.practice.as_str()).collect::<Vec<_>>(),
        "page_id" => facts.iter().map(|f| f.page.as_str()).collect::<Vec<_>>(),
        "metric" => facts.iter().map(|f| f.metric.as_str()).collect::<Vec<_>>(),
        "period" => facts.iter().map(|f| f.period.as_str()).collect::<Vec<_>>(),
        "day" => facts.iter().map(|f| day_number(f.day)).collect::<Vec<_>>(),
        "breakdown" => facts.iter().map(|f| &*f.breakdown).collect::<Vec<_>>(),
        "value" => facts.iter().map(|f| f.value).collect::<Vec<_>>(),
    )?;
    Ok(df.lazy().with_column(col("day").cast(DataType::Date)).collect()?)
}

/// Each post's latest lifetime value per metric (totals only): the end of its growth curve so far.
pub fn latest_lifetime(snapshots: &[PostInsightSnapshot]) -> std::collections::HashMap<(&str, CanonicalMetric), f64> {
    let mut latest: std::collections::HashMap<(&str, CanonicalMetric), (NaiveDate, f64)> = Default::default();
    for s in snapshots.iter().filter(|s| s.breakdown.is_empty()) {
        let e = latest.entry((s.post.as_str(), s.metric)).or_insert((s.snapshot_day, s.value));
        if s.snapshot_day >= e.0 {
            *e = (s.snapshot_day, s.value);
        }
    }
    latest.into_iter().map(|(k, (_, v))| (k, v)).collect()
}

/// The latest snapshot of each post's metrics, wide: one row per post.
pub fn post_frame(posts: &[Post], snapshots: &[PostInsightSnapshot]) -> Result<DataFrame> {
    let latest = latest_lifetime(snapshots);
    let get = |p: &Post, m| latest.get(&(p.post.as_str(), m)).copied();
    let df = df!(
        "practice_code" => posts.iter().map(|p| p.practice.as_str()).collect::<Vec<_>>(),
        "page_id" => posts.iter().map(|p| p.page.as_str()).collect::<Vec<_>>(),
        "post_id" => posts.iter().map(|p| p.post.as_str()).collect::<Vec<_>>(),
        "created" => posts.iter().map(|p| day_number(p.created_time.date_naive())).collect::<Vec<_>>(),
        "post_type" => posts.iter().map(|p| p.post_type.as_str()).collect::<Vec<_>>(),
        "message" => posts.iter().map(|p| p.message.as_str()).collect::<Vec<_>>(),
        "reach" => posts.iter().map(|p| get(p, CanonicalMetric::PostReach)).collect::<Vec<_>>(),
        "views" => posts.iter().map(|p| get(p, CanonicalMetric::PostViews)).collect::<Vec<_>>(),
        "engagements" => posts.iter().map(|p| get(p, CanonicalMetric::PostEngagements)).collect::<Vec<_>>(),
        "engaged_users" => posts.iter().map(|p| get(p, CanonicalMetric::PostEngagedUsers)).collect::<Vec<_>>(),
        "video_views" => posts.iter().map(|p| get(p, CanonicalMetric::PostVideoViews)).collect::<Vec<_>>(),
    )?;
    Ok(df.lazy().with_column(col("created").cast(DataType::Date)).collect()?)
}

/// A report frame in a report table's shape (columns by name, in the table's order).
pub fn to_batch(df: &DataFrame, table: &ReportTable) -> Result<RecordBatch> {
    let mut columns: Vec<ArrayRef> = Vec::new();
    for c in table.columns {
        let column = df
            .column(c.name)
            .map_err(|_| PipelineError::Input(format!("{}: the frame has no column `{}`", table.name, c.name)))?;
        let array: ArrayRef = match c.ty {
            ReportType::Str => {
                let s = column.cast(&DataType::String)?;
                Arc::new(StringArray::from_iter(s.str()?.iter().map(|v| Some(v.unwrap_or("")))))
            }
            ReportType::Date => {
                let s = column.cast(&DataType::Int32)?;
                let v: Vec<i32> = s.i32()?.iter().map(|v| v.unwrap_or(0)).collect();
                Arc::new(Date32Array::from(v))
            }
            ReportType::F64 | ReportType::OptF64 => {
                let s = column.cast(&DataType::Float64)?;
                Arc::new(Float64Array::from_iter(s.f64()?.iter().map(|v| v.filter(|x| x.is_finite()))))
            }
            ReportType::U32 => {
                let s = column.cast(&DataType::UInt32)?;
                Arc::new(UInt32Array::from_iter_values(s.u32()?.iter().map(|v| v.unwrap_or(0))))
            }
            ReportType::I64 => {
                let s = column.cast(&DataType::Int64)?;
                Arc::new(arrow::array::Int64Array::from_iter_values(s.i64()?.iter().map(|v| v.unwrap_or(0))))
            }
        };
        columns.push(array);
    }
    RecordBatch::try_new(table.schema(), columns).map_err(|e| PipelineError::Input(format!("{}: {e}", table.name)))
}

/// Rows of (page, day, value) for one metric/period, as a map for the numeric pipelines.
pub fn series(
    df: &DataFrame,
    metric: CanonicalMetric,
    period: Period,
) -> Result<std::collections::BTreeMap<String, std::collections::BTreeMap<i32, f64>>> {
    let f = df
        .clone()
        .lazy()
        .filter(
            col("metric")
                .eq(lit(metric.as_str()))
                .and(col("period").eq(lit(period.as_str())))
                .and(col("breakdown").eq(lit(""))),
        )
        .select([col("page_id"), col("day").cast(DataType::Int32), col("value")])
        .collect()?;
    let pages = f.column("page_id")?.str()?.clone();
    let days = f.column("day")?.i32()?.clone();
    let values = f.column("value")?.f64()?.clone();
    let mut out: std::collections::BTreeMap<String, std::collections::BTreeMap<i32, f64>> = Default::default();
    for ((p, d), v) in pages.iter().zip(days.iter()).zip(values.iter()) {
        if let (Some(p), Some(d), Some(v)) = (p, d, v) {
            out.entry(p.to_owned()).or_default().insert(d, v);
        }
    }
    Ok(out)
}
