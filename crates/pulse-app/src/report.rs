//! Report queries: one tenant's report table, checked, filtered, sorted and cut, with practice names beside codes;
//! the format writers; the data dictionary. The CLI, the server and the digests all read reports through here.

use std::io::Write;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use arrow::array::{Array, ArrayRef, BooleanArray, Date32Array, Float64Array, Int64Array, StringArray, UInt32Array};
use arrow::compute::SortOptions;
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use chrono::NaiveDate;
use pulse_config::Access;
use pulse_config::Config;
use pulse_domain::{day_number, from_day_number};
use pulse_store::report::{
    AGE_BANDS, CAMPAIGN_SERIES, CAMPAIGN_UPLIFT, DATA_QUALITY, POST_PERFORMANCE, REACH_TENANT_WEEKLY, REACH_WEEKLY,
    REPORT_RUNS,
};
use pulse_store::{ReportTable, ReportType, ReportVariant, Store};

use crate::error::{AppError, AppResult, ErrorKind};
use crate::text::sparkline;

/// Which report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Weekly reach per page (API weekly uniques), views, engagement rate, change, outliers.
    Reach,
    /// The tenant's weekly roll-up (gross reach).
    ReachTenant,
    /// Engagement by age band and gender, per practice and tenant, with penetration.
    AgeBands,
    /// Campaign uplift with intervals.
    Campaigns,
    /// Observed and counterfactual daily series around each campaign (for charts).
    CampaignSeries,
    /// Posts ranked by reach, by type and topic.
    Posts,
    /// Gaps, stale pages, re-authorisation, impossible values.
    Quality,
}

impl Kind {
    pub const ALL: [Kind; 7] = [
        Kind::Reach,
        Kind::ReachTenant,
        Kind::AgeBands,
        Kind::Campaigns,
        Kind::CampaignSeries,
        Kind::Posts,
        Kind::Quality,
    ];

    pub fn table(self) -> &'static ReportTable {
        match self {
            Kind::Reach => &REACH_WEEKLY,
            Kind::ReachTenant => &REACH_TENANT_WEEKLY,
            Kind::AgeBands => &AGE_BANDS,
            Kind::Campaigns => &CAMPAIGN_UPLIFT,
            Kind::CampaignSeries => &CAMPAIGN_SERIES,
            Kind::Posts => &POST_PERFORMANCE,
            Kind::Quality => &DATA_QUALITY,
        }
    }

    /// The column `--from`, `--to` and `--latest-week` act on.
    pub fn date_column(self) -> &'static str {
        match self {
            Kind::Reach | Kind::ReachTenant => "week_ending",
            Kind::AgeBands => "window_end",
            Kind::Campaigns => "window_from",
            Kind::CampaignSeries => "day",
            Kind::Posts => "created",
            Kind::Quality => "day_to",
        }
    }

    /// What the report holds, in one line (for help texts and the dashboard).
    pub fn about(self) -> &'static str {
        match self {
            Kind::Reach => "weekly reach per page (API weekly uniques), views, engagement rate, change, outliers",
            Kind::ReachTenant => "the tenant's weekly roll-up (gross reach)",
            Kind::AgeBands => "engagement by age band and gender, per practice and tenant, with penetration",
            Kind::Campaigns => "campaign uplift with intervals",
            Kind::CampaignSeries => "observed and counterfactual daily series around each campaign",
            Kind::Posts => "posts ranked by reach, by type and topic",
            Kind::Quality => "gaps, stale pages, re-authorisation, impossible values",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Reach => "reach",
            Kind::ReachTenant => "reach-tenant",
            Kind::AgeBands => "age-bands",
            Kind::Campaigns => "campaigns",
            Kind::CampaignSeries => "campaign-series",
            Kind::Posts => "posts",
            Kind::Quality => "quality",
        }
    }
}

impl std::str::FromStr for Kind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Kind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| format!("no report `{s}`; the reports are {}", Kind::ALL.map(Kind::name).join(", ")))
    }
}

