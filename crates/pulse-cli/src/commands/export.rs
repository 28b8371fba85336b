//! `pulse export`: a research dataset as a Frictionless data package ([`pulse_app::export`] does the work).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;
use chrono::NaiveDate;
use clap::Args;
use pulse_app::export::{self, ExportSpec};
use pulse_app::open;

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The export project from `[[export_project]]` (its key pseudonymises; its licence goes into the package).
    #[arg(long)]
    project: String,
    /// Why: the data-sharing agreement or study reference (written into the package).
    #[arg(long)]
    purpose: String,
    /// Tenant to include; repeat for several (default: the config's only tenant).
    #[arg(long)]
    tenant: Vec<String>,
    /// First day (weeks, windows and campaigns starting on or after it).
    #[arg(long)]
    from: Option<NaiveDate>,
    /// Last day.
    #[arg(long)]
    to: Option<NaiveDate>,
    /// A new (or empty) directory for the package.
    #[arg(long)]
    out: PathBuf,
}

pub async fn run(path: &Path, args: ExportArgs) -> Result<ExitCode> {
    let config = open::config(path)?;
    let store = open::store(&config)?;
    let spec =
        ExportSpec { tenants: args.tenant, from: args.from, to: args.to, project: args.project, purpose: args.purpose };
    let access = config.operator_access();
    let outcome = export::run(&store, &config, &access, &spec, &args.out, &mut |s| crate::errln!("{s}")).await?;
    crate::outln!("package: {}", outcome.dir.display());
    for (table, rows) in &outcome.rows {
        crate::outln!("  {table:<14} {rows:>8} rows");
    }
    crate::outln!(
        "  {} cells suppressed ({} secondary); checksums in SHA256SUMS; validate with `frictionless validate {}`",
        outcome.suppressed,
        outcome.secondary,
        outcome.dir.join("datapackage.json").display()
    );
    Ok(ExitCode::SUCCESS)
}
