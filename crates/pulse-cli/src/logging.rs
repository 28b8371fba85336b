//! tracing output: readable text on a terminal, JSON lines for machines; `RUST_LOG` or `-v` filters it.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Our crates at info (or debug/trace with -v/-vv); dependencies only when they warn.
fn default_filter(verbose: u8) -> String {
    let ours = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let deps = if verbose >= 2 { "debug" } else { "warn" };
    let crates = OUR_CRATES.iter().map(|c| format!("{c}={ours}")).collect::<Vec<_>>().join(",");
    format!("{deps},pulse={ours},{crates}")
}

/// Every crate of the workspace, as tracing targets (a test checks this against Cargo.toml).
const OUR_CRATES: &[&str] = &[
    "pulse_app",
    "pulse_query",
    "pulse_export",
    "pulse_digest",
    "pulse_demo",
    "pulse_cli",
    "pulse_config",
    "pulse_domain",
    "pulse_graph",
    "pulse_ingest",
    "pulse_pipelines",
    "pulse_sim",
    "pulse_store",
    "pulse_server",
    "pulse_benches",
];

pub fn init(verbose: u8, format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter(verbose)));
    // A log line that cannot be written (stderr's reader went away) is dropped: by default tracing would report it
    // with eprintln!, which panics on a closed stderr and would kill a run mid-ingest.
    let builder =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).log_internal_errors(false);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).with_target(false).init(),
        LogFormat::Json => builder.json().with_current_span(true).with_span_list(false).init(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_workspace_crate_logs_at_the_default_level() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
        let members = manifest.split("members = [").nth(1).unwrap().split(']').next().unwrap();
        let filter = super::default_filter(0);
        for member in members.split(',').map(|m| m.trim().trim_matches('"')).filter(|m| !m.is_empty()) {
            let cargo = std::fs::read_to_string(root.join(member).join("Cargo.toml")).unwrap();
            let name = cargo.lines().find_map(|l| l.strip_prefix("name = ")).unwrap().trim_matches('"');
            let target = name.replace('-', "_");
            assert!(filter.contains(&format!("{target}=info")), "{target} missing from the default filter {filter}");
        }
    }
}