/// What a reader asks for.
#[derive(Debug, Clone)]
pub struct ReportQuery {
    pub kind: Kind,
    /// Required when the access sees more than one tenant.
    pub tenant: Option<String>,
    /// Only this practice (ODS code).
    pub practice: Option<String>,
    pub from: Option<NaiveDate>,
    pub to: Option<NaiveDate>,
    /// Only the latest week (or window) in the report.
    pub latest_week: bool,
    /// Sort by this column; `-column` for descending.
    pub sort: Option<String>,
    /// Skip this many rows (after sorting), for paging with `top`.
    pub offset: Option<usize>,
    /// Keep the first N rows (after sorting and `offset`).
    pub top: Option<usize>,
    /// `main` (default) or a named variant written by a narrower `pulse jobs run`.
    pub variant: Option<String>,
}

impl ReportQuery {
    pub fn new(kind: Kind) -> Self {
        Self {
            kind,
            tenant: None,
            practice: None,
            from: None,
            to: None,
            latest_week: false,
            sort: None,
            offset: None,
            top: None,
            variant: None,
        }
    }
}

/// The pipelines run a report came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunInfo {
    pub run_id: String,
    pub range_from: NaiveDate,
    pub range_to: NaiveDate,
    pub computed_at: String,
}

/// A report's answer: the rows (with `practice_name` beside `practice_code`), where they came from, and a note when
/// there are none.
#[derive(Debug)]
pub struct ReportAnswer {
    pub kind: Kind,
    pub tenant: String,
    pub batch: RecordBatch,
    pub run: Option<RunInfo>,
    /// Why there are no rows, when there are none (an empty answer is a valid answer).
    pub empty_note: Option<String>,
    /// Rows matching the query before paging, and where this page starts: `batch` holds rows `offset..offset+len`
    /// of `total`, so a caller can always tell whether it has them all.
    pub total: usize,
    pub offset: usize,
}

impl ReportAnswer {
    /// Whether rows matching the query follow this page.
    pub fn more(&self) -> bool {
        self.offset + self.batch.num_rows() < self.total
    }
}

/// The pipelines run a tenant's main reports came from (`None` before the first), for `access`.
pub async fn main_run<S: Store>(store: &S, access: &Access, tenant: &str) -> AppResult<Option<RunInfo>> {
    let scope = crate::tenant::resolve(access, Some(tenant), "tenant", "name one of your tenants")?;
    let runs = store.read_report(&scope, &REPORT_RUNS, &ReportVariant::main()).await?;
    Ok(run_info(&runs))
}

/// Runs a query for `access` (whose tenants it may read) on `store`.
pub async fn query<S: Store>(store: &S, config: &Config, access: &Access, q: &ReportQuery) -> AppResult<ReportAnswer> {
    let scope =
        crate::tenant::resolve(access, q.tenant.as_deref(), "tenant", "name one (--tenant, or site_id in the API)")?;
    let tenant = scope.to_string();
    let tenant_config = config
        .tenant(scope.tenant())
        .ok_or_else(|| AppError::forbidden(format!("tenant `{tenant}` is not in the config")))?;
    if let Some(p) = &q.practice
        && !tenant_config.practices.iter().any(|x| x.code.as_str() == p)
    {
        return Err(AppError::bad_request(format!(
            "practice {p} is not one of tenant {tenant}'s {} practices",
            tenant_config.practices.len()
        ))
        .with_hint("use the ODS code of one of the tenant's practices (`pulse config check` lists them)")
        .at("practice"));
    }
    let variant = match q.variant.as_deref() {
        None | Some("main") => ReportVariant::main(),
        Some(v) => ReportVariant::named(v)?,
    };
    let table = q.kind.table();
    let runs = store.read_report(&scope, &REPORT_RUNS, &variant).await?;
    let run = run_info(&runs);
    let batch = store.read_report(&scope, table, &variant).await?;
    if run.is_none() && batch.num_rows() == 0 {
        return Err(AppError::new(
            ErrorKind::NotReady,
            format!("report {} ({variant}) for tenant {tenant} has not been computed", q.kind.name()),
        )
        .with_hint(format!("run `pulse jobs run --tenant {tenant}` first")));
    }
    let date_col = q.kind.date_column();
    let mut to = q.to;
    let mut from = q.from;
    // Age bands keep a 28-day window a week: without a range the latest window answers (all windows at once would
    // count each person in up to four of them).
    let latest_window = q.kind == Kind::AgeBands && q.from.is_none() && q.to.is_none();
    if q.latest_week || latest_window {
        let latest = dates(&batch, date_col).into_iter().max();
        if let Some(d) = latest {
            from = Some(from_day_number(d).max(from.unwrap_or(NaiveDate::MIN)));
            to = Some(from_day_number(d).min(to.unwrap_or(NaiveDate::MAX)));
        }
    }
    let mut out = filter(&batch, q.practice.as_deref(), date_col, from, to).map_err(AppError::from)?;
    if let Some(sort) = &q.sort {
        out = sort_by(&out, sort).map_err(|e| AppError::bad_request(format!("{e:#}")).at("sort"))?;
    }
    let total = out.num_rows();
    let skip = q.offset.unwrap_or(0).min(total);
    let keep = q.top.unwrap_or(usize::MAX).min(total - skip);
    out = out.slice(skip, keep);
    let names = tenant_config.practices.iter().map(|p| (p.code.to_string(), p.name.clone())).collect();
    let out = with_practice_names(&out, &names).map_err(AppError::from)?;
    let empty_note = (out.num_rows() == 0).then(|| {
        if batch.num_rows() == 0 {
            match q.kind {
                Kind::Quality => {
                    "no issues: no gaps, stale pages, pages needing re-authorisation or impossible values".to_owned()
                }
                _ => format!("the {} report has no rows for tenant {tenant}", q.kind.name()),
            }
        } else {
            let span = date_span(&batch, date_col);
            format!("no rows match the filters{span}")
        }
    });
    Ok(ReportAnswer { kind: q.kind, tenant, batch: out, run, empty_note, total, offset: skip })
}

