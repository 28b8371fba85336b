//! `pulse serve`: the analyst service. One process serves the JSON API (`/api/...`) and the dashboard (`/`, server
//! rendered, no scripts from elsewhere) over the application layer, on whichever store the config names.
//!
//! Every request is authenticated (an API key, or a dashboard session opened with one), rate-limited per key, scoped
//! to the key's tenants by [`pulse_config::Access`], and logged with the key id (never the secret), tenant, what was
//! asked, rows and milliseconds.

pub mod api;
pub mod auth;
pub mod connect;
pub mod oidc;
pub mod openapi;
pub mod pages;
pub mod telemetry;
pub mod wire;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use pulse_app::error::{AppError, ErrorKind};
use pulse_app::keys::{KeyRing, Keys};
use pulse_config::Config;
use pulse_query::{Cache, Directory};
use pulse_store::AnyStore;

/// Everything a request handler needs, shared.
pub struct AppState {
    pub config: Config,
    pub store: AnyStore,
    pub directory: Directory,
    pub cache: Cache,
    pub gate: auth::Gate,
    pub keys: Keys,
    /// Sign-in with the organisation's identity provider, when `[server.oidc]` is set.
    pub oidc: Option<oidc::Oidc>,
    /// Connecting practices' pages through invitations and Facebook Login, when `[onboarding]` is set.
    pub connect: Option<connect::Connect>,
}

pub type Shared = Arc<AppState>;

impl AppState {
    /// Loads what the server needs from the config: the store, practice names and registered patients, the keys.
    pub fn new(config: Config, store: AnyStore) -> Result<Self, AppError> {
        let directory = Directory::load(&config)?;
        let keys = Keys::for_config(&config);
        let mut ring = KeyRing::new(keys.clone());
        ring.refresh()?;
        let gate = auth::Gate::with_work_budget(
            ring,
            config.server.rate_limit_per_minute,
            config.server.session_hours,
            config.server.work_ms_per_minute,
        );
        let cache = Cache::with_limits(
            config.server.cache_entries,
            pulse_query::DEFAULT_CACHE_BYTES,
            config.server.report_cache_mb.saturating_mul(1 << 20),
        );
        let oidc = oidc::Oidc::from_config(&config)?;
        let connect = connect::Connect::from_config(&config)?;
        Ok(Self { config, store, directory, cache, gate, keys, oidc, connect })
    }
}

/// An error as the API answers it: the status from its kind, and a JSON body saying what and how to fix it. Store
/// failures and defects are logged in full and answered without internals.
pub struct ApiError(pub AppError);

impl From<AppError> for ApiError {
    fn from(e: AppError) -> Self {
        ApiError(e)
    }
}

pub fn error_body(e: &AppError) -> wire::ErrorBody {
    let (message, hint) = match e.kind {
        ErrorKind::Unavailable => (
            "the store is unavailable right now; nothing was changed".to_owned(),
            Some("retry shortly; the operator's log has the detail".to_owned()),
        ),
        ErrorKind::Internal => (
            "the server failed to answer this request".to_owned(),
            Some("the operator's log has the detail; please report it".to_owned()),
        ),
        _ => (e.message.clone(), e.hint.clone()),
    };
    wire::ErrorBody { error: wire::ErrorDetail { code: e.code().to_owned(), message, hint, field: e.field.clone() } }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let e = self.0;
        if matches!(e.kind, ErrorKind::Unavailable | ErrorKind::Internal) {
            tracing::error!(kind = e.code(), "{e}");
        }
        let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = (status, json_of(&error_body(&e))).into_response();
        if let Some(secs) = e.retry_after {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if e.kind == ErrorKind::Unauthenticated {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"pulse\""));
        }
        resp
    }
}

/// Any serialisable body (the types in [`wire`]) as a JSON response; a body that cannot be serialised is a 500 with
/// the usual error body, never an empty 200.
pub fn json_of<T: serde::Serialize + ?Sized>(v: &T) -> Response {
    match serde_json::to_vec(v) {
        Ok(mut text) => {
            text.push(b'\n');
            ([(header::CONTENT_TYPE, "application/json")], text).into_response()
        }
        Err(e) => ApiError(AppError::new(ErrorKind::Internal, format!("serialising a response: {e}"))).into_response(),
    }
}

/// One line per request: key id, tenant, what was asked, rows, status, ms. Never the key or a body.
pub fn log_request(key_id: &str, tenant: &str, what: &str, rows: usize, status: u16, started: Instant) {
    tracing::info!(
        target: "pulse_server::access",
        key = key_id,
        tenant,
        what,
        rows,
        status,
        ms = started.elapsed().as_millis() as u64,
        "request"
    );
}

