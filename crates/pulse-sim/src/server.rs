//! The HTTP face of the simulator: every path goes to [`Sim::handle`]; `/_sim/*` is the simulator's own control
//! surface (move the clock, read the truth), which Meta does not have.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use chrono::NaiveDate;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::api::{Request, Sim};

/// A simulator serving on a loopback port, stopped when dropped.
pub struct RunningSim {
    pub sim: Arc<Sim>,
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl RunningSim {
    /// Base URL, such as `http://127.0.0.1:40123`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for RunningSim {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves `sim` on `127.0.0.1:port` (0: a free port) in the background.
pub async fn start(sim: Arc<Sim>, port: u16) -> std::io::Result<RunningSim> {
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    let addr = listener.local_addr()?;
    sim.set_base_url(&format!("http://{addr}"));
    let app = Router::new().fallback(handle).with_state(sim.clone());
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "simulator server stopped");
        }
    });
    Ok(RunningSim { sim, addr, task })
}

/// Serves until the process is stopped.
pub async fn serve(sim: Arc<Sim>, listener: TcpListener) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    sim.set_base_url(&format!("http://{addr}"));
    let app = Router::new().fallback(handle).with_state(sim);
    axum::serve(listener, app).await
}

async fn handle(State(sim): State<Arc<Sim>>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let query: Vec<(String, String)> =
        uri.query().map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect()).unwrap_or_default();
    if uri.path().starts_with("/_sim/") {
        return control(&sim, &method, uri.path(), &query);
    }
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("OAuth ")))
        .map(str::to_owned);
    let form = if method == Method::POST { form_urlencoded::parse(&body).into_owned().collect() } else { Vec::new() };
    let req = Request { method: method.to_string(), path: uri.path().to_owned(), query, bearer, form };
    let resp = sim.handle(&req);
    if resp.delay_ms > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(resp.delay_ms)).await;
    }
    let mut out =
        (StatusCode::from_u16(resp.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), resp.body).into_response();
    for (name, value) in resp.headers {
        if let (Ok(n), Ok(v)) = (HeaderName::try_from(name), HeaderValue::try_from(value)) {
            out.headers_mut().insert(n, v);
        }
    }
    out
}

fn control(sim: &Sim, method: &Method, path: &str, query: &[(String, String)]) -> Response {
    match (method, path) {
        (&Method::POST, "/_sim/clock") => {
            let Some(day) = query.iter().find(|(k, _)| k == "today").and_then(|(_, v)| v.parse::<NaiveDate>().ok())
            else {
                return (StatusCode::BAD_REQUEST, "expected ?today=YYYY-MM-DD").into_response();
            };
            sim.set_today(day);
            (StatusCode::OK, format!("today is {day}")).into_response()
        }
        (&Method::POST, "/_sim/tokens/kill") => {
            let get = |name: &str| query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
            let (Some(page), subcode) = (get("page"), get("subcode").and_then(|s| s.parse().ok()).unwrap_or(460))
            else {
                return (StatusCode::BAD_REQUEST, "expected ?page=<page id>[&subcode=460]").into_response();
            };
            let n = sim.kill_page_tokens(page, subcode);
            (StatusCode::OK, format!("{n} token(s) of page {page} killed ({subcode})")).into_response()
        }
        (&Method::POST, "/_sim/tokens/remove-app") => {
            let Some(user) = query.iter().find(|(k, _)| k == "user").map(|(_, v)| v.as_str()) else {
                return (StatusCode::BAD_REQUEST, "expected ?user=<person>").into_response();
            };
            let n = sim.remove_app(user);
            (StatusCode::OK, format!("{user} removed the app: {n} token(s) killed (458)")).into_response()
        }
        (&Method::GET, "/_sim/truth") => (
            StatusCode::OK,
            [("content-type", "application/json")],
            serde_json::to_string_pretty(&sim.world.truth()).expect("serialisable"),
        )
            .into_response(),
        _ => (StatusCode::NOT_FOUND, "unknown simulator control path").into_response(),
    }
}