fn run_info(runs: &RecordBatch) -> Option<RunInfo> {
    if runs.num_rows() == 0 {
        return None;
    }
    let s = |name: &str| {
        runs.column_by_name(name).and_then(|c| c.as_any().downcast_ref::<StringArray>().map(|a| a.value(0).to_owned()))
    };
    let d = |name: &str| dates(runs, name).first().copied().map(from_day_number);
    Some(RunInfo {
        run_id: s("run_id")?,
        range_from: d("range_from")?,
        range_to: d("range_to")?,
        computed_at: s("computed_at")?,
    })
}

fn dates(batch: &RecordBatch, col: &str) -> Vec<i32> {
    batch
        .column_by_name(col)
        .and_then(|c| c.as_any().downcast_ref::<Date32Array>().map(|d| d.iter().flatten().collect()))
        .unwrap_or_default()
}

fn date_span(batch: &RecordBatch, col: &str) -> String {
    let d = dates(batch, col);
    match (d.iter().min(), d.iter().max()) {
        (Some(lo), Some(hi)) => format!("; the report covers {} to {}", from_day_number(*lo), from_day_number(*hi)),
        _ => String::new(),
    }
}

fn filter(
    batch: &RecordBatch,
    practice: Option<&str>,
    date_col: &str,
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
) -> Result<RecordBatch> {
    let n = batch.num_rows();
    let practices =
        batch.column_by_name("practice_code").and_then(|c| c.as_any().downcast_ref::<StringArray>().cloned());
    let dates = batch.column_by_name(date_col).and_then(|c| c.as_any().downcast_ref::<Date32Array>().cloned());
    let mask: BooleanArray = (0..n)
        .map(|i| {
            let p_ok = match (practice, &practices) {
                (Some(p), Some(col)) => col.value(i) == p,
                _ => true,
            };
            let d_ok = match &dates {
                Some(d) => {
                    from.is_none_or(|f| d.value(i) >= day_number(f)) && to.is_none_or(|t| d.value(i) <= day_number(t))
                }
                None => true,
            };
            Some(p_ok && d_ok)
        })
        .collect();
    Ok(arrow::compute::filter_record_batch(batch, &mask)?)
}