/// The routes: the API under `/api`, the dashboard at `/`.
pub fn router(state: Shared) -> Router {
    Router::new()
        .route("/healthz", get(api::health))
        .route("/api/v1/openapi.json", get(api::openapi))
        .route("/api/v1/me", get(api::me))
        .route("/api/v2/query", post(api::query))
        .route("/api/v1/reports", get(api::reports_index))
        .route("/api/v1/reports/{kind}", get(api::report))
        .route("/api/v1/region", get(api::region))
        .route("/api/v1/benchmarks", get(api::benchmarks))
        .route("/api/v1/posting", get(api::posting))
        .route("/api/v1/campaigns/plan", get(api::campaign_plan))
        .route("/api/v1/campaigns", get(api::campaigns_list).post(api::campaigns_register))
        .route("/api/v1/campaigns/{name}/withdraw", post(api::campaigns_withdraw))
        .route("/api/v1/exports", post(api::export))
        .route("/api/v1/keys", get(api::keys_list))
        .route("/api/v1/keys/{id}/revoke", post(api::keys_revoke))
        .route("/api/v1/subscriptions", get(api::subscriptions_list))
        .route("/api/v1/subscriptions/{list}/recipients", post(api::subscriptions_add))
        .route("/api/v1/subscriptions/{list}/recipients/{email}", axum::routing::delete(api::subscriptions_remove))
        .route("/unsubscribe", get(pages::unsubscribe_form).post(pages::unsubscribe))
        .route("/login", get(pages::login_form).post(pages::login))
        .route("/logout", post(pages::logout))
        .route("/auth/oidc/start", get(oidc::start))
        .route("/auth/oidc/callback", get(oidc::callback))
        .route("/api/v1/invitations", get(api::invitations_list).post(api::invitations_create))
        .route("/api/v1/invitations/{id}/revoke", post(api::invitations_revoke))
        .route("/connect", get(connect::explain))
        .route("/connect/start", post(connect::start))
        .route("/connect/callback", get(connect::callback))
        .route("/connect/choose", post(connect::choose))
        .route("/", get(pages::overview))
        .route("/practices", get(pages::practices))
        .route("/practices/{code}", get(pages::practice))
        .route("/age-bands", get(pages::age_bands))
        .route("/campaigns", get(pages::campaigns).post(pages::campaigns_register))
        .route("/campaigns/withdraw", post(pages::campaigns_withdraw))
        .route("/campaigns/plan", get(pages::campaign_plan))
        .route("/posts", get(pages::posts))
        .route("/quality", get(pages::quality))
        .route("/region", get(pages::region))
        .route("/benchmarks", get(pages::benchmarks))
        .route("/posting", get(pages::posting))
        .route("/invitations", get(pages::invitations).post(pages::invite))
        .route("/static/pulse.css", get(pages::stylesheet))
        .fallback(pages::not_found)
        // Every body is small (a query, an export spec, a form): 256 KiB bounds what one request can make the
        // server hold, well above the largest valid query.
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(refuse_declared_oversize_bodies))
        .layer(axum::middleware::from_fn(api_errors_as_json))
        .layer(axum::middleware::from_fn(refuse_credentials_in_urls))
        .layer(axum::middleware::from_fn(telemetry::track))
        .with_state(state)
}

/// The largest request body accepted.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// Query parameter names that carry a credential when they appear in a URL.
const CREDENTIAL_PARAMETERS: [&str; 5] = ["key", "api_key", "apikey", "access_token", "password"];

/// Whether a URL's query carries a credential: a parameter named like one, or any value that is an API key
/// (`pulse_<id>_<secret>`). The unsubscribe link's signed `token` is not one (it can only unsubscribe its address).
pub fn credential_in_query(query: &str) -> bool {
    form_urlencoded::parse(query.as_bytes()).any(|(k, v)| {
        CREDENTIAL_PARAMETERS.contains(&k.to_ascii_lowercase().as_str())
            || v.trim_start().starts_with("pulse_")
            || k.trim_start().starts_with("pulse_")
    })
}

