//! Connecting a practice's page: an invitation link opens `/connect`, which says what will be read and starts
//! Facebook Login (authorisation code flow, `state` bound to the invitation and to the browser by a cookie, only the
//! permissions the ingester needs). The callback exchanges the code for a user token, then for a long-lived one,
//! checks every permission was granted, lists the pages the person administers (`/me/accounts`, every page of it)
//! and lets them choose the practice's page. The choice is checked against the practice's pages in the config (when
//! it has any) and against every other tenant's connected pages; the page's token is sealed in the vault and the
//! invitation marked used. The user token is dropped at the end of the callback; page tokens of the pages not
//! chosen are dropped with the sign-in.
//!
//! Calls to Meta carry secrets only in bodies and headers (the code, the client secret and tokens in POST forms and
//! `Authorization`), with `appsecret_proof`; nothing Meta returns is logged.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use askama::Template;
use axum::extract::{Query as QueryString, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use pulse_app::error::{AppError, AppResult, ErrorKind};
use pulse_app::keys::sha256_hex;
use pulse_app::onboarding::{self, Invitation};
use pulse_app::vault::{self, Vault};
use pulse_config::{Config, Secret};
use pulse_graph::wire::{AccountsResponse, GraphErrorBody, OAuthToken, PermissionsResponse};

use crate::Shared;
use crate::auth::{cookie, random_token};
use crate::pages::{cookie_header, error_page_saying as error_page};

/// The cookie binding a connection in progress to the browser that started it.
pub const BINDING_COOKIE: &str = "pulse_connect";

/// How long a manager may take between starting and choosing their page.
pub const PENDING_FOR: Duration = Duration::from_secs(900);

/// Connections in progress at once.
pub const MAX_PENDING: usize = 2_000;

/// The permissions asked for: what the ingester needs, nothing more.
pub const PERMISSIONS: [&str; 3] = ["pages_show_list", "pages_read_engagement", "read_insights"];

/// A page the person administers, with its token (held only until they choose).
struct Listed {
    id: String,
    name: String,
    token: Secret,
}

/// A connection started and not yet finished.
struct Pending {
    invitation: Invitation,
    /// SHA-256 of the binding cookie's value.
    browser: String,
    started: Instant,
    /// After the callback: the pages to choose from.
    pages: Option<Vec<Listed>>,
    /// After the callback: who logged in (their app-scoped Facebook id and name), for the audit.
    person: (String, String),
}

/// Connections one invitation may have in progress at once (so one link cannot crowd out everyone else's).
pub const MAX_PENDING_PER_INVITATION: usize = 3;

/// Facebook Login for invitations: the Meta app, the endpoints, connections in progress.
pub struct Connect {
    app_id: String,
    app_secret: Secret,
    graph: String,
    dialog: String,
    redirect: String,
    vault: Vault,
    http: reqwest::Client,
    pending: Mutex<HashMap<String, Pending>>,
}

impl std::fmt::Debug for Connect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connect").field("app_id", &self.app_id).field("dialog", &self.dialog).finish()
    }
}

fn unavailable(what: impl Into<String>) -> AppError {
    AppError::new(ErrorKind::Unavailable, what)
        .with_hint("Facebook could not be reached or answered something unexpected; open the invitation link again in a few minutes")
}

fn refused(what: impl Into<String>, hint: &str) -> AppError {
    AppError::new(ErrorKind::Forbidden, what).with_hint(hint.to_owned())
}

const START_AGAIN: &str = "open the invitation link again to start over (it still works until it is used)";