/// Sorts by one column (`-name` for descending); missing figures go last either way.
fn sort_by(batch: &RecordBatch, spec: &str) -> Result<RecordBatch> {
    let (name, descending) = match spec.strip_prefix('-') {
        Some(n) => (n, true),
        None => (spec, false),
    };
    let Some(column) = batch.column_by_name(name) else {
        let names: Vec<String> = batch.schema().fields().iter().map(|f| f.name().clone()).collect();
        bail!("cannot sort by `{name}`: not a column of this report (columns: {})", names.join(", "));
    };
    let indices = arrow::compute::sort_to_indices(column, Some(SortOptions { descending, nulls_first: false }), None)?;
    let columns =
        batch.columns().iter().map(|c| arrow::compute::take(c, &indices, None)).collect::<Result<Vec<_>, _>>()?;
    Ok(RecordBatch::try_new(batch.schema(), columns)?)
}

/// Adds `practice_name` right after `practice_code` (ALL, the tenant total, is named as such).
pub(crate) fn with_practice_names(
    batch: &RecordBatch,
    names: &std::collections::BTreeMap<String, String>,
) -> Result<RecordBatch> {
    let Some(at) = batch.schema().index_of("practice_code").ok() else { return Ok(batch.clone()) };
    let codes = batch.column(at).as_any().downcast_ref::<StringArray>().context("practice_code is text")?;
    let named: StringArray = codes
        .iter()
        .map(|c| {
            Some(match c {
                Some("ALL") => "all practices".to_owned(),
                Some(c) => names.get(c).cloned().unwrap_or_default(),
                None => String::new(),
            })
        })
        .collect();
    let mut fields: Vec<Arc<Field>> = batch.schema().fields().iter().cloned().collect();
    let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
    fields.insert(at + 1, Arc::new(Field::new("practice_name", DataType::Utf8, false)));
    columns.insert(at + 1, Arc::new(named));
    Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?)
}

/// A column's type: the table's declaration, or text for the columns a query adds (practice_name).
fn column_type(table: &ReportTable, batch: &RecordBatch, col: usize) -> ReportType {
    let name = batch.schema().field(col).name().clone();
    table.columns.iter().find(|c| c.name == name).map_or(ReportType::Str, |c| c.ty)
}

/// What a column measures, for the data dictionary and for writing counts as integers.
pub fn unit(kind: Kind, column: &str) -> &'static str {
    match column {
        "female" | "male" | "unknown" | "people" if kind == Kind::AgeBands => {
            "people, or ms of video watch time (the row's unit column says which)"
        }
        "reach"
        | "engaged_users"
        | "gross_reach"
        | "gross_engaged_users"
        | "median_page_reach"
        | "female"
        | "male"
        | "unknown"
        | "people"
        | "registered"
        | "followers"
        | "follower_growth" => "people",
        "views" | "video_views" => "views",
        "engagements" => "engagements",
        "pages" | "posts" | "count" | "days_with_data" | "tenant_rank" | "facts" | "rows" => "count",
        "post_lifetime" | "observed" | "counterfactual" | "effect" | "effect_lo" | "effect_hi" => "metric units",
        "share" | "penetration" | "engagement_rate" | "reach_change" => "fraction",
        "lift_pct" => "percent",
        "p_value" | "interval_level" => "probability",
        "outlier_score" => "robust z-score",
        _ => "",
    }
}

/// Whether a column holds whole counts (written as integers in CSV, JSON and Parquet).
pub fn is_count(kind: Kind, column: &str) -> bool {
    let table = kind.table();
    let float = table.columns.iter().any(|c| c.name == column && matches!(c.ty, ReportType::F64 | ReportType::OptF64));
    let counted = matches!(unit(kind, column), "people" | "views" | "engagements" | "count")
        || kind == Kind::AgeBands && matches!(column, "female" | "male" | "unknown" | "people");
    float && counted && column != "median_page_reach"
}