/// Refuses, before any handler or log line sees it, a request that puts a credential in its URL: 400 with a JSON
/// error that does not echo it. A key in a URL ends up in browser history, proxies' logs and the Referer header; the
/// service takes keys only in the `Authorization` header (API) or the login form (dashboard).
async fn refuse_credentials_in_urls(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    if request.uri().query().is_some_and(credential_in_query) {
        let path = request.uri().path().to_owned();
        tracing::warn!(target: "pulse_server::access", path, status = 400u16, "request refused: a credential in the URL (not logged)");
        let e = AppError::bad_request("credentials are not accepted in URLs; this request was refused and its URL not logged")
            .with_hint("send the key as `Authorization: Bearer <key>` (API), or log in at /login (dashboard); revoke the key if it was shared in a link");
        return ApiError(e).into_response();
    }
    next.run(request).await
}

/// Refuses a request whose declared `Content-Length` is over the limit at once, before any of its body is read: 413
/// with the JSON error (under `/api/`) and `Connection: close`. A chunked body over the limit is still refused by the
/// body limit as it is read; this answers the common case without reading megabytes it will throw away, and answers
/// it whether or not the client has finished sending.
async fn refuse_declared_oversize_bodies(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        let mut resp = StatusCode::PAYLOAD_TOO_LARGE.into_response();
        resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        return resp;
    }
    next.run(request).await
}

/// Under `/api/`, every error is JSON with a hint, including those the router and its layers answer themselves (no
/// such path, a method the path does not take, a body over the limit), which are otherwise HTML, empty or plain text.
async fn api_errors_as_json(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let api = request.uri().path().starts_with("/api/");
    let method = request.method().clone();
    let resp = next.run(request).await;
    let json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !api || json || resp.status().is_success() {
        return resp;
    }
    let e = match resp.status() {
        StatusCode::NOT_FOUND => AppError::not_found("there is no such API path")
            .with_hint("GET /api/v1/openapi.json lists every path and what it takes"),
        StatusCode::METHOD_NOT_ALLOWED => {
            AppError::new(ErrorKind::BadRequest, format!("this path does not take {method}"))
                .with_hint("GET /api/v1/openapi.json says which method each path takes")
        }
        StatusCode::PAYLOAD_TOO_LARGE => AppError::new(ErrorKind::BadRequest, "the request body is too large")
            .with_hint("a query is a few hundred bytes; filters take at most 500 values each"),
        _ => return resp,
    };
    let status = resp.status();
    let mut out = ApiError(e).into_response();
    *out.status_mut() = status;
    if status == StatusCode::METHOD_NOT_ALLOWED
        && let Some(allow) = resp.headers().get(header::ALLOW)
    {
        out.headers_mut().insert(header::ALLOW, allow.clone());
    }
    if let Some(connection) = resp.headers().get(header::CONNECTION) {
        out.headers_mut().insert(header::CONNECTION, connection.clone());
    }
    out
}

/// What the access log says of a request's query: the parameter names and a digest of the whole (never the values:
/// they may be a filter's many values or something pasted by mistake).
pub fn query_digest<'a>(params: impl Iterator<Item = (&'a String, &'a String)>) -> String {
    use sha2::Digest as _;
    let mut ps: Vec<(&String, &String)> = params.collect();
    if ps.is_empty() {
        return String::new();
    }
    ps.sort();
    let mut hasher = sha2::Sha256::new();
    for (k, v) in &ps {
        hasher.update(k.as_bytes());
        hasher.update([0]);
        hasher.update(v.as_bytes());
        hasher.update([0]);
    }
    let names: Vec<&str> = ps.iter().map(|(k, _)| k.as_str()).collect();
    format!(" params={} q={}", names.join(","), &hex::encode(hasher.finalize())[..12])
}

/// Serves until `shutdown` resolves; records keys' last use every minute and on the way out.
pub async fn serve(
    state: Shared,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let flusher = {
        let state = state.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tick.tick().await;
                flush_key_use(&state);
            }
        })
    };
    let app = router(state.clone()).into_make_service_with_connect_info::<SocketAddr>();
    let result = axum::serve(listener, app).with_graceful_shutdown(shutdown).await;
    flusher.abort();
    flush_key_use(&state);
    result
}

fn flush_key_use(state: &AppState) {
    let used = state.gate.take_used();
    if let Err(e) = state.keys.record_use(&used) {
        tracing::warn!("could not record keys' last use: {e}");
    }
}

/// Binds `addr` and says where the service is.
pub async fn bind(addr: &str) -> Result<(tokio::net::TcpListener, SocketAddr), AppError> {
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        AppError::bad_request(format!("cannot listen on {addr}: {e}"))
            .with_hint("pick a free address with --listen or [server] listen, such as 127.0.0.1:8080")
    })?;
    let local = listener.local_addr().map_err(|e| AppError::new(ErrorKind::Internal, e.to_string()))?;
    Ok((listener, local))
}
