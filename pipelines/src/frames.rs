//! Loading facts into polars frames, and report frames into the store's report tables.

use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::{ArrayRef, Date32Array, Float64Array, StringArray, UInt32Array};
use arrow::record_batch::RecordBatch;
use chrono::NaiveDate;
use polars::prelude::*;
use pulse_domain::text::{EXCERPT_CHARS, excerpt};
use pulse_domain::{CanonicalMetric, PageInsightFact, Period, Post, PostInsightSnapshot};
use pulse_store::table::page_insights as F;
use pulse_store::{FactSeries, ReportTable, ReportType};

use crate::{PipelineError, Result};

pub use pulse_domain::{EPOCH, day_number, from_day_number};

/// `(metric, period)` pairs a pipeline needs.
pub type Wanted<'a> = &'a [(CanonicalMetric, Period)];

fn wanted_expr(wanted: Wanted) -> Expr {
    wanted.iter().fold(lit(false), |acc, (m, p)| {
        acc.or(col("metric").eq(lit(m.as_str())).and(col("period").eq(lit(p.as_str()))))
    })
}

/// A tenant's facts as the pipelines use them: the totals (`breakdown = ''`), and for the age/gender metrics the
/// breakdowns of the 28-day windows the reports keep: every Sunday's (one window per week, ending with the reach
/// week) and each page's latest. Breakdown rows are five in six of all stored rows, so not holding the other days'
/// keeps a tenant's history small in memory.
pub struct Facts {
    pub totals: DataFrame,
    pub breakdowns: DataFrame,
}

impl Facts {
    /// Splits facts read as rows (ClickHouse): totals, and the breakdowns of the kept windows in `[from, to]`,
    /// chosen exactly as [`load_fact_files`] chooses them.
    pub fn split(all: DataFrame, from: NaiveDate, to: NaiveDate) -> Result<Facts> {
        let totals = all.clone().lazy().filter(col("breakdown").eq(lit(""))).collect()?;
        let in_range = col("day").gt_eq(date(from)).and(col("day").lt_eq(date(to)));
        let breakdowns = kept_windows(all.lazy().filter(col("breakdown").neq(lit("")).and(in_range)), to)?.collect()?;
        Ok(Facts { totals, breakdowns })
    }

    /// From series a store handed over (ClickHouse, whose filter is metrics x periods; see
    /// [`pulse_store::Store::read_fact_series`]): `totals` (the `total_pairs` series without a breakdown) and
    /// `breakdowns`, read for Sundays and the last week (the `breakdown_pairs` series with one, in the kept windows),
    /// exactly as [`load_fact_files`] makes them.
    pub fn from_series(
        totals: &[FactSeries],
        total_pairs: Wanted,
        breakdowns: &[FactSeries],
        breakdown_pairs: Wanted,
        to: NaiveDate,
    ) -> Result<Facts> {
        let totals = series_frame(totals)?
            .lazy()
            .filter(col("breakdown").eq(lit("")).and(wanted_expr(total_pairs)))
            .collect()?;
        let scanned =
            series_frame(breakdowns)?.lazy().filter(col("breakdown").neq(lit("")).and(wanted_expr(breakdown_pairs)));
        let breakdowns = kept_windows(scanned, to)?.collect()?;
        Ok(Facts { totals, breakdowns })
    }

    pub fn height(&self) -> usize {
        self.totals.height() + self.breakdowns.height()
    }

    /// The first day with a total.
    pub fn first_day(&self) -> Result<Option<NaiveDate>> {
        let first = self.totals.column("day")?.cast(&DataType::Int32)?.i32()?.min();
        Ok(first.map(from_day_number))
    }
}

/// Whether a day (as a date expression) is a Sunday: the last day of a reach week (1970-01-01 was a Thursday).
pub fn is_sunday(day: Expr) -> Expr {
    (day.cast(DataType::Int32) % lit(7)).eq(lit(3))
}

/// A date as a literal of polars' `Date` type. `lit(NaiveDate)` makes a datetime in nanoseconds, which turns a
/// comparison with a `Date` column into a conversion of every row.
pub fn date(day: NaiveDate) -> Expr {
    lit(Scalar::new_date(day_number(day)))
}

