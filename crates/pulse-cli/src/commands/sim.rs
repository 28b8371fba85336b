//! `pulse sim` and `pulse sim truth`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use chrono::NaiveDate;
use clap::{Args, Subcommand};
use pulse_sim::{Sim, World, scenario};

#[derive(Debug, Args)]
pub struct SimArgs {
    /// Scenario: a bundled name (case-study, current, national) or a TOML file.
    #[arg(long, default_value = "case-study", global = true)]
    scenario: String,
    /// Seed (default: the scenario's own).
    #[arg(long, global = true)]
    seed: Option<u64>,
    /// Loopback port to serve on (0: any free port).
    #[arg(long, default_value_t = 8787)]
    port: u16,
    /// Require `appsecret_proof` computed with the app secret in this environment variable.
    #[arg(long)]
    app_secret_env: Option<String>,
    /// Write each page's access token to this file (a flat TOML secrets file: `<page id> = "<token>"`).
    #[arg(long)]
    tokens_out: Option<PathBuf>,
    /// Write a ready config for this simulator into this directory (pulse.toml over a lake there, every page with
    /// its token in a git-ignored secrets file), so `pulse ingest --config DIR/pulse.toml` runs against it.
    #[arg(long)]
    config_out: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<SimCommand>,
}

#[derive(Debug, Subcommand)]
enum SimCommand {
    /// Print the scenario's known truth as JSON (format pulse-sim-truth/1, documented in pulse-sim's truth module).
    Truth {
        /// Also write every page's true daily series to this CSV file.
        #[arg(long)]
        series_csv: Option<PathBuf>,
        /// First and last day of the series (default: the whole scenario).
        #[arg(long)]
        from: Option<NaiveDate>,
        #[arg(long)]
        to: Option<NaiveDate>,
    },
}

pub async fn run(args: SimArgs) -> Result<ExitCode> {
    let scenario = scenario::resolve(&args.scenario)?;
    let world = World::new(scenario, args.seed);
    if let Some(SimCommand::Truth { series_csv, from, to }) = args.command {
        crate::outln!("{}", serde_json::to_string_pretty(&world.truth())?);
        if let Some(path) = series_csv {
            let csv = world.series_csv(from.unwrap_or(world.start()), to.unwrap_or(world.end()));
            std::fs::write(&path, csv).with_context(|| format!("writing {}", path.display()))?;
            crate::errln!("wrote the true daily series to {}", path.display());
        }
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(path) = &args.tokens_out {
        let body: String = world.pages.iter().map(|p| format!("\"{}\" = \"{}\"\n", p.id, p.token)).collect();
        std::fs::write(path, body).with_context(|| format!("writing {}", path.display()))?;
    }
    let secret = match &args.app_secret_env {
        Some(var) => {
            Some(std::env::var(var).with_context(|| format!("--app-secret-env {var}: the variable is not set"))?)
        }
        None => None,
    };
    let (pages, practices, tenants) = (world.pages.len(), world.practices.len(), world.tenants.len());
    let (version, start, end) = (world.api_version(), world.start(), world.end());
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", args.port)).await.with_context(|| {
        format!("cannot listen on 127.0.0.1:{}; is another simulator running? try --port 0", args.port)
    })?;
    let addr = listener.local_addr()?;
    if let Some(dir) = &args.config_out {
        let path = pulse_demo::write_config(&world, dir, Some(&format!("http://{addr}")))?;
        crate::errln!("config for this simulator written to {}", path.display());
    }
    let sim = Arc::new(Sim::new(world, secret));
    crate::errln!(
        "pulse sim: scenario `{}`, {tenants} tenants, {practices} practices, {pages} pages, Graph API {version}, data {start}..{end}",
        args.scenario
    );
    crate::errln!("serving on http://{addr}  (try: curl 'http://{addr}/{version}/debug_token?input_token=x')");
    if let Some(path) = &args.tokens_out {
        crate::errln!("page tokens written to {}", path.display());
    }
    tokio::select! {
        r = pulse_sim::serve(sim, listener) => r?,
        _ = tokio::signal::ctrl_c() => crate::errln!("stopped"),
    }
    Ok(ExitCode::SUCCESS)
}
