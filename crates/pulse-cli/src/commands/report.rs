//! `pulse report`: read one tenant's report table, filtered, as a table with charts, CSV, JSON or Parquet.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use arrow::array::{Array, BooleanArray, Date32Array, Float64Array, StringArray, UInt32Array};
use arrow::record_batch::RecordBatch;
use chrono::NaiveDate;
use clap::{Args, ValueEnum};
use pulse_domain::Principal;
use pulse_store::report::{
    AGE_BANDS, CAMPAIGN_UPLIFT, DATA_QUALITY, POST_PERFORMANCE, REACH_TENANT_WEEKLY, REACH_WEEKLY,
};
use pulse_store::{ReportTable, ReportType, Store};

use crate::commands::jobs::sparkline;
use crate::open;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    /// Weekly reach per page (API weekly uniques), views, engagement rate, change, outliers.
    Reach,
    /// The tenant's weekly roll-up (gross reach).
    ReachTenant,
    /// Engagement by age band and gender, per practice and tenant, with penetration.
    AgeBands,
    /// Campaign uplift with intervals.
    Campaigns,
    /// Posts ranked by reach, by type and topic.
    Posts,
    /// Gaps, stale pages, re-authorisation, impossible values.
    Quality,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Csv,
    Json,
    Parquet,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Which report.
    kind: Kind,
    /// Tenant (required when the config has more than one).
    #[arg(long)]
    tenant: Option<String>,
    /// Only this practice (ODS code).
    #[arg(long)]
    practice: Option<String>,
    /// First day (on the report's date column).
    #[arg(long)]
    from: Option<NaiveDate>,
    /// Last day.
    #[arg(long)]
    to: Option<NaiveDate>,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
    /// Write here instead of stdout (required for parquet).
    #[arg(long)]
    out: Option<PathBuf>,
}

fn table_of(kind: Kind) -> (&'static ReportTable, Option<&'static str>) {
    match kind {
        Kind::Reach => (&REACH_WEEKLY, Some("week_ending")),
        Kind::ReachTenant => (&REACH_TENANT_WEEKLY, Some("week_ending")),
        Kind::AgeBands => (&AGE_BANDS, Some("window_end")),
        Kind::Campaigns => (&CAMPAIGN_UPLIFT, Some("window_from")),
        Kind::Posts => (&POST_PERFORMANCE, Some("created")),
        Kind::Quality => (&DATA_QUALITY, Some("day_to")),
    }
}

fn day(d: NaiveDate) -> i32 {
    (d - NaiveDate::from_ymd_opt(1970, 1, 1).expect("valid")).num_days() as i32
}

