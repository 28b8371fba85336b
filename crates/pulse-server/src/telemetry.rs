//! Prometheus metrics: the process's recorder, what every metric means, and the `/metrics` listener that `pulse serve`
//! and `pulse run` open with `--metrics-listen`.
//!
//! The application's crates record through the `metrics` facade (counters, gauges, histograms by name and labels);
//! nothing is kept until this recorder is installed, so a process without `--metrics-listen` pays nothing. Labels
//! never carry a secret, a key id, a query or an address: routes are path templates (`/api/v1/reports/{kind}`),
//! tenants are the config's ids.
//!
//! The listener is its own port, for the operator's network: the analyst service's port is public, and what is
//! counted there (routes, tenants, pages' token health) is for whoever runs the service.

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::MatchedPath;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use pulse_app::error::AppError;
use tracing::Instrument;

/// Upper bounds of the histograms in seconds: a cached API answer (milliseconds) to a year's pipelines (minutes).
const SECONDS_BUCKETS: &[f64] =
    &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 180.0, 600.0];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process's Prometheus recorder (once; later calls return the same handle) and describes every metric
/// the application records.
pub fn install() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
            .expect("the bucket list is not empty")
            .build_recorder();
        let handle = recorder.handle();
        if let Err(e) = metrics::set_global_recorder(recorder) {
            tracing::warn!("metrics are not recorded: another recorder is installed ({e})");
        }
        describe();
        handle
    })
}

/// What each metric means (Prometheus's `# HELP`), in one place. The names are the ones the crates record.
fn describe() {
    describe_counter!(
        "pulse_http_requests_total",
        "Requests answered by the analyst service, by route, method and status."
    );
    describe_histogram!(
        "pulse_http_request_duration_seconds",
        Unit::Seconds,
        "Time to answer a request, by route and method."
    );
    describe_counter!("pulse_query_cache_total", "Analyst queries answered from the cache (hit) or computed (miss).");
    describe_counter!(
        "pulse_graph_requests_total",
        "Graph API calls made by ingest, by outcome: ok, throttled, token (rejected), transient, refused, unreachable, malformed, stopped."
    );
    describe_histogram!("pulse_graph_request_duration_seconds", Unit::Seconds, "Time of one Graph API call.");
    describe_counter!("pulse_graph_retries_total", "Graph API calls made again after a throttle or a transient error.");
    describe_counter!("pulse_ingest_rows_total", "Rows written to the store by ingest, by tenant.");
    describe_counter!(
        "pulse_ingest_runs_total",
        "Ingest runs, by outcome: clean, pages_failed, store_unavailable, error (could not start)."
    );
    describe_gauge!(
        "pulse_page_tokens_rejected",
        "Pages whose access token Meta rejected in the tenant's last ingest run."
    );
    describe_gauge!("pulse_page_tokens_checked", "Pages whose token the tenant's last ingest run used.");
    describe_counter!("pulse_report_jobs_total", "Report pipeline jobs per tenant, by outcome: ok, failed.");
    describe_histogram!("pulse_report_job_duration_seconds", Unit::Seconds, "Time of one tenant's report pipelines.");
    describe_counter!("pulse_scheduler_runs_total", "Scheduled runs, by kind (ingest, digest) and final state.");
    describe_histogram!("pulse_scheduler_run_duration_seconds", Unit::Seconds, "Time of one scheduled run, by kind.");
    describe_gauge!("pulse_scheduler_lease_held", "1 while this process holds the job's lease, 0 otherwise.");
    describe_counter!(
        "pulse_digest_deliveries_total",
        "Digest messages by outcome: sent, deferred (the mail server said later), given_up, unknown (sent, reply lost)."
    );
}

/// Binds `listen` and serves `/metrics` (the Prometheus text format) there until the process ends. Returns the
/// address it listens on (`listen` may ask for port 0).
pub async fn serve_metrics(listen: &str) -> Result<SocketAddr, AppError> {
    let handle = install();
    let (listener, addr) = crate::bind(listen).await.map_err(|e| {
        AppError::bad_request(format!("cannot open the metrics listener: {}", e.message))
            .with_hint("pick a free address with --metrics-listen, such as 127.0.0.1:9464")
    })?;
    // Upkeep drains each histogram's recent samples into its buckets; without it they pile up between scrapes.
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            handle.run_upkeep();
        }
    });
    let app = Router::new().route("/metrics", get(render));
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!("the metrics listener stopped: {e}");
        }
    });
    Ok(addr)
}

async fn render() -> Response {
    let body = install().render();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body).into_response()
}

/// Counts and times every request by route template, method and status, inside a span that carries them (and the
/// key id and tenant once authentication has named them: [`record_caller`]). A path that matches no route is
/// counted as `unmatched`, never by its text.
pub(crate) async fn track(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str()).to_owned();
    // The method is the caller's to choose (HTTP allows any token): only the ones the service answers are labels.
    let method: &'static str = match request.method().as_str() {
        "GET" => "GET",
        "POST" => "POST",
        "DELETE" => "DELETE",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        _ => "other",
    };
    let span = tracing::info_span!(
        "http",
        method = %method,
        route = %route,
        key = tracing::field::Empty,
        tenant = tracing::field::Empty
    );
    let started = Instant::now();
    let response = next.run(request).instrument(span).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("pulse_http_requests_total", "route" => route.clone(), "method" => method, "status" => status)
        .increment(1);
    metrics::histogram!("pulse_http_request_duration_seconds", "route" => route, "method" => method)
        .record(started.elapsed().as_secs_f64());
    response
}

/// Names the caller on the request's span once its key is accepted: the key's id (never the key) and the tenant.
pub fn record_caller(key_id: &str, tenant: &str) {
    let span = tracing::Span::current();
    span.record("key", key_id);
    if !tenant.is_empty() {
        span.record("tenant", tenant);
    }
}
