//! `pulse report`: arguments in, [`pulse_app::report`] does the work, the answer out in the format asked for.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use chrono::NaiveDate;
use clap::{Args, ValueEnum};
use pulse_app::report::{self, Kind, ReportQuery};

/// The report kinds as clap values, with their descriptions from the application layer.
fn kind_parser() -> impl clap::builder::TypedValueParser<Value = Kind> {
    let values = Kind::ALL.map(|k| clap::builder::PossibleValue::new(k.name()).help(k.about()));
    clap::builder::TypedValueParser::map(clap::builder::PossibleValuesParser::new(values), |s| {
        s.parse::<Kind>().expect("a listed report")
    })
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
    #[arg(required_unless_present = "describe", value_parser = kind_parser())]
    kind: Option<Kind>,
    /// Print the report's data dictionary (column, type, unit, meaning) as CSV, and nothing else.
    #[arg(long, value_name = "KIND", value_parser = kind_parser())]
    describe: Option<Kind>,
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
    /// Only the latest week (or window) the report has.
    #[arg(long)]
    latest_week: bool,
    /// Sort by a column; prefix with `-` for descending (`--sort=-reach`).
    #[arg(long, allow_hyphen_values = true)]
    sort: Option<String>,
    /// Keep the first N rows (after sorting and --offset).
    #[arg(long)]
    top: Option<usize>,
    /// Skip the first N rows (after sorting): with --top, a page of the report.
    #[arg(long)]
    offset: Option<usize>,
    /// Read a named variant written by `pulse jobs run --from/--to` (default: main).
    #[arg(long)]
    variant: Option<String>,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
    /// Write here instead of stdout (required for parquet); the data dictionary is written beside it.
    #[arg(long)]
    out: Option<PathBuf>,
}

pub async fn run(path: &Path, args: ReportArgs) -> Result<ExitCode> {
    if let Some(kind) = args.describe {
        crate::out(&report::dictionary(kind));
        return Ok(ExitCode::SUCCESS);
    }
    let kind = args.kind.context("which report?")?;
    let config = pulse_app::open::config(path)?;
    let store = pulse_app::open::store(&config)?;
    let query = ReportQuery {
        kind,
        tenant: args.tenant,
        practice: args.practice,
        from: args.from,
        to: args.to,
        latest_week: args.latest_week,
        sort: args.sort,
        top: args.top,
        offset: args.offset,
        variant: args.variant,
    };
    let answer = report::query(&store, &config, &config.operator_access(), &query).await?;
    let file = |p: &PathBuf| std::fs::File::create(p).with_context(|| format!("creating {}", p.display()));
    match (args.format, &args.out) {
        (Format::Parquet, None) => bail!("--format parquet needs --out <file>"),
        (Format::Parquet, Some(p)) => report::write_parquet(&answer, p)?,
        (Format::Csv, Some(p)) => report::write_csv(&answer, &mut file(p)?)?,
        (Format::Json, Some(p)) => report::write_json(&answer, &mut file(p)?)?,
        (Format::Table, Some(p)) => std::fs::write(p, report::text(&answer))?,
        (Format::Csv, None) => {
            let mut buf = Vec::new();
            report::write_csv(&answer, &mut buf)?;
            crate::out(&String::from_utf8_lossy(&buf));
        }
        (Format::Json, None) => {
            let mut buf = Vec::new();
            report::write_json(&answer, &mut buf)?;
            crate::out(&String::from_utf8_lossy(&buf));
        }
        (Format::Table, None) => crate::out(&report::text(&answer)),
    }
    if let Some(p) = &args.out {
        let dict = report::dictionary_path(p);
        std::fs::write(&dict, report::dictionary(kind))?;
        crate::errln!(
            "wrote {} rows to {} (data dictionary: {})",
            answer.batch.num_rows(),
            p.display(),
            dict.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}