pub async fn run(path: &Path, args: ReportArgs) -> Result<ExitCode> {
    let config = open::config(path)?;
    let store = open::store(&config)?;
    let access = config.access(Principal::Operator);
    let tenant = match &args.tenant {
        Some(t) => t.clone(),
        None if config.tenants.len() == 1 => config.tenants[0].id.to_string(),
        None => bail!(
            "--tenant is required: this config has {} tenants ({})",
            config.tenants.len(),
            config.tenants.iter().map(|t| t.id.to_string()).collect::<Vec<_>>().join(", ")
        ),
    };
    let scope = access.scope(&tenant)?;
    if let Some(p) = &args.practice {
        let t = config.tenant(scope.tenant()).context("tenant")?;
        if !t.practices.iter().any(|x| x.code.as_str() == p) {
            bail!(
                "practice {p} is not one of tenant {tenant}'s {} practices; `pulse config check` lists them",
                t.practices.len()
            );
        }
    }
    let (table, date_col) = table_of(args.kind);
    let batch = store.read_report(&scope, table).await?;
    if batch.num_rows() == 0 {
        bail!("report {} for tenant {tenant} is empty: run `pulse jobs run --tenant {tenant}` first", table.name);
    }
    let filtered = filter(&batch, args.practice.as_deref(), date_col, args.from, args.to)?;
    if filtered.num_rows() == 0 {
        let span = date_col.map(|c| date_span(&batch, c)).unwrap_or_default();
        bail!("no rows of {} match the filters{span}", table.name);
    }
    let mut out: Box<dyn Write> = match (&args.out, args.format) {
        (None, Format::Parquet) => bail!("--format parquet needs --out <file>"),
        (Some(p), _) => Box::new(std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?),
        (None, _) => Box::new(std::io::stdout()),
    };
    match args.format {
        Format::Csv => {
            let mut w = arrow::csv::WriterBuilder::new().with_header(true).build(&mut out);
            w.write(&filtered)?;
        }
        Format::Json => {
            let mut w = arrow::json::ArrayWriter::new(&mut out);
            w.write(&filtered)?;
            w.finish()?;
            writeln!(out)?;
        }
        Format::Parquet => {
            let p = args.out.as_ref().expect("checked");
            let file = std::fs::File::create(p)?;
            let mut w = parquet::arrow::ArrowWriter::try_new(file, filtered.schema(), None)?;
            w.write(&filtered)?;
            w.close()?;
            eprintln!("wrote {} rows to {}", filtered.num_rows(), p.display());
        }
        Format::Table => {
            write!(out, "{}", render(table, &filtered))?;
            write!(out, "{}", chart(args.kind, &filtered))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn date_span(batch: &RecordBatch, col: &str) -> String {
    let Some(d) = batch.column_by_name(col).and_then(|c| c.as_any().downcast_ref::<Date32Array>().cloned()) else {
        return String::new();
    };
    let (lo, hi) = d.iter().flatten().fold((i32::MAX, i32::MIN), |(a, b), v| (a.min(v), b.max(v)));
    let f = |v: i32| NaiveDate::from_ymd_opt(1970, 1, 1).expect("valid") + chrono::Duration::days(v as i64);
    format!("; the report covers {} to {}", f(lo), f(hi))
}

fn filter(
    batch: &RecordBatch,
    practice: Option<&str>,
    date_col: Option<&str>,
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
) -> Result<RecordBatch> {
    let n = batch.num_rows();
    let practices =
        batch.column_by_name("practice_code").and_then(|c| c.as_any().downcast_ref::<StringArray>().cloned());
    let dates =
        date_col.and_then(|c| batch.column_by_name(c)).and_then(|c| c.as_any().downcast_ref::<Date32Array>().cloned());
    let mask: BooleanArray = (0..n)
        .map(|i| {
            let p_ok = match (practice, &practices) {
                (Some(p), Some(col)) => col.value(i) == p,
                _ => true,
            };
            let d_ok = match &dates {
                Some(d) => from.is_none_or(|f| d.value(i) >= day(f)) && to.is_none_or(|t| d.value(i) <= day(t)),
                None => true,
            };
            Some(p_ok && d_ok)
        })
        .collect();
    Ok(arrow::compute::filter_record_batch(batch, &mask)?)
}

fn cell(table: &ReportTable, batch: &RecordBatch, col: usize, row: usize) -> String {
    let a = batch.column(col);
    if a.is_null(row) {
        return "n/a".into();
    }
    match table.columns[col].ty {
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
        ReportType::I64 => format!("{:?}", a.slice(row, 1)),
    }
}

fn render(table: &ReportTable, batch: &RecordBatch) -> String {
    let widths: Vec<usize> = (0..table.columns.len())
        .map(|c| {
            (0..batch.num_rows())
                .map(|r| cell(table, batch, c, r).chars().count().min(60))
                .max()
                .unwrap_or(0)
                .max(table.columns[c].name.len())
        })
        .collect();
    let mut out = String::new();
    for (c, w) in widths.iter().enumerate() {
        out.push_str(&format!("{:<w$}  ", table.columns[c].name, w = w));
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
fn chart(kind: Kind, batch: &RecordBatch) -> String {
    match kind {
        Kind::Reach | Kind::ReachTenant => {
            let col = if kind == Kind::Reach { "reach" } else { "gross_reach" };
            let v: Vec<f64> = f64s(batch, col).into_iter().flatten().collect();
            if v.is_empty() { String::new() } else { format!("\n{col} over the weeks: {}\n", sparkline(&v)) }
        }
        Kind::AgeBands => {
            let (levels, bands, shares) = (strs(batch, "level"), strs(batch, "age_band"), f64s(batch, "share"));
            let level = if levels.iter().any(|l| l == "tenant") { "tenant" } else { "practice" };
            let mut out = format!("\nshare of people by age band ({level}):\n");
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
                "\neffect with its 95% interval (|---●---|) around zero (┊), totals, each row to its own scale:\n",
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
        Kind::Posts | Kind::Quality => String::new(),
    }
}