impl Connect {
    /// The connector `[onboarding]` describes, or `None` without it.
    pub fn from_config(config: &Config) -> AppResult<Option<Connect>> {
        let Some(o) = &config.onboarding else { return Ok(None) };
        let app_id = config.graph.app_id.clone().unwrap_or_default();
        let app_secret = match &config.graph.app_secret {
            Some(r) => config.resolve(r).map_err(|e| {
                AppError::bad_request(format!("graph.app_secret: {e}"))
                    .with_hint("set the Meta app's secret where [graph] app_secret says")
            })?,
            None => return Err(AppError::bad_request("[onboarding] needs [graph] app_secret")),
        };
        let vault = Vault::from_config(config)?.ok_or_else(|| AppError::bad_request("[onboarding] needs a [vault]"))?;
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("practice-pulse/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| unavailable(format!("cannot build the HTTP client: {e}")))?;
        let version = config.graph.version.to_string();
        Ok(Some(Connect {
            app_id,
            app_secret,
            graph: format!("{}/{version}", config.graph.base_url.trim_end_matches('/')),
            dialog: format!("{}/{version}/dialog/oauth", o.dialog_url.trim_end_matches('/')),
            redirect: o.redirect_url(),
            vault,
            http,
            pending: Mutex::new(HashMap::new()),
        }))
    }

    fn proof(&self, token: &str) -> String {
        pulse_graph::appsecret_proof(self.app_secret.expose(), token)
    }

    /// A POST to Meta with a form body (secrets never in the URL); its JSON, or Meta's error in words.
    async fn post_form<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        form: &[(&str, &str)],
        what: &str,
    ) -> AppResult<T> {
        let resp = self
            .http
            .post(format!("{}/{path}", self.graph))
            .form(form)
            .send()
            .await
            .map_err(|_| unavailable(format!("{what}: Facebook could not be reached")))?;
        Self::answer(resp, what).await
    }

