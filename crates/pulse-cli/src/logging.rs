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
    format!("{deps},pulse={ours},pulse_cli={ours},pulse_store={ours},pulse_config={ours},pulse_domain={ours}")
}

pub fn init(verbose: u8, format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter(verbose)));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).with_target(false).init(),
        LogFormat::Json => builder.json().with_current_span(true).with_span_list(false).init(),
    }
}
