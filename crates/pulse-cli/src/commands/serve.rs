//! `pulse serve`: opens the config's store and runs the analyst service ([`pulse_server`]) until Ctrl-C or SIGTERM.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Result;
use clap::Args;
use pulse_app::open;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (default: [server] listen, else 127.0.0.1:8080).
    #[arg(long)]
    listen: Option<String>,
    /// Serve Prometheus metrics at http://<this address>/metrics, a port of its own for the operator's network
    /// (for example 127.0.0.1:9464). Off when not given.
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<String>,
}

pub async fn run(path: &Path, args: ServeArgs) -> Result<ExitCode> {
    let config = open::config(path)?;
    let store = open::store(&config)?;
    let listen = args.listen.unwrap_or_else(|| config.server.listen.clone());
    let keys_file = config.server.keys_file.clone();
    let state = Arc::new(pulse_server::AppState::new(config, store)?);
    let (listener, addr) = pulse_server::bind(&listen).await?;
    if let Some(m) = &args.metrics_listen {
        let at = pulse_server::telemetry::serve_metrics(m).await?;
        crate::errln!("metrics for Prometheus on http://{at}/metrics");
    }
    let keys = state.keys.list()?.len();
    crate::errln!(
        "Practice Pulse analyst service on http://{addr}/ (dashboard) and http://{addr}/api/ (API; /api/v1/openapi.json)"
    );
    crate::errln!("store: {}; {keys} API keys in {}", pulse_store::Store::describe(&state.store), keys_file.display());
    if keys == 0 {
        crate::errln!(
            "no keys yet: create one with `pulse keys create --config {} --tenant <id> --name <who>`",
            path.display()
        );
    }
    pulse_server::serve(state, listener, shutdown_signal()).await?;
    crate::errln!("stopped");
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
