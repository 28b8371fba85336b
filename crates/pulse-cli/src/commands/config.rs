//! `pulse config check`.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;

use pulse_app::open;

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate the config and print a summary: counts per tenant, the store, the Graph API, and pages whose token
    /// cannot be found. No secret is printed. Exit code 2 when the config is invalid.
    Check {
        /// Also fail (exit 1) when there is nothing to ingest: no tenant, a tenant without practices, or a page
        /// without a usable token.
        #[arg(long)]
        strict: bool,
    },
}

pub fn run(path: &Path, cmd: ConfigCommand) -> Result<ExitCode> {
    let ConfigCommand::Check { strict } = cmd;
    let config = open::config(path)?;
    let summary = config.summary();
    crate::outln!("{}: valid", path.display());
    crate::outln!("store: {}", summary.store);
    crate::outln!("graph: {}", summary.graph);
    crate::outln!();
    crate::outln!(
        "{:<20} {:>9} {:>13} {:>6} {:>8} {:>14}",
        "tenant",
        "practices",
        "without page",
        "pages",
        "claimed",
        "without token"
    );
    for t in &summary.tenants {
        crate::outln!(
            "{:<20} {:>9} {:>13} {:>6} {:>8} {:>14}",
            t.id,
            t.practices,
            t.practices_without_pages,
            t.pages,
            t.claimed_pages,
            t.pages_without_tokens.len()
        );
    }
    let missing: usize = summary.tenants.iter().map(|t| t.pages_without_tokens.len()).sum();
    if missing > 0 {
        crate::outln!();
        crate::outln!("{missing} page(s) have no usable token and will be skipped by ingest until fixed:");
        for t in &summary.tenants {
            for (page, practice, why) in &t.pages_without_tokens {
                crate::outln!("  {:<14} {practice}  page {page}: {why}", t.id);
            }
        }
    }
    crate::outln!();
    for line in &summary.digests {
        crate::outln!("{line}");
    }
    for w in &summary.warnings {
        crate::outln!("warning: {w}");
    }
    let mut refused = false;
    if !summary.export_projects.is_empty() {
        crate::outln!();
        for (name, text, bad) in &summary.export_projects {
            refused |= bad;
            crate::outln!("export project {name}: {}{text}", if *bad { "REFUSED: " } else { "" });
        }
    }
    if refused {
        crate::errln!("an export project is refused (see above); fix its key or tenants");
        return Ok(ExitCode::from(1));
    }
    let problems = summary.strict_problems();
    if strict && !problems.is_empty() {
        crate::errln!("--strict: {} problem(s):", problems.len());
        for p in &problems {
            crate::errln!("  {p}");
        }
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}