    /// A GET to Meta with a user token in the `Authorization` header and `appsecret_proof`.
    async fn get_as<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        token: &Secret,
        query: &[(&str, &str)],
        what: &str,
    ) -> AppResult<T> {
        let proof = self.proof(token.expose());
        let mut q: Vec<(&str, &str)> = query.to_vec();
        q.push(("appsecret_proof", &proof));
        let resp = self
            .http
            .get(format!("{}/{path}", self.graph))
            .query(&q)
            .bearer_auth(token.expose())
            .send()
            .await
            .map_err(|_| unavailable(format!("{what}: Facebook could not be reached")))?;
        Self::answer(resp, what).await
    }

    async fn answer<T: serde::de::DeserializeOwned>(resp: reqwest::Response, what: &str) -> AppResult<T> {
        let status = resp.status();
        let body = resp.bytes().await.map_err(|_| unavailable(format!("{what}: the answer was cut off")))?;
        if !status.is_success() {
            // Meta's own message and code; they carry no secret.
            return Err(match serde_json::from_slice::<GraphErrorBody>(&body) {
                Ok(e) => refused(
                    format!(
                        "{what}: Facebook refused ({} {}, code {})",
                        status.as_u16(),
                        e.error.message,
                        e.error.code
                    ),
                    START_AGAIN,
                ),
                Err(_) => unavailable(format!("{what}: Facebook answered HTTP {}", status.as_u16())),
            });
        }
        serde_json::from_slice(&body).map_err(|_| unavailable(format!("{what}: not the answer expected")))
    }

    /// Where Facebook Login starts for `invitation`, and the binding cookie's value.
    fn start(&self, invitation: Invitation) -> AppResult<(String, String)> {
        let (state, binding) = (random_token(), random_token());
        {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            pending.retain(|_, p| p.started.elapsed() < PENDING_FOR);
            let same = pending.values().filter(|p| p.invitation.id == invitation.id).count();
            if same >= MAX_PENDING_PER_INVITATION {
                return Err(AppError::new(
                    ErrorKind::RateLimited,
                    "this invitation already has connections in progress",
                )
                .with_hint("finish the one open in another window, or try again in 15 minutes")
                .retry_after(PENDING_FOR.as_secs()));
            }
            if pending.len() >= MAX_PENDING {
                return Err(AppError::new(ErrorKind::RateLimited, "too many page connections are in progress")
                    .with_hint("try again in a few minutes")
                    .retry_after(60));
            }
            pending.insert(
                state.clone(),
                Pending {
                    invitation,
                    browser: sha256_hex(&binding),
                    started: Instant::now(),
                    pages: None,
                    person: Default::default(),
                },
            );
        }
        let query = form_urlencoded::Serializer::new(String::new())
            .extend_pairs([
                ("client_id", self.app_id.as_str()),
                ("redirect_uri", self.redirect.as_str()),
                ("state", state.as_str()),
                ("response_type", "code"),
                ("scope", &PERMISSIONS.join(",")),
            ])
            .finish();
        Ok((format!("{}?{query}", self.dialog), binding))
    }

    /// The pending connection `state` names, checked against the browser, taken out (single use: a state works once,
    /// whatever happens next).
    fn take_pending(&self, state: &str, binding: Option<&str>) -> AppResult<Pending> {
        let mut all = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let p = all.remove(state).filter(|p| p.started.elapsed() < PENDING_FOR).ok_or_else(|| {
            AppError::bad_request(
                "this connection was not started here, was already finished, or took longer than 15 minutes",
            )
            .with_hint(START_AGAIN)
        })?;
        if binding.map(sha256_hex).as_deref() != Some(p.browser.as_str()) {
            // A forged or replayed state: dropped, whoever sent it.
            return Err(refused("this connection was started in another browser", START_AGAIN));
        }
        Ok(p)
    }

    /// The callback: code → user token → long-lived token; every permission granted; the person's pages.
    async fn callback(
        &self,
        params: &HashMap<String, String>,
        binding: Option<&str>,
    ) -> AppResult<(String, Invitation, Vec<(String, String)>)> {
        let state = params.get("state").cloned().unwrap_or_default();
        let pending = self.take_pending(&state, binding)?;
        if let Some(error) = params.get("error") {
            let reason = params.get("error_reason").map(String::as_str).unwrap_or(error);
            return Err(refused(
                format!("Facebook Login did not finish ({reason}): no page was connected"),
                "open the invitation link again and choose Allow, with every permission ticked",
            ));
        }
        let code = params.get("code").filter(|c| !c.is_empty()).ok_or_else(|| {
            AppError::bad_request("Facebook's answer has no authorisation code").with_hint(START_AGAIN)
        })?;
        let short: OAuthToken = self
            .post_form(
                "oauth/access_token",
                &[
                    ("client_id", &self.app_id),
                    ("client_secret", self.app_secret.expose()),
                    ("redirect_uri", &self.redirect),
                    ("code", code),
                ],
                "exchanging the sign-in code",
            )
            .await?;
        let long: OAuthToken = self
            .post_form(
                "oauth/access_token",
                &[
                    ("grant_type", "fb_exchange_token"),
                    ("client_id", &self.app_id),
                    ("client_secret", self.app_secret.expose()),
                    ("fb_exchange_token", &short.access_token),
                ],
                "exchanging for a long-lived token",
            )
            .await?;
        let user = Secret::new(long.access_token);
        let perms: PermissionsResponse =
            self.get_as("me/permissions", &user, &[], "reading the permissions granted").await?;
        let missing: Vec<&str> = PERMISSIONS
            .iter()
            .copied()
            .filter(|p| !perms.data.iter().any(|g| g.permission == *p && g.status == "granted"))
            .collect();
        if !missing.is_empty() {
            return Err(refused(
                format!(
                    "Practice Pulse was not granted {}: without it the page's insights cannot be read, so no page was connected",
                    missing.join(", ")
                ),
                "open the invitation link again and leave every permission ticked (they allow reading insights only, never posting)",
            ));
        }
        let me: serde_json::Value = self.get_as("me", &user, &[("fields", "id,name")], "reading who logged in").await?;
        let person = (
            me.get("id").and_then(serde_json::Value::as_str).unwrap_or("unknown").to_owned(),
            me.get("name").and_then(serde_json::Value::as_str).unwrap_or("unknown").to_owned(),
        );
        let mut pages = Vec::new();
        let mut after: Option<String> = None;
        for _ in 0..100 {
            let mut q = vec![("fields", "id,name,access_token,tasks"), ("limit", "100")];
            if let Some(a) = &after {
                q.push(("after", a));
            }
            let r: AccountsResponse = self.get_as("me/accounts", &user, &q, "listing your pages").await?;
            let more = r.paging.as_ref().and_then(|p| p.next.as_ref()).is_some() && !r.data.is_empty();
            after = r.paging.and_then(|p| p.cursors).and_then(|c| c.after);
            pages.extend(r.data.into_iter().map(|a| Listed {
                id: a.id,
                name: a.name,
                token: Secret::new(a.access_token),
            }));
            if !more || after.is_none() {
                break;
            }
        }
        drop(user); // the user token is not kept
        if pages.is_empty() {
            return Err(refused(
                "the Facebook account you logged in with administers no page, so there is nothing to connect",
                "log in with the account that administers the practice's page",
            ));
        }
        let shown: Vec<(String, String)> = pages.iter().map(|p| (p.id.clone(), p.name.clone())).collect();
        let invitation = pending.invitation.clone();
        let new_state = random_token();
        let mut all = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        all.insert(new_state.clone(), Pending { pages: Some(pages), person, ..pending });
        Ok((new_state, invitation, shown))
    }
}