/// The data dictionary of a report: column, type, unit, meaning (CSV).
pub fn dictionary(kind: Kind) -> String {
    let table = kind.table();
    let mut out = String::from("column,type,unit,meaning\n");
    let quote = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    for c in table.columns {
        let ty = if is_count(kind, c.name) {
            "integer (null when unavailable)".to_owned()
        } else {
            match c.ty {
                ReportType::Str => "text".into(),
                ReportType::Date => "date (US-Pacific day)".into(),
                ReportType::F64 => "number".into(),
                ReportType::OptF64 => "number (null when unavailable)".into(),
                ReportType::U32 | ReportType::I64 => "integer".into(),
            }
        };
        out.push_str(&format!("{},{},{},{}\n", c.name, quote(&ty), quote(unit(kind, c.name)), quote(c.doc)));
        if c.name == "practice_code" {
            out.push_str(
                "practice_name,text,,\"the practice's name from the configuration (all practices for ALL)\"\n",
            );
        }
    }
    out
}

/// The rows ready to export: counts rounded to integers.
pub fn export_batch(kind: Kind, batch: &RecordBatch) -> Result<RecordBatch> {
    let mut fields = Vec::new();
    let mut columns: Vec<ArrayRef> = Vec::new();
    for (f, c) in batch.schema().fields().iter().zip(batch.columns()) {
        if is_count(kind, f.name())
            && let Some(v) = c.as_any().downcast_ref::<Float64Array>()
        {
            let ints: Int64Array = v.iter().map(|x| x.map(|x| x.round() as i64)).collect();
            fields.push(Arc::new(Field::new(f.name(), DataType::Int64, f.is_nullable())));
            columns.push(Arc::new(ints));
        } else {
            fields.push(f.clone());
            columns.push(c.clone());
        }
    }
    Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?)
}

/// Why a figure is missing, per column, for JSON readers (the table shows n/a).
fn null_reason(kind: Kind, column: &str) -> &'static str {
    match (kind, column) {
        (Kind::Reach | Kind::ReachTenant, "engaged_users" | "gross_engaged_users") => {
            "Meta no longer reports engaged users for this period (page_engaged_users was retired on 2024-03-14), or the page had no value that week"
        }
        (_, "reach_change") => "no reach the week before to compare with",
        (_, "penetration" | "registered") => "no registered-patient counts for this practice and band",
        (Kind::AgeBands, _) => {
            "suppressed: Meta withholds breakdowns below 100 people, and bands under 10 are suppressed by us"
        }
        (Kind::Campaigns, _) => "not computed; the row's note says why",
        _ => "no value stored for this row",
    }
}

/// Writes the answer as CSV.
pub fn write_csv(answer: &ReportAnswer, out: &mut dyn Write) -> Result<()> {
    let batch = export_batch(answer.kind, &answer.batch)?;
    let mut w = arrow::csv::WriterBuilder::new().with_header(true).build(out);
    w.write(&batch)?;
    Ok(())
}

/// Writes the answer as a JSON array: every key present (null where a figure is unavailable), and a `null_reasons`
/// object on rows with nulls saying why.
pub fn write_json(answer: &ReportAnswer, out: &mut dyn Write) -> Result<()> {
    let batch = export_batch(answer.kind, &answer.batch)?;
    let mut buf = Vec::new();
    {
        let mut w = arrow::json::WriterBuilder::new()
            .with_explicit_nulls(true)
            .build::<_, arrow::json::writer::JsonArray>(&mut buf);
        w.write(&batch)?;
        w.finish()?;
    }
    let mut rows: Vec<serde_json::Map<String, serde_json::Value>> =
        if buf.is_empty() { Vec::new() } else { serde_json::from_slice(&buf)? };
    for row in &mut rows {
        let reasons: serde_json::Map<String, serde_json::Value> = row
            .iter()
            .filter(|(_, v)| v.is_null())
            .map(|(k, _)| (k.clone(), serde_json::Value::from(null_reason(answer.kind, k))))
            .collect();
        if !reasons.is_empty() {
            row.insert("null_reasons".into(), serde_json::Value::Object(reasons));
        }
    }
    serde_json::to_writer_pretty(&mut *out, &rows)?;
    writeln!(out)?;
    Ok(())
}

/// Writes the answer as Parquet, with the data dictionary beside it (`FILE.dictionary.csv`).
pub fn write_parquet(answer: &ReportAnswer, path: &std::path::Path) -> Result<()> {
    let file = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    write_parquet_to(answer, file)
}