/// The breakdown rows of the windows the reports keep: Sundays, and each (page, metric, period)'s latest day in the
/// last week before `to` (the latest window: a page with none that week is in its Sundays' windows only, so an
/// incremental run, which reads from at least a week back, sees the same latest window as a full one).
fn kept_windows(lf: LazyFrame, to: NaiveDate) -> Result<LazyFrame> {
    let recent = col("day").gt_eq(date(to - chrono::Duration::days(6)));
    let candidates = lf.filter(is_sunday(col("day")).or(recent.clone()));
    let last = when(recent.clone()).then(col("day")).otherwise(lit(NULL).cast(DataType::Date));
    let latest = recent.and(col("day").eq(last.max().over([col("page_id"), col("metric"), col("period")])?));
    Ok(candidates.filter(is_sunday(col("day")).or(latest)))
}

/// Loads a tenant's facts from the Parquet files the store handed out: totals of the `totals` pairs over
/// `[load_from, to]`, and for the `breakdowns` pairs the rows of the kept windows in `[from, to]` (Sundays and each
/// page's latest day; see [`Facts`]). The day-of-week predicate is pushed into the scan with the others.
pub fn load_fact_files(
    files: &[PathBuf],
    totals: Wanted,
    breakdowns: Wanted,
    load_from: NaiveDate,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<Facts> {
    let totals = scan_fact_files(files, totals, load_from, to)?.filter(col(F::BREAKDOWN).eq(lit(""))).collect()?;
    let scanned = scan_fact_files(files, breakdowns, from, to)?.filter(col(F::BREAKDOWN).neq(lit("")));
    let breakdowns = kept_windows(scanned, to)?.collect()?;
    Ok(Facts { totals, breakdowns })
}

/// Facts from Parquet files the store handed out (already checked and confined to one tenant): the metric, period
/// and day predicate is pushed into the scan.
pub fn scan_fact_files(files: &[PathBuf], wanted: Wanted, from: NaiveDate, to: NaiveDate) -> Result<LazyFrame> {
    let mut paths = Vec::new();
    for file in files {
        let path = file.to_str().ok_or_else(|| PipelineError::Input(format!("non-UTF-8 path {}", file.display())))?;
        paths.push(PlRefPath::new(path));
    }
    if paths.is_empty() {
        return Ok(empty_facts().lazy());
    }
    // One scan over every file (not a union of per-file scans), so the reader works on several row groups at once;
    // the partition directories are the store's business, not columns.
    let args = ScanArgsParquet { hive_options: HiveOptions::new_disabled(), rechunk: false, ..Default::default() };
    let all = LazyFrame::scan_parquet_files(paths.into(), args)?;
    Ok(all
        .select([
            col(F::PRACTICE_CODE),
            col(F::PAGE_ID),
            col(F::METRIC),
            col(F::PERIOD),
            col(F::DAY),
            col(F::BREAKDOWN),
            col(F::VALUE),
        ])
        .filter(col(F::DAY).gt_eq(date(from)).and(col(F::DAY).lt_eq(date(to))).and(wanted_expr(wanted))))
}

/// What a run record says beside its range.
pub struct RunFacts<'a> {
    pub run_id: &'a str,
    pub started_at: chrono::DateTime<chrono::Utc>,
    pub computed_at: chrono::DateTime<chrono::Utc>,
    pub facts: usize,
    pub rows: usize,
    /// Digest of the campaigns and registered patients the run used.
    pub inputs: &'a str,
    /// `full`, or `incremental from DAY`.
    pub mode: &'a str,
}

/// The one-row record of a pipelines run, in [`pulse_store::report::REPORT_RUNS`]'s shape.
pub fn run_record(
    variant: &pulse_store::ReportVariant,
    from: NaiveDate,
    to: NaiveDate,
    run: &RunFacts<'_>,
) -> Result<RecordBatch> {
    use arrow::array::Int64Array;
    let table = &pulse_store::report::REPORT_RUNS;
    let time = |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(vec![run.run_id])),
        Arc::new(StringArray::from(vec![variant.as_str()])),
        Arc::new(Date32Array::from(vec![day_number(from)])),
        Arc::new(Date32Array::from(vec![day_number(to)])),
        Arc::new(StringArray::from(vec![run.computed_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)])),
        Arc::new(Int64Array::from(vec![run.facts as i64])),
        Arc::new(Int64Array::from(vec![run.rows as i64])),
        Arc::new(StringArray::from(vec![time(run.started_at)])),
        Arc::new(StringArray::from(vec![run.inputs])),
        Arc::new(StringArray::from(vec![run.mode])),
    ];
    RecordBatch::try_new(table.schema(), columns).map_err(|e| PipelineError::Input(e.to_string()))
}