#[derive(Template)]
#[template(path = "dashboard/connect.html")]
struct ConnectPage<'a> {
    title: &'a str,
    step: Step,
}

enum Step {
    Explain {
        practice: String,
        practice_name: String,
        tenant_name: String,
        expires: String,
        invitation: String,
    },
    /// `ask_kind`: the config lists no page for the practice, so the manager says whether the page is the
    /// practice's official one or one the public made that the practice has claimed.
    Choose {
        practice: String,
        practice_name: String,
        state: String,
        pages: Vec<Choice>,
        expected: String,
        ask_kind: bool,
    },
    Done {
        practice: String,
        practice_name: String,
        page: String,
        page_name: String,
    },
}

struct Choice {
    id: String,
    name: String,
    /// "this practice's page in our records", or empty.
    note: String,
}

fn page(state: &Shared, status: StatusCode, step: Step) -> Response {
    let t = ConnectPage { title: "Connect a practice's Facebook page", step };
    match t.render() {
        Ok(body) => {
            let mut resp = (status, body).into_response();
            let h = resp.headers_mut();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
            h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            // The start form is answered with a redirect to Facebook Login, which form-action must allow.
            let dialog = state.connect.as_ref().and_then(|c| url_origin(&c.dialog)).unwrap_or_default();
            if let Ok(v) = HeaderValue::from_str(&format!(
                "default-src 'none'; style-src 'self'; form-action 'self' {dialog}; frame-ancestors 'none'; base-uri 'none'"
            )) {
                h.insert(header::CONTENT_SECURITY_POLICY, v);
            }
            resp
        }
        Err(e) => error_page(&AppError::new(ErrorKind::Internal, format!("rendering the connect page: {e}"))),
    }
}

fn url_origin(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let host = rest.split('/').next()?;
    Some(format!("{scheme}://{host}"))
}

/// The error page for an anonymous visitor: this module's own refusals as they are; the store's failures and
/// defects logged in full and answered without their detail (they could name another tenant).
/// What an anonymous visitor may see of an error from the store's side of this flow: this module's and the
/// invitation's own refusals (forbidden, too many) as they are; anything else (a store failure, data that does not
/// read, which could name another tenant) logged in full and said generically.
fn private(e: AppError) -> AppError {
    if matches!(e.kind, ErrorKind::Forbidden | ErrorKind::RateLimited) {
        return e;
    }
    tracing::error!(kind = e.code(), "connecting a page: {e}");
    AppError::new(ErrorKind::Unavailable, "Practice Pulse could not finish this just now; nothing was connected")
        .with_hint("open the invitation link again in a few minutes; if it keeps happening, tell whoever sent it")
}

fn shown(e: AppError) -> Response {
    tracing::warn!(target: "pulse_server::access", status = e.status(), "page connection refused: {}", e.message);
    if e.kind == ErrorKind::Internal || (e.kind == ErrorKind::Unavailable && !e.message.contains("Facebook")) {
        return error_page(
            &AppError::new(
                ErrorKind::Unavailable,
                "Practice Pulse could not finish this just now; nothing was connected",
            )
            .with_hint("open the invitation link again in a few minutes; if it keeps happening, tell whoever sent it"),
        );
    }
    error_page(&e)
}

fn not_set_up() -> Response {
    error_page(&AppError::not_found("connecting pages is not set up on this service").with_hint(
        "the operator adds [onboarding], [graph] app_id and app_secret and a [vault] to the config (README: Onboarding)",
    ))
}

