//! `pulse demo`: arguments in, [`pulse_demo`] does the work and tells what happens.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;
use pulse_demo::{self as demo, DemoRequest};

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Directory of the embedded lake (created if missing).
    #[arg(long, default_value = "pulse-data")]
    dir: PathBuf,
    /// Scenario to simulate: case-study (default), current, national, or a TOML file.
    #[arg(long, default_value = "case-study")]
    scenario: String,
    /// HTTP calls in flight.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
}

pub async fn run(args: DemoArgs) -> Result<ExitCode> {
    let request = DemoRequest { dir: args.dir, scenario: args.scenario, concurrency: args.concurrency };
    let code = demo::run(&request, &mut |line| crate::out(&format!("{line}\n"))).await?;
    Ok(ExitCode::from(code))
}