pub fn empty_facts() -> DataFrame {
    facts_frame(&[]).expect("empty frame builds")
}

/// Facts (from any store) as a frame.
pub fn facts_frame(facts: &[PageInsightFact]) -> Result<DataFrame> {
    let df = df!(
        F::PRACTICE_CODE => facts.iter().map(|f| f.practice.as_str()).collect::<Vec<_>>(),
        F::PAGE_ID => facts.iter().map(|f| f.page.as_str()).collect::<Vec<_>>(),
        F::METRIC => facts.iter().map(|f| f.metric.as_str()).collect::<Vec<_>>(),
        F::PERIOD => facts.iter().map(|f| f.period.as_str()).collect::<Vec<_>>(),
        F::DAY => facts.iter().map(|f| day_number(f.day)).collect::<Vec<_>>(),
        F::BREAKDOWN => facts.iter().map(|f| &*f.breakdown).collect::<Vec<_>>(),
        F::VALUE => facts.iter().map(|f| f.value).collect::<Vec<_>>(),
    )?;
    Ok(df.lazy().with_column(col(F::DAY).cast(DataType::Date)).collect()?)
}

/// Series as a frame of facts ([`facts_frame`]'s columns), series after series in the order given: a series'
/// strings are repeated per value, not parsed or allocated per value. Not sorted: the pipelines group, and order
/// what they write, themselves (a sort by the table's key took half of a tenant's load from ClickHouse, and
/// `on_clickhouse_the_reports_equal_the_lake_s_row_for_row` checks the reports match the lake's, whose files come in
/// another order).
pub fn series_frame(series: &[FactSeries]) -> Result<DataFrame> {
    let n: usize = series.iter().map(FactSeries::len).sum();
    let repeat = |text: fn(&FactSeries) -> &str| -> Vec<&str> {
        let mut out = Vec::with_capacity(n);
        for s in series {
            out.extend(std::iter::repeat_n(text(s), s.len()));
        }
        out
    };
    let df = df!(
        F::PRACTICE_CODE => repeat(|s| s.practice.as_str()),
        F::PAGE_ID => repeat(|s| s.page.as_str()),
        F::METRIC => repeat(|s| s.metric.as_str()),
        F::PERIOD => repeat(|s| s.period.as_str()),
        F::DAY => series.iter().flat_map(|s| s.days.iter().map(|d| day_number(*d))).collect::<Vec<_>>(),
        F::BREAKDOWN => repeat(|s| s.breakdown.as_str()),
        F::VALUE => series.iter().flat_map(|s| s.values.iter().copied()).collect::<Vec<_>>(),
    )?;
    Ok(df.lazy().with_column(col(F::DAY).cast(DataType::Date)).collect()?)
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
        "posted_at" => posts.iter().map(|p| p.created_time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)).collect::<Vec<_>>(),
        "excerpt" => posts.iter().map(|p| excerpt(&p.message, EXCERPT_CHARS)).collect::<Vec<_>>(),
        "permalink" => posts.iter().map(|p| facebook_permalink(&p.permalink)).collect::<Vec<_>>(),
        "reach" => posts.iter().map(|p| get(p, CanonicalMetric::PostReach)).collect::<Vec<_>>(),
        "views" => posts.iter().map(|p| get(p, CanonicalMetric::PostViews)).collect::<Vec<_>>(),
        "engagements" => posts.iter().map(|p| get(p, CanonicalMetric::PostEngagements)).collect::<Vec<_>>(),
        "engaged_users" => posts.iter().map(|p| get(p, CanonicalMetric::PostEngagedUsers)).collect::<Vec<_>>(),
        "video_views" => posts.iter().map(|p| get(p, CanonicalMetric::PostVideoViews)).collect::<Vec<_>>(),
    )?;
    Ok(df.lazy().with_column(col("created").cast(DataType::Date)).collect()?)
}