fn practice_of(config: &Config, inv: &Invitation) -> (String, String, Vec<String>) {
    let tenant = config.tenants.iter().find(|t| t.id.as_str() == inv.tenant);
    let practice = tenant.and_then(|t| t.practices.iter().find(|p| p.code.as_str() == inv.practice));
    (
        tenant.map(|t| t.name.clone()).unwrap_or_default(),
        practice.map(|p| p.name.clone()).unwrap_or_default(),
        practice.map(|p| p.pages.iter().map(|pg| pg.id.to_string()).collect()).unwrap_or_default(),
    )
}

/// `GET /connect?invitation=...`: what will be read, and the button that starts Facebook Login.
pub async fn explain(
    State(state): State<Shared>,
    QueryString(params): QueryString<HashMap<String, String>>,
) -> Response {
    if state.connect.is_none() {
        return not_set_up();
    }
    let token = params.get("invitation").cloned().unwrap_or_default();
    match onboarding::open(&state.store, &state.config, &token).await.map_err(private) {
        Ok(inv) => {
            let (tenant_name, practice_name, _) = practice_of(&state.config, &inv);
            page(
                &state,
                StatusCode::OK,
                Step::Explain {
                    practice: inv.practice.clone(),
                    practice_name,
                    tenant_name,
                    expires: inv.expires_at.format("%-d %B %Y").to_string(),
                    invitation: token,
                },
            )
        }
        Err(e) => shown(e),
    }
}

/// `POST /connect/start` (form: `invitation`): the invitation checked again, then Facebook Login.
pub async fn start(State(state): State<Shared>, body: axum::body::Bytes) -> Response {
    let Some(connect) = state.connect.as_ref() else { return not_set_up() };
    let form: HashMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
    let token = form.get("invitation").cloned().unwrap_or_default();
    let inv = match onboarding::open(&state.store, &state.config, &token).await.map_err(private) {
        Ok(inv) => inv,
        Err(e) => return shown(e),
    };
    tracing::info!(target: "pulse_server::access", tenant = %inv.tenant, practice = %inv.practice, invitation = %inv.id, "page connection started");
    match connect.start(inv) {
        Ok((url, binding)) => {
            let mut resp = Redirect::to(&url).into_response();
            resp.headers_mut().append(
                header::SET_COOKIE,
                cookie_header(&state, BINDING_COOKIE, &binding, PENDING_FOR.as_secs() as i64),
            );
            resp.headers_mut().insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
            resp
        }
        Err(e) => shown(e),
    }
}

/// `GET /connect/callback`: Facebook Login's answer; the person's pages to choose from.
pub async fn callback(
    State(state): State<Shared>,
    headers: HeaderMap,
    QueryString(params): QueryString<HashMap<String, String>>,
) -> Response {
    let Some(connect) = state.connect.as_ref() else { return not_set_up() };
    let binding = cookie(&headers, BINDING_COOKIE);
    match connect.callback(&params, binding.as_deref()).await {
        Ok((next_state, inv, pages)) => {
            let (_, practice_name, expected) = practice_of(&state.config, &inv);
            let choices = pages
                .into_iter()
                .map(|(id, name)| Choice {
                    note: if expected.contains(&id) {
                        "this practice's page in our records".into()
                    } else {
                        String::new()
                    },
                    id,
                    name,
                })
                .collect();
            page(
                &state,
                StatusCode::OK,
                Step::Choose {
                    practice: inv.practice.clone(),
                    practice_name,
                    state: next_state,
                    ask_kind: expected.is_empty() && inv.for_page.is_none(),
                    pages: choices,
                    expected: expected.join(", "),
                },
            )
        }
        Err(e) => shown(e),
    }
}