/// Writes the answer as Parquet to any writer (a download).
pub fn write_parquet_to<W: Write + Send>(answer: &ReportAnswer, out: W) -> Result<()> {
    let batch = export_batch(answer.kind, &answer.batch)?;
    let mut w = parquet::arrow::ArrowWriter::try_new(out, batch.schema(), None)?;
    w.write(&batch)?;
    w.close()?;
    Ok(())
}

/// Where the dictionary of an export written to `path` goes.
pub fn dictionary_path(path: &std::path::Path) -> std::path::PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".dictionary.csv");
    path.with_file_name(name)
}

/// The answer as a person reads it: where it came from, the table, its chart, or why it is empty.
pub fn text(answer: &ReportAnswer) -> String {
    let table = answer.kind.table();
    let mut out = String::new();
    if let Some(r) = &answer.run {
        out.push_str(&format!(
            "{} · tenant {} · range {} to {} · computed {} (run {})\n",
            answer.kind.name(),
            answer.tenant,
            r.range_from,
            r.range_to,
            r.computed_at,
            r.run_id
        ));
    }
    if let Some(note) = &answer.empty_note {
        out.push_str(note);
        out.push('\n');
        return out;
    }
    out.push_str(&render(table, &answer.batch));
    out.push_str(&chart(answer.kind, &answer.batch));
    if let Some(note) = engaged_users_note(answer) {
        out.push_str(&note);
    }
    out
}

/// Why engaged users show n/a in a reach report: after Meta retired the metric, there is no value to show.
fn engaged_users_note(answer: &ReportAnswer) -> Option<String> {
    let column = match answer.kind {
        Kind::Reach => "engaged_users",
        Kind::ReachTenant => "gross_engaged_users",
        _ => return None,
    };
    let values = answer.batch.column_by_name(column)?;
    if values.null_count() == 0 {
        return None;
    }
    let weeks = dates(&answer.batch, answer.kind.date_column());
    let retired =
        pulse_domain::MetricCatalogue::default().retired_since(pulse_domain::CanonicalMetric::PageEngagedUsers);
    let after = retired.map_or(0, |r| weeks.iter().filter(|w| from_day_number(**w) >= r).count());
    Some(match retired {
        Some(r) if after > 0 => format!(
            "\n{column} n/a: Meta retired page_engaged_users on {r} with no replacement, so weeks ending on or after it \
             have no value ({after} of {} rows); earlier n/a weeks had no value from the API\n",
            weeks.len()
        ),
        _ => format!("\n{column} n/a: the API returned no engaged-users value for those weeks\n"),
    })
}

fn cell(table: &ReportTable, batch: &RecordBatch, col: usize, row: usize) -> String {
    let a = batch.column(col);
    let ty = column_type(table, batch, col);
    if a.is_null(row) {
        return "n/a".into();
    }
    match ty {
        ReportType::Str => {
            a.as_any().downcast_ref::<StringArray>().map(|s| s.value(row).to_owned()).unwrap_or_default()
        }
        ReportType::Date => a
            .as_any()
            .downcast_ref::<Date32Array>()
            .and_then(|d| d.value_as_date(row))
            .map(|d| d.to_string())
            .unwrap_or_default(),
        ReportType::F64 | ReportType::OptF64 => {
            let v = a.as_any().downcast_ref::<Float64Array>().map(|f| f.value(row)).unwrap_or(f64::NAN);
            if v.abs() < 10.0 && v.fract() != 0.0 { format!("{v:.3}") } else { format!("{v:.0}") }
        }
        ReportType::U32 => {
            a.as_any().downcast_ref::<UInt32Array>().map(|u| u.value(row).to_string()).unwrap_or_default()
        }
        ReportType::I64 => {
            a.as_any().downcast_ref::<Int64Array>().map(|u| u.value(row).to_string()).unwrap_or_default()
        }
    }
}

