//! The Graph API for the ingest benchmarks in a process of its own, so that the ingester's memory and CPU are
//! measured without the simulator's: the simulator itself, or (`replay`) a server answering from responses it
//! recorded in memory the first time each was asked for, so that a second pass costs the server no more than
//! writing bytes to a socket.
//!
//! The parent runs `ingest_bench --serve-graph ...`; the child prints one JSON line (its URL, the world's API
//! version and dates, and the pages to ingest with their tokens), then serves until its stdin closes.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use anyhow::{Context, Result};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use chrono::NaiveDate;
use pulse_config::Secret;
use pulse_domain::{ApiVersion, TenantId};
use pulse_ingest::Target;
use pulse_sim::{Request, Sim, World};
use serde_json::json;

/// How the child answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The simulator, computing every response.
    Simulate,
    /// Responses recorded on first request and replayed from memory after that.
    Replay,
}

/// A running Graph API child process; stopped when dropped.
pub struct GraphProcess {
    child: Child,
    _stdin: ChildStdin,
    pub url: String,
    pub version: ApiVersion,
    pub today: NaiveDate,
    pub end: NaiveDate,
    pub practices: usize,
    pub targets: Vec<Target>,
}

impl Drop for GraphProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl GraphProcess {
    /// Starts `ingest_bench --serve-graph` for the national scenario with `copies` ICBs (first `pages` pages).
    pub fn spawn(mode: Mode, copies: u32, pages: Option<usize>) -> Result<Self> {
        let exe = std::env::current_exe()?;
        let mut cmd = Command::new(exe);
        cmd.args(["--serve-graph", "--copies", &copies.to_string()]);
        if let Some(n) = pages {
            cmd.args(["--pages", &n.to_string()]);
        }
        if mode == Mode::Replay {
            cmd.arg("--replay");
        }
        let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().context("starting the Graph child")?;
        let stdin = child.stdin.take().expect("piped");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line)?;
        let hello: serde_json::Value =
            serde_json::from_str(&line).with_context(|| format!("Graph child said {line:?}"))?;
        let s = |k: &str| hello[k].as_str().map(str::to_owned).with_context(|| format!("`{k}` in {line}"));
        let mut tenants: Vec<TenantId> = Vec::new();
        for t in hello["targets"].as_array().context("targets")? {
            let tenant = TenantId::new(t["tenant"].as_str().context("tenant")?)?;
            if !tenants.contains(&tenant) {
                tenants.push(tenant);
            }
        }
        let access = crate::operator(tenants)?;
        let targets = hello["targets"]
            .as_array()
            .context("targets")?
            .iter()
            .map(|t| {
                let field = |k: &str| t[k].as_str().unwrap_or_default().to_owned();
                Ok(Target::new(
                    &access,
                    &field("tenant"),
                    field("practice").parse()?,
                    &field("page"),
                    Secret::new(field("token")),
                )?)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            url: s("url")?,
            version: s("version")?.parse()?,
            today: s("today")?.parse()?,
            end: s("end")?.parse()?,
            practices: hello["practices"].as_u64().unwrap_or_default() as usize,
            targets,
            child,
            _stdin: stdin,
        })
    }

    /// The child's counts: `{"hits", "misses", "peak_rss_mib", "cpu_seconds"}`.
    pub async fn stats(&self) -> Result<serde_json::Value> {
        Ok(reqwest::get(format!("{}/_replay/stats", self.url)).await?.json().await?)
    }
}

/// A recorded answer: status, headers, body.
type Recorded = Arc<(u16, Vec<(String, String)>, Bytes)>;

#[derive(Default)]
struct Replay {
    recorded: RwLock<HashMap<String, Recorded>>,
    hits: AtomicU64,
    misses: AtomicU64,
}

struct Served {
    sim: Arc<Sim>,
    replay: Option<Replay>,
}

/// The child: builds the world, prints the hello line, serves until stdin closes.
pub async fn serve_child(mode: Mode, copies: u32, pages: Option<usize>) -> Result<()> {
    let world = World::new(crate::national_scenario(copies)?, None);
    let mut logins = world.page_logins();
    if let Some(n) = pages {
        logins.truncate(n);
    }
    let targets: Vec<serde_json::Value> = logins
        .iter()
        .map(
            |l| json!({"tenant": l.tenant.as_str(), "practice": l.practice.as_str(), "page": l.page, "token": l.token}),
        )
        .collect();
    let (version, end, practices) = (world.api_version(), world.end(), world.practices.len());
    let sim = Arc::new(Sim::new(world, None));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
    let addr = listener.local_addr()?;
    sim.set_base_url(&format!("http://{addr}"));
    println!(
        "{}",
        json!({"url": format!("http://{addr}"), "version": version.to_string(), "today": sim.today().to_string(),
               "end": end.to_string(), "practices": practices, "targets": targets})
    );
    let served = Arc::new(Served { sim, replay: (mode == Mode::Replay).then(Replay::default) });
    let app = Router::new().fallback(handle).with_state(served);
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    // Serve until the parent closes our stdin (or goes away).
    tokio::task::spawn_blocking(|| {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
    })
    .await?;
    server.abort();
    Ok(())
}

async fn handle(State(s): State<Arc<Served>>, method: Method, uri: Uri, headers: HeaderMap) -> Response {
    let mut query: Vec<(String, String)> =
        uri.query().map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect()).unwrap_or_default();
    if uri.path() == "/_replay/stats" {
        let (hits, misses) =
            s.replay.as_ref().map_or((0, 0), |r| (r.hits.load(Ordering::Relaxed), r.misses.load(Ordering::Relaxed)));
        let body = json!({"hits": hits, "misses": misses, "peak_rss_mib": crate::peak_rss_mib(),
                          "cpu_seconds": crate::cpu_seconds()});
        return (StatusCode::OK, body.to_string()).into_response();
    }
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    query.sort();
    let key = format!("{} {}?{:?} {:?}", method, uri.path(), query, bearer);
    if let Some(replay) = &s.replay
        && let Some(hit) = replay.recorded.read().expect("lock").get(&key).cloned()
    {
        replay.hits.fetch_add(1, Ordering::Relaxed);
        return respond(hit.0, &hit.1, hit.2.clone());
    }
    let req = Request { method: method.to_string(), path: uri.path().to_owned(), query, bearer, form: Vec::new() };
    let resp = s.sim.handle(&req);
    let body = Bytes::from(resp.body);
    if let Some(replay) = &s.replay {
        replay.misses.fetch_add(1, Ordering::Relaxed);
        if resp.status == 200 {
            let entry = Arc::new((resp.status, resp.headers.clone(), body.clone()));
            replay.recorded.write().expect("lock").insert(key, entry);
        }
    }
    respond(resp.status, &resp.headers, body)
}

fn respond(status: u16, headers: &[(String, String)], body: Bytes) -> Response {
    let mut out = (StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), body).into_response();
    for (name, value) in headers {
        if let (Ok(n), Ok(v)) = (HeaderName::try_from(name.as_str()), HeaderValue::try_from(value.as_str())) {
            out.headers_mut().insert(n, v);
        }
    }
    out
}