/// `POST /connect/choose` (form: `state`, `page`): the chosen page checked, its token sealed in the vault, the
/// invitation used.
pub async fn choose(State(state): State<Shared>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    let Some(connect) = state.connect.as_ref() else { return not_set_up() };
    let form: HashMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
    let binding = cookie(&headers, BINDING_COOKIE);
    let result = async {
        let pending = connect.take_pending(form.get("state").map(String::as_str).unwrap_or(""), binding.as_deref())?;
        let chosen = form.get("page").cloned().unwrap_or_default();
        let inv = pending.invitation;
        let pages = pending.pages.ok_or_else(|| AppError::bad_request("choose a page after logging in").with_hint(START_AGAIN))?;
        let listed = pages.into_iter().find(|p| p.id == chosen).ok_or_else(|| {
            AppError::bad_request("that page is not one of the pages you administer").with_hint(START_AGAIN)
        })?;
        let (_, practice_name, expected) = practice_of(&state.config, &inv);
        // A re-authorisation invitation renews its own page only; otherwise the practice's page in the config.
        let wanted: Vec<String> = match &inv.for_page {
            Some(p) => vec![p.clone()],
            None => expected,
        };
        if let Some(only) = inv.for_page.as_ref().filter(|p| **p != listed.id) {
            return Err(refused(
                format!(
                    "this link renews the connection of page {only} only, not {} ({}): nothing was connected",
                    listed.name, listed.id
                ),
                "open the link again and choose that page; it must be done by someone who administers it",
            ));
        }
        if !wanted.is_empty() && !wanted.contains(&listed.id) {
            return Err(refused(
                format!(
                    "{} ({}) is not {practice_name}'s page in our records (that is {}): nothing was connected",
                    listed.name,
                    listed.id,
                    wanted.join(", ")
                ),
                "open the invitation link again and choose the practice's page; if the practice's page has changed, ask whoever sent the invitation to update it",
            ));
        }
        if let Some(why) = vault::claimed_elsewhere(&state.store, &state.config, &listed.id, &inv.tenant, &inv.practice)
            .await
            .map_err(private)?
        {
            return Err(refused(
                format!("{} ({}) cannot be connected for {practice_name}: {why}; nothing was connected", listed.name, listed.id),
                "a page can be connected for one practice of one organisation only; contact Practice Pulse support if this is wrong",
            ));
        }
        // Under the invitation's lease: still open, then the token stored, then the invitation used. A second window
        // with the same invitation is refused; a failure storing the token leaves the invitation usable.
        // A renewal keeps what the page was said to be; a page in the config has its kind there.
        let renewed_kind = match &inv.for_page {
            Some(page) => {
                let scope = state.config.operator_access().scope(&inv.tenant).map_err(AppError::from)?;
                vault::entries(&state.store, &scope).await.map_err(private)?.remove(page).and_then(|e| e.kind)
            }
            None => None,
        };
        let kind = match form.get("kind").map(String::as_str) {
            _ if inv.for_page.is_some() => renewed_kind.as_deref(),
            _ if !wanted.is_empty() => None,
            None | Some("official") => Some("official"),
            Some("claimed") => Some("claimed"),
            Some(other) => {
                return Err(AppError::bad_request(format!("`{other}` is not a kind of page"))
                    .with_hint("choose official or claimed"));
            }
        };
        let who = format!("{} (Facebook user {}), by Facebook Login", pending.person.1, pending.person.0);
        let by = format!("invitation {}: {who}", inv.id);
        onboarding::use_once(&state.store, &state.config, &inv, &listed.id, &who, || async {
            vault::put_with_kind(
                &state.store,
                &state.config,
                &connect.vault,
                &inv.tenant,
                &inv.practice,
                &listed.id,
                &listed.token,
                &by,
                kind,
            )
            .await
            .map(|_| ())
        })
        .await
        .map_err(private)?;
        tracing::info!(target: "pulse_server::access", tenant = %inv.tenant, practice = %inv.practice, page = %listed.id, invitation = %inv.id, "page connected");
        Ok((inv, practice_name, listed.id, listed.name))
    }
    .await;
    match result {
        Ok((inv, practice_name, page_id, page_name)) => {
            let mut resp = page(
                &state,
                StatusCode::OK,
                Step::Done { practice: inv.practice, practice_name, page: page_id, page_name },
            );
            resp.headers_mut().append(header::SET_COOKIE, cookie_header(&state, BINDING_COOKIE, "", 0));
            resp
        }
        Err(e) => shown(e),
    }
}