/// The rows as a text table (n/a for a missing figure), columns as wide as their widest value (at most 60).
pub fn render(table: &ReportTable, batch: &RecordBatch) -> String {
    let widths: Vec<usize> = (0..batch.num_columns())
        .map(|c| {
            (0..batch.num_rows())
                .map(|r| cell(table, batch, c, r).chars().count().min(60))
                .max()
                .unwrap_or(0)
                .max(batch.schema().field(c).name().len())
        })
        .collect();
    let mut out = String::new();
    for (c, w) in widths.iter().enumerate() {
        out.push_str(&format!("{:<w$}  ", batch.schema().field(c).name(), w = w));
    }
    out.push('\n');
    for r in 0..batch.num_rows() {
        for (c, w) in widths.iter().enumerate() {
            let mut v = cell(table, batch, c, r);
            if v.chars().count() > 60 {
                v = v.chars().take(57).collect::<String>() + "...";
            }
            out.push_str(&format!("{v:<w$}  ", w = w));
        }
        out.push('\n');
    }
    out
}

fn f64s(batch: &RecordBatch, name: &str) -> Vec<Option<f64>> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<Float64Array>().cloned())
        .map(|a| a.iter().collect())
        .unwrap_or_default()
}

fn strs(batch: &RecordBatch, name: &str) -> Vec<String> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<StringArray>().cloned())
        .map(|a| a.iter().map(|s| s.unwrap_or("").to_owned()).collect())
        .unwrap_or_default()
}

/// A picture of the numbers under the table.
pub fn chart(kind: Kind, batch: &RecordBatch) -> String {
    match kind {
        Kind::Reach | Kind::ReachTenant => {
            let col = if kind == Kind::Reach { "reach" } else { "gross_reach" };
            let v: Vec<f64> = f64s(batch, col).into_iter().flatten().collect();
            if v.is_empty() { String::new() } else { format!("\n{col} over the weeks: {}\n", sparkline(&v)) }
        }
        Kind::AgeBands => {
            let (levels, bands, shares) = (strs(batch, "level"), strs(batch, "age_band"), f64s(batch, "share"));
            let level = if levels.iter().any(|l| l == "tenant") { "tenant" } else { "practice" };
            let source = strs(batch, "source").into_iter().next().unwrap_or_default();
            let unit = strs(batch, "unit").into_iter().next().unwrap_or_default();
            let what = if unit == "people" { "share of people" } else { "share of video watch time (not people)" };
            let mut out = format!("\n{what} by age band ({level}; source {source}):\n");
            let max = shares.iter().flatten().fold(0.0f64, |a, b| a.max(*b)).max(1e-9);
            for i in 0..levels.len() {
                if levels[i] == level {
                    let s = shares[i].unwrap_or(0.0);
                    out.push_str(&format!(
                        "  {:>6} {:<40} {:>5.1}%\n",
                        bands[i],
                        "█".repeat((s / max * 40.0).round() as usize),
                        s * 100.0
                    ));
                }
            }
            out
        }
        Kind::Campaigns => {
            let (names, practices, metrics) =
                (strs(batch, "campaign"), strs(batch, "practice_code"), strs(batch, "metric"));
            let (effect, lo, hi) = (f64s(batch, "effect"), f64s(batch, "effect_lo"), f64s(batch, "effect_hi"));
            let mut out = String::from(
                "\neffect with its interval (|---●---|, level in the interval_level column) around zero (┊), totals, each row to its own scale:\n",
            );
            for i in 0..names.len() {
                if practices[i] != "ALL" {
                    continue;
                }
                if let (Some(e), Some(l), Some(h)) = (effect[i], lo[i], hi[i]) {
                    let scale = l.abs().max(h.abs()).max(e.abs()).max(1.0);
                    let pos = |x: f64| ((x / scale + 1.0) * 20.0).round().clamp(0.0, 40.0) as usize;
                    let mut line = [' '; 41];
                    for c in line.iter_mut().take(pos(h) + 1).skip(pos(l)) {
                        *c = '-';
                    }
                    line[pos(l)] = '|';
                    line[pos(h)] = '|';
                    line[20] = if line[20] == ' ' { '┊' } else { line[20] };
                    line[pos(e)] = '●';
                    out.push_str(&format!(
                        "  {:<34} {:<12} {}\n",
                        names[i].chars().take(34).collect::<String>(),
                        metrics[i],
                        line.iter().collect::<String>()
                    ));
                }
            }
            out
        }
        Kind::Posts | Kind::Quality | Kind::CampaignSeries => String::new(),
    }
}
