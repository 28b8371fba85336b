//! `pulse`: the Practice Pulse command line.

mod commands;
mod logging;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Practice Pulse: engagement analytics across GP practices' Facebook pages, per commissioning organisation.
#[derive(Debug, Parser)]
#[command(name = "pulse", version, propagate_version = true, max_term_width = 110)]
struct Cli {
    /// Configuration file.
    #[arg(long, short, global = true, env = "PULSE_CONFIG", default_value = "pulse.toml")]
    config: PathBuf,
    /// More log output: -v debug, -vv trace. `RUST_LOG` overrides it.
    #[arg(long, short, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = logging::LogFormat::Text)]
    log_format: logging::LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate and summarise the configuration.
    #[command(subcommand)]
    Config(commands::config::ConfigCommand),
    /// Check the store as it will be used: on a ClickHouse cluster, every replica's URL, what answers there (shard,
    /// replica, host, macros), its replication backlog, and where each tenant's rows are. Exit code 1 when anything
    /// is wrong: a layout the store refuses, a replica down, rows on the wrong shard.
    Doctor(commands::cluster::DoctorArgs),
    /// Operate a ClickHouse cluster: `rebalance` moves rows written to a shard other than their tenant's.
    #[command(subcommand)]
    Cluster(commands::cluster::ClusterCommand),
    /// Create or upgrade the store's schema (ClickHouse tables, or the lake's manifest). Safe to run twice.
    ///
    /// Refuses a database migrated by a newer Practice Pulse, and a migration edited after it was applied.
    Migrate(commands::migrate::MigrateArgs),
    /// Run the whole pipeline on a simulated world, with nothing to install: start the Graph API simulator
    /// in-process, ingest every practice's page and post insights into the embedded lake, and say what was done and
    /// where the results are. A second run is incremental.
    Demo(commands::demo::DemoArgs),
    /// Pull page and post insights for every configured practice into the store.
    ///
    /// Backfills pages without checkpoints from --since (up to two years back); otherwise continues from each
    /// page's checkpoints with a lookback. Exit code 1 when any page failed or needs re-authorisation.
    Ingest(commands::ingest::IngestArgs),
    /// Compute the report tables (reach, age bands, campaign uplift, post performance, data quality) from stored
    /// facts, for every tenant or the ones named.
    #[command(subcommand)]
    Jobs(commands::jobs::JobsCommand),
    /// Read a report for one tenant: reach, age-bands, campaigns, posts or quality; as a table (with charts),
    /// CSV, JSON or Parquet.
    Report(commands::report::ReportArgs),
    /// Plan a campaign from a tenant's history: the smallest effect it could detect, and what a target effect needs.
    #[command(subcommand)]
    Campaign(commands::campaign::CampaignCommand),
    /// Export a research dataset: a Frictionless data package (CSV and Parquet per table, datapackage.json with
    /// schemas and provenance, README, SHA-256 checksums), disclosure-controlled and pseudonymised per project.
    Export(commands::export::ExportArgs),
    /// Run the analyst service: the JSON API (`/api/v2/query`, `/api/v1/reports/...`, OpenAPI at
    /// `/api/v1/openapi.json`) and the web dashboard, over the configured store. Keys come from `pulse keys`.
    Serve(commands::serve::ServeArgs),
    /// Create, list and revoke API keys for the analyst service (stored hashed beside the config).
    #[command(subcommand)]
    Keys(commands::keys::KeysCommand),
    /// Run the scheduler daemon: each tenant's incremental ingest and pipelines daily, each digest list's weekly
    /// email, at the times in [scheduler] (cron, Europe/London by default). Survives restarts; stops on SIGTERM.
    Run(commands::run::RunArgs),
    /// What the scheduler did last and will do next, per job, and the latest week's digest deliveries.
    Status(commands::run::StatusArgs),
    /// Weekly digests: preview one, send a list's by hand, manage list members.
    #[command(subcommand)]
    Digest(commands::digest::DigestCommand),
    /// Run the Graph API simulator: a local, deterministic stand-in for Facebook Page Insights.
    ///
    /// Serves `/vNN.N/{page-id}/insights`, `/published_posts`, `/{post-id}/insights`, `/{page-id}?fields=`,
    /// `/debug_token` and batch `POST /` over a synthetic world from a scenario (bundled: case-study, current,
    /// national; or a TOML file). `pulse sim truth` prints what the world injected.
    Sim(commands::sim::SimArgs),
    /// The token vault: page tokens sealed (AES-256-GCM) in the store. `new-key`, `import` (from the config's
    /// references), `rotate`, `status`.
    #[command(subcommand)]
    Vault(commands::vault::VaultCommand),
    /// Connect practices' pages: `invite` makes single-use, expiring links for practice managers (Facebook Login),
    /// `invitations` lists them with who connected which page.
    #[command(subcommand)]
    Pages(commands::vault::PagesCommand),
    /// List the metric catalogue: canonical metrics and the Graph metric each maps to under an API version.
    Metrics(commands::metrics::MetricsArgs),
}

