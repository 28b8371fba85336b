//! `pulse export`: a research dataset as a Frictionless data package ([`pulse_export`] does the work).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;
use chrono::NaiveDate;
use clap::Args;
use pulse_app::open;
use pulse_export::{self as export, ExportSpec};

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct ExportArgs {
    #[command(subcommand)]
    command: Option<ExportCommand>,
    /// The export project from `[[export_project]]` (its key pseudonymises; its licence goes into the package).
    #[arg(long, required = true)]
    project: Option<String>,
    /// Why: the data-sharing agreement or study reference (written into the package and the audit trail).
    #[arg(long, required = true)]
    purpose: Option<String>,
    /// Tenant to include; repeat for several (default: the config's only tenant).
    #[arg(long)]
    tenant: Vec<String>,
    /// First day (weeks, windows and campaigns starting on or after it).
    #[arg(long)]
    from: Option<NaiveDate>,
    /// Last day.
    #[arg(long)]
    to: Option<NaiveDate>,
    /// Only these tables (repeat): reach_daily (day grain), reach_weekly (week), age_bands (28-day windows),
    /// campaigns (campaign windows). Default: all.
    #[arg(long = "table", value_parser = ["reach_daily", "reach_weekly", "age_bands", "campaigns"])]
    tables: Vec<String>,
    /// Only this campaign in the campaigns table (repeat). Default: all.
    #[arg(long = "campaign")]
    campaigns: Vec<String>,
    /// Only this metric (repeat): reach, engaged_users, views, engagements, video_views. Narrows the reach tables'
    /// columns and the campaigns table's rows. Default: all.
    #[arg(long = "metric", value_parser = ["reach", "engaged_users", "views", "engagements", "video_views"])]
    metrics: Vec<String>,
    /// A new (or empty) directory for the package.
    #[arg(long, required = true)]
    out: Option<PathBuf>,
}

#[derive(Debug, clap::Subcommand)]
pub enum ExportCommand {
    /// The export audit trail: every export, who asked, why, which tenants, rows, when.
    Log {
        /// Only this tenant's exports.
        #[arg(long)]
        tenant: Option<String>,
        /// `json`: every record whole (spec, spec hash, each file's SHA-256), one JSON array.
        #[arg(long, default_value = "table", value_parser = ["table", "json"])]
        format: String,
    },
}

pub async fn run(path: &Path, args: ExportArgs) -> Result<ExitCode> {
    let config = open::config(path)?;
    let store = open::store(&config)?;
    let access = config.operator_access();
    if let Some(ExportCommand::Log { tenant, format }) = args.command {
        let log = export::log(&store, &access, tenant.as_deref()).await?;
        if format == "json" {
            let records: Vec<serde_json::Value> = log.iter().map(export::audit_json).collect();
            crate::outln!("{}", serde_json::to_string_pretty(&records).unwrap_or_default());
            return Ok(ExitCode::SUCCESS);
        }
        if log.is_empty() {
            crate::outln!("no exports recorded");
        }
        for r in log {
            let outcome =
                export::refusal(&r).map_or_else(|| format!("{} rows", r.rows), |why| format!("REFUSED: {why}"));
            crate::outln!(
                "{}  {}  by {}  project {}  tenants {}  {}  purpose: {}  spec {}",
                r.created_at.format("%Y-%m-%d %H:%M:%S"),
                r.export_id,
                r.requested_by,
                r.project,
                r.tenants,
                outcome,
                r.purpose,
                &r.spec_hash[..r.spec_hash.len().min(12)]
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let (Some(project), Some(purpose), Some(out)) = (args.project, args.purpose, args.out) else {
        anyhow::bail!("--project, --purpose and --out are required");
    };
    let spec = ExportSpec {
        tenants: args.tenant,
        from: args.from,
        to: args.to,
        project,
        purpose,
        requested_by: "operator".into(),
        tables: args.tables,
        campaigns: args.campaigns,
        metrics: args.metrics,
    };
    let outcome = export::run(&store, &config, &access, &spec, &out, &mut |s| crate::errln!("{s}")).await?;
    crate::outln!("package: {} ({})", outcome.dir.display(), outcome.export_id);
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
