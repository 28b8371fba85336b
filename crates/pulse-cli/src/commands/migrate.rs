//! `pulse migrate`: arguments in, [`pulse_app::migrate`] does the work.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;
use pulse_app::{migrate, open};

#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// Print the DDL this build would apply (rendered for the configured cluster, if any) instead of applying it.
    #[arg(long)]
    print_sql: bool,
}

pub async fn run(path: &Path, args: MigrateArgs) -> Result<ExitCode> {
    let config = open::config(path)?;
    if args.print_sql {
        crate::out(&migrate::plan_sql(&config));
    } else {
        crate::out(&migrate::run(&config).await?);
    }
    Ok(ExitCode::SUCCESS)
}