/// Writes results to stdout. When the reader has gone away (`pulse report reach | head`), the rest of the output
/// is dropped quietly and the command still finishes its work and exits with its own code: an ingest whose output
/// nobody reads any more still records its run.
pub fn out(text: &str) {
    use std::io::Write;
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}

/// Writes a message to stderr, ignoring a reader that has gone away (see [`out`]).
pub fn note(text: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "{text}");
}

/// `println!` that survives a closed stdout.
#[macro_export]
macro_rules! outln {
    () => { $crate::out("\n") };
    ($($arg:tt)*) => { $crate::out(&format!("{}\n", format!($($arg)*))) };
}

/// `eprintln!` that survives a closed stderr.
#[macro_export]
macro_rules! errln {
    ($($arg:tt)*) => { $crate::note(&format!($($arg)*)) };
}

fn main() -> ExitCode {
    pulse_app::limit_malloc_arenas();
    // SIGPIPE stays ignored (Rust's default), so a reader that goes away (`pulse ingest | head`, a log shipper that
    // died) makes writes fail instead of killing the process mid-run with no message and no run record; [`out`] and
    // [`note`] drop such output and the work goes on.
    let cli = Cli::parse();
    // Kept to the end of main: dropping it sends the traces still buffered for an OpenTelemetry collector.
    let _traces = logging::init(cli.verbose, cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            errln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Config(cmd) => commands::config::run(&cli.config, cmd),
            Command::Doctor(args) => commands::cluster::doctor(&cli.config, args).await,
            Command::Cluster(cmd) => commands::cluster::run(&cli.config, cmd).await,
            Command::Migrate(args) => commands::migrate::run(&cli.config, args).await,
            Command::Metrics(args) => commands::metrics::run(args),
            Command::Sim(args) => commands::sim::run(args).await,
            Command::Ingest(args) => commands::ingest::run(&cli.config, args).await,
            Command::Demo(args) => commands::demo::run(args).await,
            Command::Jobs(cmd) => commands::jobs::run(&cli.config, cmd).await,
            Command::Report(args) => commands::report::run(&cli.config, args).await,
            Command::Campaign(cmd) => commands::campaign::run(&cli.config, cmd).await,
            Command::Export(args) => commands::export::run(&cli.config, args).await,
            Command::Serve(args) => commands::serve::run(&cli.config, args).await,
            Command::Keys(cmd) => commands::keys::run(&cli.config, cmd),
            Command::Run(args) => commands::run::run(&cli.config, args).await,
            Command::Status(args) => commands::run::status(&cli.config, args).await,
            Command::Digest(cmd) => commands::digest::run(&cli.config, cmd).await,
            Command::Vault(cmd) => commands::vault::run(&cli.config, cmd).await,
            Command::Pages(cmd) => commands::vault::pages(&cli.config, cmd).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            errln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