/// A post's permalink when it is an address on Facebook (what the Graph API gives), else empty: the reports and the
/// dashboard link to it, so nothing else is kept.
pub fn facebook_permalink(url: &str) -> &str {
    const HOSTS: [&str; 4] =
        ["https://www.facebook.com/", "https://facebook.com/", "https://m.facebook.com/", "https://web.facebook.com/"];
    if HOSTS.iter().any(|h| url.starts_with(h)) && !url.chars().any(|c| c.is_control() || c.is_whitespace()) {
        url
    } else {
        ""
    }
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

/// Rows of (page, day, value) for each of several metric/period pairs (each once), as maps for the numeric pipelines,
/// in one pass over the totals, in the order asked.
pub fn series_many(
    df: &DataFrame,
    wanted: Wanted,
) -> Result<Vec<std::collections::BTreeMap<String, std::collections::BTreeMap<i32, f64>>>> {
    type Series = std::collections::BTreeMap<i32, f64>;
    let pages = df.column("page_id")?.str()?.clone();
    let metrics = df.column("metric")?.str()?.clone();
    let periods = df.column("period")?.str()?.clone();
    let breakdowns = df.column("breakdown")?.str()?.clone();
    let days = df.column("day")?.cast(&DataType::Int32)?;
    let days = days.i32()?.clone();
    let values = df.column("value")?.f64()?.clone();
    debug_assert!(wanted.iter().enumerate().all(|(i, w)| !wanted[..i].contains(w)), "each pair once");
    let mut out: Vec<std::collections::BTreeMap<String, Series>> = vec![Default::default(); wanted.len()];
    // Rows come grouped by metric, period and page (the lake writes them so; any order is still right): the pair's
    // index is looked up once per run of equal pairs (a pair not wanted too), and a page's days are gathered while
    // its run lasts and added to its map once, rather than every row comparing strings and searching the maps.
    let mut pair: Option<(&str, &str, Option<usize>)> = None;
    let mut run: Option<(usize, &str)> = None;
    let mut days_of_run: Vec<(i32, f64)> = Vec::new();
    let flush = |out: &mut Vec<std::collections::BTreeMap<String, Series>>,
                 run: Option<(usize, &str)>,
                 days: &mut Vec<(i32, f64)>| {
        if let Some((k, page)) = run {
            // `extend`, never `collect`: extend inserts in order, so a day repeated within a run keeps its later
            // value, as a row-by-row insert would (which of equal keys `collect` keeps, std does not say).
            match out[k].get_mut(page) {
                Some(series) => series.extend(days.drain(..)),
                None => {
                    let mut series = Series::new();
                    series.extend(days.drain(..));
                    out[k].insert(page.to_owned(), series);
                }
            }
        }
    };
    // Zipped iterators, not `get(i)`: a column read from many files has many chunks, and `get` finds the chunk of
    // each row anew (a quarter of the job's time at national scale, `perf` showed).
    let rows =
        pages.iter().zip(metrics.iter()).zip(periods.iter()).zip(breakdowns.iter()).zip(days.iter()).zip(values.iter());
    for (((((p, m), per), b), d), v) in rows {
        let (Some(p), Some(m), Some(per), Some(""), Some(d), Some(v)) = (p, m, per, b, d, v) else {
            continue;
        };
        let k = match pair {
            Some((lm, lp, k)) if lm == m && lp == per => k,
            _ => {
                let k = wanted.iter().position(|(wm, wp)| wm.as_str() == m && wp.as_str() == per);
                pair = Some((m, per, k));
                k
            }
        };
        let Some(k) = k else { continue };
        if !matches!(run, Some((rk, rp)) if rk == k && rp == p) {
            flush(&mut out, run, &mut days_of_run);
            run = Some((k, p));
        }
        days_of_run.push((d, v));
    }
    flush(&mut out, run, &mut days_of_run);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, Utc};

    use pulse_domain::{ApiVersion, CanonicalMetric as M, PageInsightFact, Period as P, TenantId};
    use pulse_store::{FactFilter, Store};

    use super::*;

    #[test]
    fn only_facebook_permalinks_are_kept() {
        assert_eq!(facebook_permalink("https://www.facebook.com/1/posts/2/"), "https://www.facebook.com/1/posts/2/");
        assert_eq!(
            facebook_permalink("https://m.facebook.com/story.php?id=1"),
            "https://m.facebook.com/story.php?id=1"
        );
        for bad in [
            "javascript:alert(1)",
            "http://www.facebook.com/1",
            "https://www.facebook.com.evil.example/1",
            "https://evil.example/https://www.facebook.com/",
            "https://www.facebook.com/1\n2",
            "",
        ] {
            assert_eq!(facebook_permalink(bad), "", "{bad}");
        }
    }

    fn fact(page: &str, metric: M, period: P, day: NaiveDate, breakdown: &str, value: f64) -> PageInsightFact {
        PageInsightFact {
            practice: "M83001".parse().unwrap(),
            page: page.parse().unwrap(),
            metric,
            graph_metric: "",
            period,
            day,
            breakdown: breakdown.into(),
            value,
            api_version: ApiVersion::new(2, 12),
            fetched_at: Utc::now(),
        }
    }

    fn rows(df: &DataFrame) -> Vec<(String, i32, String)> {
        let df = df.sort(["page_id", "day", "breakdown"], Default::default()).unwrap();
        let pages = df.column("page_id").unwrap().str().unwrap().clone();
        let days = df.column("day").unwrap().cast(&DataType::Int32).unwrap();
        let days = days.i32().unwrap().clone();
        let keys = df.column("breakdown").unwrap().str().unwrap().clone();
        (0..df.height())
            .map(|i| (pages.get(i).unwrap().to_owned(), days.get(i).unwrap(), keys.get(i).unwrap().to_owned()))
            .collect()
    }

    /// `series_many` gathers each page's days while its run lasts: a page whose rows come in two runs (another page
    /// between), a pair not wanted between wanted ones, a breakdown row and a repeated day, within a run (the run
    /// that creates the page's map, too) or across runs (the later value wins, as a map insert would), all give the
    /// maps a row-by-row insert gives.
    #[test]
    fn series_many_gives_what_inserting_row_by_row_gives_whatever_the_runs() {
        let rows: &[(&str, M, P, i32, &str, f64)] = &[
            ("p1", M::PageReach, P::Day, 10, "", 1.0),
            ("p1", M::PageReach, P::Day, 11, "", 2.0),
            ("p1", M::PageReach, P::Day, 10, "", 1.5),
            ("p2", M::PageReach, P::Day, 10, "", 3.0),
            ("p2", M::PageReach, P::Day, 10, "", 3.5),
            ("p2", M::PageReach, P::Day, 10, "", 3.25),
            ("p1", M::PageReach, P::Day, 12, "", 4.0),
            ("p1", M::PageViews, P::Week, 10, "", 5.0),
            ("p1", M::PageViews, P::Day, 10, "", 6.0),
            ("p1", M::PageViews, P::Day, 10, "F.25-34", 7.0),
            ("p1", M::PageReach, P::Day, 11, "", 8.0),
            ("p2", M::PageViews, P::Day, 13, "", 9.0),
        ];
        let df = df![
            "page_id" => rows.iter().map(|r| r.0).collect::<Vec<_>>(),
            "metric" => rows.iter().map(|r| r.1.as_str()).collect::<Vec<_>>(),
            "period" => rows.iter().map(|r| r.2.as_str()).collect::<Vec<_>>(),
            "day" => rows.iter().map(|r| r.3).collect::<Vec<_>>(),
            "breakdown" => rows.iter().map(|r| r.4).collect::<Vec<_>>(),
            "value" => rows.iter().map(|r| r.5).collect::<Vec<_>>(),
        ]
        .unwrap();
        let df = df.lazy().with_column(col("day").cast(DataType::Date)).collect().unwrap();
        let wanted: Wanted = &[(M::PageViews, P::Day), (M::PageReach, P::Day)];
        let got = series_many(&df, wanted).unwrap();
        let mut expected: Vec<std::collections::BTreeMap<String, std::collections::BTreeMap<i32, f64>>> =
            vec![Default::default(); wanted.len()];
        for (page, m, p, day, key, value) in rows {
            if let (Some(k), true) = (wanted.iter().position(|w| *w == (*m, *p)), key.is_empty()) {
                expected[k].entry(page.to_string()).or_default().insert(*day, *value);
            }
        }
        assert_eq!(got, expected);
        // p1's day 10 repeats within its first run (the map's first insert), p2's day 10 three times within its only
        // run: the last written wins in both.
        assert_eq!(got[1]["p1"], std::collections::BTreeMap::from([(10, 1.5), (11, 8.0), (12, 4.0)]));
        assert_eq!(got[1]["p2"], std::collections::BTreeMap::from([(10, 3.25)]));
        assert_eq!(got[0]["p1"], std::collections::BTreeMap::from([(10, 6.0)]));
    }

    /// A stored pair that is not wanted, though its metric and its period each are (the cross product of the wanted
    /// metrics and periods), is never loaded, as totals or as breakdowns, and the wanted pairs come whole.
    #[test]
    fn a_pair_not_wanted_is_not_loaded_though_its_metric_and_period_each_are() {
        let dir = tempfile::tempdir().unwrap();
        let lake = pulse_store::lake::LakeStore::open(dir.path()).unwrap();
        let access = pulse_config::testing::operator([TenantId::new("t1").unwrap()]);
        let (from, to) = (NaiveDate::from_ymd_opt(2026, 3, 1).unwrap(), NaiveDate::from_ymd_opt(2026, 3, 31).unwrap());
        let page = "100000000001";
        let mut facts = Vec::new();
        for i in 0..31 {
            let day = from + Duration::days(i);
            let v = i as f64;
            facts.push(fact(page, M::PageReach, P::Day, day, "", 1.0 + v));
            facts.push(fact(page, M::PageReach, P::Week, day, "", 1000.0 + v));
            facts.push(fact(page, M::PageViews, P::Day, day, "", 2000.0 + v));
            facts.push(fact(page, M::PageViews, P::Week, day, "", 3000.0 + v));
            facts.push(fact(page, M::PageFollowersByAgeGender, P::Day, day, "F.25-34", 4000.0 + v));
            facts.push(fact(page, M::PageFollowersByAgeGender, P::Days28, day, "F.25-34", 5000.0 + v));
            facts.push(fact(page, M::PageEngagedByAgeGender, P::Day, day, "F.25-34", 6000.0 + v));
            facts.push(fact(page, M::PageEngagedByAgeGender, P::Days28, day, "F.25-34", 7000.0 + v));
        }
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(lake.write_page_insights(&access.write_scope("t1").unwrap(), &facts)).unwrap();
        let scope = access.scope("t1").unwrap();
        let files = rt.block_on(lake.fact_files(&scope, &FactFilter::days(from, to))).unwrap().unwrap();
        let totals: Wanted = &[(M::PageReach, P::Day), (M::PageViews, P::Week)];
        let ages: Wanted = &[(M::PageFollowersByAgeGender, P::Day), (M::PageEngagedByAgeGender, P::Days28)];
        let loaded = load_fact_files(&files, totals, ages, from, from, to).unwrap();
        let pairs = |df: &DataFrame| {
            let m = df.column(F::METRIC).unwrap().str().unwrap().clone();
            let p = df.column(F::PERIOD).unwrap().str().unwrap().clone();
            let mut counts = std::collections::BTreeMap::<(String, String), usize>::new();
            for (m, p) in m.iter().zip(p.iter()) {
                *counts.entry((m.unwrap().to_owned(), p.unwrap().to_owned())).or_default() += 1;
            }
            counts
        };
        let count = |m: M, p: P, n: usize| ((m.as_str().to_owned(), p.as_str().to_owned()), n);
        assert_eq!(
            pairs(&loaded.totals),
            [count(M::PageReach, P::Day, 31), count(M::PageViews, P::Week, 31)].into_iter().collect()
        );
        // Breakdowns: March 2026's Sundays (1, 8, 15, 22, 29) and the latest day, for each wanted pair.
        assert_eq!(
            pairs(&loaded.breakdowns),
            [count(M::PageFollowersByAgeGender, P::Day, 6), count(M::PageEngagedByAgeGender, P::Days28, 6)]
                .into_iter()
                .collect()
        );
        let exact = scan_fact_files(&files, totals, from, to).unwrap().collect().unwrap();
        assert_eq!(pairs(&exact), pairs(&loaded.totals));
    }

    /// Page 1 has breakdowns every day; page 2's stopped two months before the range's end: each keeps its Sundays'
    /// windows and its latest, and a breakdown after `to` or before `from` is never taken. Rows read from a store that
    /// is not the lake (split in memory) give the same frames.
    #[test]
    fn each_page_keeps_its_weekly_windows_and_its_latest_and_totals_stay_whole() {
        let dir = tempfile::tempdir().unwrap();
        let lake = pulse_store::lake::LakeStore::open(dir.path()).unwrap();
        let access = pulse_config::testing::operator([TenantId::new("t1").unwrap()]);
        let (from, to) = (NaiveDate::from_ymd_opt(2026, 1, 1).unwrap(), NaiveDate::from_ymd_opt(2026, 6, 30).unwrap());
        let mut facts = Vec::new();
        for i in -10..200 {
            let day = from + Duration::days(i);
            // Values that differ by day, page and key, so a value out of its place shows.
            let v = i as f64;
            facts.push(fact("100000000001", M::PageReach, P::Day, day, "", 50.0 + v));
            facts.push(fact("100000000002", M::PageReach, P::Day, day, "", 600.0 + v));
            facts.push(fact("100000000001", M::PageFollowersByAgeGender, P::Day, day, "F.25-34", 10.0 + v));
            if day <= to - Duration::days(60) {
                facts.push(fact("100000000002", M::PageFollowersByAgeGender, P::Day, day, "M.35-44", 2000.0 + v));
            }
        }
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(lake.write_page_insights(&access.write_scope("t1").unwrap(), &facts)).unwrap();
        let scope = access.scope("t1").unwrap();
        let files = rt.block_on(lake.fact_files(&scope, &FactFilter::days(from, to))).unwrap().unwrap();
        let totals: Wanted = &[(M::PageReach, P::Day)];
        let ages: Wanted = &[(M::PageFollowersByAgeGender, P::Day)];
        let loaded = load_fact_files(&files, totals, ages, from, from, to).unwrap();
        let to_n = day_number(to);
        let sundays = |lo: i32, hi: i32| (lo..=hi).filter(|d| d % 7 == 3).collect::<Vec<_>>();
        let mut expected: Vec<(String, i32, String)> = Vec::new();
        // Page 1 has a breakdown every day: its Sundays and its latest day (the range's last, a Tuesday).
        assert_ne!(to_n % 7, 3, "the test's last day is not a Sunday");
        for d in sundays(day_number(from), to_n).into_iter().chain([to_n]) {
            expected.push(("100000000001".into(), d, "F.25-34".into()));
        }
        // Page 2's stopped 60 days before the end: its Sundays until then, the last of them its latest.
        for d in sundays(day_number(from), to_n - 60) {
            expected.push(("100000000002".into(), d, "M.35-44".into()));
        }
        expected.sort();
        assert_eq!(rows(&loaded.breakdowns), expected);
        // Totals: every day of the range for both pages, and no breakdown rows.
        assert_eq!(loaded.totals.height(), 2 * (day_number(to) - day_number(from) + 1) as usize);
        assert!(rows(&loaded.totals).iter().all(|(_, _, k)| k.is_empty()));
        let in_memory = Facts::split(
            scan_fact_files(&files, &[totals[0], ages[0]], from, to).unwrap().collect().unwrap(),
            from,
            to,
        )
        .unwrap();
        assert_eq!(rows(&in_memory.breakdowns), rows(&loaded.breakdowns));
        assert_eq!(rows(&in_memory.totals), rows(&loaded.totals));
        // From series, as a server hands them over (here the default grouping of the lake's rows), with the
        // filters `jobs::load` gives a store: the same frames, every column.
        let series = |f: FactFilter| rt.block_on(lake.read_fact_series(&scope, &f)).unwrap();
        let from_series = Facts::from_series(
            &series(FactFilter::days(from, to).metrics([M::PageReach]).periods([P::Day])),
            totals,
            &series(
                FactFilter::days(from, to)
                    .metrics([M::PageFollowersByAgeGender])
                    .periods([P::Day])
                    .sundays_or_from(to - Duration::days(6)),
            ),
            ages,
            to,
        )
        .unwrap();
        let sorted = |df: &DataFrame| {
            df.select([F::PRACTICE_CODE, F::PAGE_ID, F::METRIC, F::PERIOD, F::DAY, F::BREAKDOWN, F::VALUE])
                .unwrap()
                .sort([F::PAGE_ID, F::METRIC, F::PERIOD, F::DAY, F::BREAKDOWN], Default::default())
                .unwrap()
        };
        assert!(sorted(&from_series.totals).equals_missing(&sorted(&loaded.totals)), "totals from series");
        assert!(sorted(&from_series.breakdowns).equals_missing(&sorted(&loaded.breakdowns)), "breakdowns from series");
        assert_eq!(from_series.breakdowns.height(), expected.len());
    }
}
