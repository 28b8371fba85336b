//! tracing output: readable text on a terminal, JSON lines for machines; `RUST_LOG` or `-v` filters it. With
//! `OTEL_EXPORTER_OTLP_ENDPOINT` set, the same spans also go to an OpenTelemetry collector (OTLP over HTTP).

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

/// Keeps the OpenTelemetry exporter alive; dropping it at the end of `main` sends what is still buffered.
pub struct Guard(Option<opentelemetry_sdk::trace::SdkTracerProvider>);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(provider) = self.0.take()
            && let Err(e) = provider.shutdown()
        {
            crate::errln!("warning: the last traces could not be sent to the OpenTelemetry collector: {e}");
        }
    }
}

/// Whether an OTLP collector is configured, by OpenTelemetry's own variables (`OTEL_SDK_DISABLED=true` turns it off).
fn otlp_configured() -> bool {
    if std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true")) {
        return false;
    }
    ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|x| !x.is_empty()))
}

/// The tracer provider that batches spans to the collector over OTLP/HTTP (protobuf), when one is configured.
fn otlp_provider() -> Option<opentelemetry_sdk::trace::SdkTracerProvider> {
    if !otlp_configured() {
        return None;
    }
    // reqwest is built without a TLS crypto provider of its own (the Graph client installs ring's the same way): one
    // must be installed before the exporter builds its client, for an https collector as for http.
    let _ = rustls::crypto::ring::default_provider().install_default();
    // The endpoint, headers and timeout come from OpenTelemetry's standard OTEL_EXPORTER_OTLP_* variables.
    match opentelemetry_otlp::SpanExporter::builder().with_http().build() {
        Ok(exporter) => {
            let service = std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| "pulse".to_owned());
            let resource = opentelemetry_sdk::Resource::builder().with_service_name(service).build();
            Some(
                opentelemetry_sdk::trace::SdkTracerProvider::builder()
                    .with_batch_exporter(exporter)
                    .with_resource(resource)
                    .build(),
            )
        }
        Err(e) => {
            crate::errln!(
                "warning: OTEL_EXPORTER_OTLP_ENDPOINT is set but the exporter cannot start ({e}); traces are not exported"
            );
            None
        }
    }
}

/// Logs to stderr (text or JSON lines) and, when `OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._TRACES_ENDPOINT`) is set,
/// exports the same spans to that OpenTelemetry collector. Keep the guard until the end of `main`.
pub fn init(verbose: u8, format: LogFormat) -> Guard {
    use opentelemetry::trace::TracerProvider as _;
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;

    let logs = || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter(verbose)));
    // A log line that cannot be written (stderr's reader went away) is dropped: by default tracing would report it
    // with eprintln!, which panics on a closed stderr and would kill a run mid-ingest.
    use tracing_subscriber::fmt::layer;
    let text = (format == LogFormat::Text).then(|| {
        layer()
            .with_writer(std::io::stderr)
            .log_internal_errors(false)
            .with_ansi(std::io::stderr().is_terminal())
            .with_target(false)
            .with_filter(logs())
    });
    let json = (format == LogFormat::Json).then(|| {
        layer()
            .with_writer(std::io::stderr)
            .log_internal_errors(false)
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_filter(logs())
    });
    // Traces keep more than the log shows: our crates at debug (each Graph call and store write is a span), or
    // PULSE_TRACE_FILTER in RUST_LOG's syntax.
    let traces = std::env::var("PULSE_TRACE_FILTER").unwrap_or_else(|_| default_filter(1));
    let provider = otlp_provider();
    let otel = provider
        .as_ref()
        .map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer("pulse")).with_filter(EnvFilter::new(&traces)));
    tracing_subscriber::registry().with(text).with(json).with(otel).init();
    Guard(provider)
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
