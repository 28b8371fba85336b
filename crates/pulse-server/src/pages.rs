//! The dashboard: server-rendered HTML with inline SVG charts, no scripts, nothing fetched from elsewhere. Every page
//! reads through the application layer with the session's key, so it shows exactly what that key's API calls would.
//! The range (`from`, `to`) and, for a regional key, the tenant live in the URL, so a page can be shared.
//!
//! Each page is a template under `templates/dashboard/` (askama: checked when this crate compiles, every value
//! HTML-escaped) filled from a struct of display strings made here; the one thing inserted unescaped is the SVG
//! that `pulse_app::chart` draws (it escapes its own text), named `*_svg` or `charts`, and a test holds that.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use askama::Template;
use axum::body::Bytes;
use axum::extract::{Path, Query as QueryString, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::NaiveDate;
use pulse_app::chart::{self, Band, Series};
use pulse_app::error::{AppError, AppResult, ErrorKind};
use pulse_app::keys::{Caller, KeyScope};
use pulse_app::overview;
use pulse_app::report::{self, Kind, ReportAnswer};
use pulse_app::text::{effect_words, thousands};
use pulse_query::{self as aq, DateRange, Dimension, Filter, FilterOp, Metric, Query};

use crate::auth::{LOGIN_CSRF_COOKIE, SESSION_COOKIE, Session, cookie, random_token};
use crate::{Shared, log_request};

const CSS: &str = include_str!("pulse.css");

/// What every page knows: who, which tenant, which range, the query string to carry along.
#[derive(Clone)]
struct Ctx {
    caller: Caller,
    session: Session,
    tenant: String,
    tenant_name: String,
    /// The caller's tenants by id, with their names (the picker shows names).
    tenant_names: Vec<(String, String)>,
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
    params: HashMap<String, String>,
    /// The page's path, as requested.
    path: String,
    /// The range was not chosen: `from` is the start of the last 52 weeks of the reports, ending on this day. Links
    /// and the picker leave it out, so the default follows the reports (and each tenant's own).
    defaulted_to: Option<NaiveDate>,
    /// Invitations can be made here (`[onboarding]` is set).
    onboarding: bool,
    /// The tenant takes part in peer benchmarks.
    benchmark: bool,
}

/// The weeks a page shows when no range is chosen.
const DEFAULT_WEEKS: i64 = 52;

impl Ctx {
    /// `?tenant=..&from=..&to=..` for links, plus `extra`.
    fn link(&self, path: &str, extra: &[(&str, &str)]) -> String {
        let mut q = form_urlencoded::Serializer::new(String::new());
        if self.caller.tenants.len() > 1 {
            q.append_pair("tenant", &self.tenant);
        }
        if let Some(f) = self.from.filter(|_| self.defaulted_to.is_none()) {
            q.append_pair("from", &f.to_string());
        }
        if let Some(t) = self.to {
            q.append_pair("to", &t.to_string());
        }
        // All history asked for stays asked for from page to page.
        if self.from.is_none() && self.to.is_none() && self.params.contains_key("all") {
            q.append_pair("all", "1");
        }
        for (k, v) in extra {
            q.append_pair(k, v);
        }
        let q = q.finish();
        if q.is_empty() { path.to_owned() } else { format!("{path}?{q}") }
    }

    fn range(&self) -> DateRange {
        match (self.from, self.to) {
            (None, None) => DateRange::All,
            (f, t) => DateRange::Between(f.unwrap_or(NaiveDate::MIN), t.unwrap_or(NaiveDate::MAX)),
        }
    }
}

fn html_response(status: StatusCode, body: String) -> Response {
    let mut resp = (status, body).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// Renders a template; a template that fails to render (a formatting error) is an internal error, logged.
fn html<T: Template>(t: &T) -> AppResult<String> {
    t.render().map_err(|e| AppError::new(ErrorKind::Internal, format!("rendering a dashboard page: {e}")))
}

const PAGES: [(&str, &str); 7] = [
    ("/", "Overview"),
    ("/practices", "Practices"),
    ("/age-bands", "Age bands"),
    ("/campaigns", "Campaigns"),
    ("/posts", "Posts"),
    ("/posting", "When to post"),
    ("/quality", "Data quality"),
];

const REGION_PAGE: (&str, &str) = ("/region", "Region");

/// Shown for a tenant that takes part in peer benchmarks.
const BENCHMARKS_PAGE: (&str, &str) = ("/benchmarks", "Benchmarks");

/// Shown to sessions with the admin scope when onboarding is set up.
const INVITATIONS_PAGE: (&str, &str) = ("/invitations", "Invitations");

/// What the shared page template (`templates/dashboard/page.html`) shows above every signed-in page.
struct Nav {
    title: String,
    links: Vec<NavLink>,
    /// Who is signed in: the person (their email, from the identity provider) or `key <id>`.
    who: String,
    tenant_name: String,
    csrf: String,
    /// The page the range picker submits to.
    action: String,
    /// The tenant picker, for a key that reads several tenants (empty otherwise).
    tenants: Vec<TenantOption>,
    /// The page's own parameters, carried through the range picker.
    hidden: Vec<(String, String)>,
    /// When no range was chosen: the default's last day in words, and the link to all history.
    defaulted: Option<(String, String)>,
    from: String,
    to: String,
}

struct NavLink {
    href: String,
    label: &'static str,
    active: bool,
}

struct TenantOption {
    id: String,
    name: String,
    selected: bool,
}

impl Nav {
    fn new(ctx: &Ctx, active: &str, title: &str) -> Nav {
        let d = |x: Option<NaiveDate>| x.map(|d| d.to_string()).unwrap_or_default();
        let mut hidden: Vec<(String, String)> = ctx
            .params
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "tenant" | "from" | "to"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        hidden.sort();
        Nav {
            title: title.to_owned(),
            // A key that reads several tenants also has the regional view.
            links: PAGES
                .iter()
                .chain((ctx.caller.tenants.len() > 1).then_some(&REGION_PAGE))
                .chain(ctx.benchmark.then_some(&BENCHMARKS_PAGE))
                .chain((ctx.caller.scopes.contains(&KeyScope::Admin) && ctx.onboarding).then_some(&INVITATIONS_PAGE))
                .map(|(path, label)| NavLink { href: ctx.link(path, &[]), label, active: *path == active })
                .collect(),
            defaulted: ctx.defaulted_to.map(|to| {
                // This page as it is, over all history.
                let mut params: Vec<(&String, &String)> =
                    ctx.params.iter().filter(|(k, _)| !matches!(k.as_str(), "from" | "to" | "all")).collect();
                params.sort();
                let mut q = form_urlencoded::Serializer::new(String::new());
                q.extend_pairs(params);
                q.append_pair("all", "1");
                let from = ctx.from.map(uk).unwrap_or_default();
                (format!("{from} to {}", uk(to)), format!("{}?{}", ctx.path, q.finish()))
            }),
            who: if ctx.session.signed_in.is_some() {
                ctx.caller.key_name.clone()
            } else {
                format!("key {}", ctx.caller.key_id)
            },
            tenant_name: ctx.tenant_name.clone(),
            csrf: ctx.session.csrf.clone(),
            action: active.to_owned(),
            tenants: if ctx.caller.tenants.len() > 1 {
                ctx.tenant_names
                    .iter()
                    .map(|(id, name)| TenantOption { id: id.clone(), name: name.clone(), selected: *id == ctx.tenant })
                    .collect()
            } else {
                Vec::new()
            },
            hidden,
            from: d(ctx.from.filter(|_| ctx.defaulted_to.is_none())),
            to: d(ctx.to),
        }
    }
}

#[derive(Template)]
#[template(path = "dashboard/error.html")]
struct ErrorPage<'a> {
    title: &'a str,
    heading: &'a str,
    message: &'a str,
    hint: Option<&'a str>,
}

pub(crate) fn error_page(e: &AppError) -> Response {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let (message, hint) = match e.kind {
        ErrorKind::Unavailable | ErrorKind::Internal => {
            tracing::error!(kind = e.code(), "{e}");
            (
                "The data could not be read just now; nothing was changed.".to_owned(),
                Some("Try again shortly. The operator's log has the detail.".to_owned()),
            )
        }
        _ => (e.message.clone(), e.hint.clone()),
    };
    render_error(status, &message, hint.as_deref())
}

/// An error page saying what `e` says whatever its kind: for errors whose message is this server's own words
/// (sign-in: the identity provider unreachable or answering wrongly), never a dependency's text.
pub(crate) fn error_page_saying(e: &AppError) -> Response {
    if matches!(e.kind, ErrorKind::Unavailable | ErrorKind::Internal) {
        tracing::warn!(kind = e.code(), "{e}");
    }
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    render_error(status, &e.message, e.hint.as_deref())
}

fn render_error(status: StatusCode, message: &str, hint: Option<&str>) -> Response {
    let message = message.to_owned();
    let hint = hint.map(str::to_owned);
    let page = ErrorPage {
        title: "Error",
        heading: status.canonical_reason().unwrap_or("Error"),
        message: &message,
        hint: hint.as_deref(),
    };
    match page.render() {
        Ok(body) => html_response(status, body),
        // Not reached with these templates; never fail to answer an error.
        Err(_) => (status, message).into_response(),
    }
}

/// Authenticates the session and reads the tenant and range from the URL; redirects to the login page when there
/// is no session.
fn context(
    state: &Shared,
    headers: &HeaderMap,
    uri_path: &str,
    params: HashMap<String, String>,
) -> Result<Ctx, Box<Response>> {
    let (caller, session) = match state.gate.session_caller(&state.config, headers) {
        Ok(x) => x,
        Err(e) if e.kind == ErrorKind::Unauthenticated => {
            let mut q = form_urlencoded::Serializer::new(String::new());
            let mut next = uri_path.to_owned();
            if !params.is_empty() {
                let mut pq = form_urlencoded::Serializer::new(String::new());
                let mut ps: Vec<_> = params.iter().collect();
                ps.sort();
                for (k, v) in ps {
                    pq.append_pair(k, v);
                }
                next = format!("{next}?{}", pq.finish());
            }
            q.append_pair("next", &next);
            return Err(Box::new(Redirect::to(&format!("/login?{}", q.finish())).into_response()));
        }
        Err(e) => return Err(Box::new(error_page(&e))),
    };
    if let Err(e) = caller.require(KeyScope::Read) {
        return Err(Box::new(error_page(&e)));
    }
    let build = || -> AppResult<Ctx> {
        let scope = aq::tenant_scope(
            &caller.access,
            params
                .get("tenant")
                .filter(|t| !t.is_empty())
                .map(String::as_str)
                .or(caller.tenants.first().map(String::as_str)),
        )?;
        let tenant = scope.to_string();
        let tenant_name = state.config.tenant(scope.tenant()).map(|t| t.name.clone()).unwrap_or_else(|| tenant.clone());
        let from = crate::api::day(&params, "from")?;
        let to = crate::api::day(&params, "to")?;
        if let (Some(f), Some(t)) = (from, to)
            && t < f
        {
            return Err(AppError::bad_request(format!("the range ends ({t}) before it starts ({f})"))
                .with_hint("put the earlier day in From"));
        }
        let tenant_names = caller
            .tenants
            .iter()
            .map(|t| {
                (
                    t.clone(),
                    state
                        .config
                        .tenants
                        .iter()
                        .find(|c| c.id.as_str() == t)
                        .map_or_else(|| t.clone(), |c| c.name.clone()),
                )
            })
            .collect();
        Ok(Ctx {
            caller: caller.clone(),
            session: session.clone(),
            tenant,
            tenant_name,
            tenant_names,
            from,
            to,
            params: params.clone(),
            path: uri_path.to_owned(),
            defaulted_to: None,
            onboarding: state.connect.is_some(),
            benchmark: state.config.tenant(scope.tenant()).is_some_and(|t| t.benchmark),
        })
    };
    build().map_err(|e| Box::new(error_page(&e)))
}

/// Renders a page built by `f`, logging the request.
async fn render<F, Fut>(
    state: Shared,
    headers: HeaderMap,
    path: &str,
    params: HashMap<String, String>,
    f: F,
) -> Response
where
    F: FnOnce(Shared, Ctx) -> Fut,
    Fut: std::future::Future<Output = AppResult<(String, usize)>>,
{
    let started = Instant::now();
    let what = format!("GET {path}{}", crate::query_digest(params.iter()));
    let mut ctx = match context(&state, &headers, path, params) {
        Ok(c) => c,
        Err(resp) => {
            log_request("-", "-", &what, 0, resp.status().as_u16(), started);
            return *resp;
        }
    };
    // No range chosen: the last 52 weeks of the reports (they keep all history; `all=1` shows it whole), on the pages
    // that add figures up over the range. Campaigns, age bands (the latest window), data quality and the regional
    // view keep all history: a campaign or a window is not cut at a date.
    let sums_over_range = matches!(path, "/" | "/practices" | "/posts") || path.starts_with("/practices/");
    if sums_over_range && ctx.from.is_none() && ctx.to.is_none() && !ctx.params.contains_key("all") {
        match report::main_run(&state.store, &ctx.caller.access, &ctx.tenant).await {
            Ok(Some(run)) => {
                let from = run.range_to - chrono::Duration::days(DEFAULT_WEEKS * 7 - 1);
                ctx.from = Some(from.max(run.range_from));
                ctx.defaulted_to = Some(run.range_to);
            }
            // No reports yet: the page says so itself.
            Ok(None) => {}
            Err(e) => {
                log_request(&ctx.caller.key_id, &ctx.tenant, &what, 0, e.status(), started);
                return error_page(&e);
            }
        }
    }
    let (key, tenant) = (ctx.caller.key_id.clone(), ctx.tenant.clone());
    match f(state, ctx).await {
        Ok((html, rows)) => {
            log_request(&key, &tenant, &what, rows, 200, started);
            html_response(StatusCode::OK, html)
        }
        Err(e) => {
            log_request(&key, &tenant, &what, 0, e.status(), started);
            error_page(&e)
        }
    }
}

fn pct(v: Option<f64>) -> String {
    v.map(|x| format!("{:+.1}%", x * 100.0)).unwrap_or_else(|| "n/a".into())
}

fn num(v: Option<f64>) -> String {
    v.map(thousands).unwrap_or_else(|| "n/a".into())
}

fn rate(v: Option<f64>) -> String {
    v.map(|x| format!("{:.1}%", x * 100.0)).unwrap_or_else(|| "n/a".into())
}

fn per_thousand(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.1}")).unwrap_or_else(|| "n/a".into())
}

async fn run_query(
    state: &Shared,
    ctx: &Ctx,
    metrics: &[Metric],
    dims: &[Dimension],
    filters: Vec<Filter>,
    order: Vec<(String, bool)>,
    limit: usize,
) -> AppResult<aq::Answer> {
    let q = Query {
        tenant: Some(ctx.tenant.clone()),
        metrics: metrics.to_vec(),
        dimensions: dims.to_vec(),
        date_range: ctx.range(),
        filters,
        order_by: order,
        limit,
        offset: 0,
        renamed: Vec::new(),
    };
    aq::run(&state.store, &state.directory, &ctx.caller.access, &q, Some(&state.cache)).await
}

async fn read_report(
    state: &Shared,
    ctx: &Ctx,
    kind: Kind,
    practice: Option<&str>,
    sort: Option<&str>,
    top: Option<usize>,
) -> AppResult<ReportAnswer> {
    let mut q = report::ReportQuery::new(kind);
    q.tenant = Some(ctx.tenant.clone());
    q.practice = practice.map(str::to_owned);
    q.from = ctx.from;
    q.to = ctx.to;
    q.sort = sort.map(str::to_owned);
    q.top = top;
    report::query(&state.store, &state.config, &ctx.caller.access, &q).await
}

struct Card {
    label: &'static str,
    value: String,
    changes: Vec<CardChange>,
}

struct CardChange {
    /// `up`, `down` or `flat`: the change's colour.
    class: &'static str,
    change: String,
    against: &'static str,
}

struct LatestWeek {
    ending: String,
    pages: u32,
    cards: Vec<Card>,
}

#[derive(Template)]
#[template(path = "dashboard/overview.html")]
struct OverviewPage {
    nav: Nav,
    latest: Option<LatestWeek>,
    reach_svg: String,
    engaged_svg: String,
}

pub async fn overview(
    State(state): State<Shared>,
    headers: HeaderMap,
    QueryString(params): QueryString<HashMap<String, String>>,
) -> Response {
    render(state, headers, "/", params, |state, ctx| async move {
        let o = overview::weekly(&state.store, &state.config, &ctx.caller.access, Some(&ctx.tenant), ctx.from, ctx.to)
            .await?;
        let latest = o.latest.as_ref().map(|l| {
            let card = |label, f: fn(&overview::Week) -> Option<f64>| Card {
                label,
                value: num(f(l)),
                changes: [("vs previous week", o.previous.as_ref()), ("vs same week last year", o.last_year.as_ref())]
                    .into_iter()
                    .map(|(against, then)| {
                        let c = overview::change(f(l), then.and_then(f));
                        let class = match c {
                            Some(x) if x > 0.0 => "up",
                            Some(x) if x < 0.0 => "down",
                            _ => "flat",
                        };
                        CardChange { class, change: pct(c), against }
                    })
                    .collect(),
            };
            LatestWeek {
                ending: uk(l.ending),
                pages: l.pages,
                cards: vec![
                    card("Reach (gross)", |w| w.reach),
                    card("Engaged users (gross)", |w| w.engaged_users),
                    card("Views", |w| w.views),
                ],
            }
        });
        let labels: Vec<String> = o.weeks.iter().map(|w| uk(w.ending)).collect();
        // Each on its own axis: engaged users are a few per cent of reach and would draw flat along the bottom.
        let reach_svg = chart::lines(
            "Weekly reach across the tenant's pages",
            &labels,
            &[Series {
                name: "reach".into(),
                colour: chart::BLUE,
                values: o.weeks.iter().map(|w| w.reach).collect(),
                dashed: false,
            }],
            None,
            960,
            260,
        );
        let engaged_svg = chart::lines(
            "Weekly engaged users across the tenant's pages",
            &labels,
            &[Series {
                name: "engaged users".into(),
                colour: chart::ORANGE,
                values: o.weeks.iter().map(|w| w.engaged_users).collect(),
                dashed: false,
            }],
            None,
            960,
            200,
        );
        let nav = Nav::new(&ctx, "/", &format!("{} overview", ctx.tenant_name));
        Ok((html(&OverviewPage { nav, latest, reach_svg, engaged_svg })?, o.weeks.len()))
    })
    .await
}

fn sort_param(params: &HashMap<String, String>, allowed: &[&str], default: &str) -> (String, bool) {
    let sort =
        params.get("sort").filter(|s| allowed.contains(&s.as_str())).cloned().unwrap_or_else(|| default.to_owned());
    let desc = params.get("dir").map(|d| d != "asc").unwrap_or(true);
    (sort, desc)
}

struct Heading {
    href: String,
    label: &'static str,
    /// ` ▼`, ` ▲` on the column sorted by, empty on the others.
    arrow: &'static str,
}

struct PracticeRow {
    href: String,
    name: String,
    code: String,
    reach: String,
    engaged_users: String,
    views: String,
    engagement_rate: String,
    per_1000: String,
}

#[derive(Template)]
#[template(path = "dashboard/practices.html")]
struct PracticesPage {
    nav: Nav,
    headings: Vec<Heading>,
    rows: Vec<PracticeRow>,
    bars_svg: String,
}

pub async fn practices(
    State(state): State<Shared>,
    headers: HeaderMap,
    QueryString(params): QueryString<HashMap<String, String>>,
) -> Response {
    render(state, headers, "/practices", params, |state, ctx| async move {
        let metrics = [Metric::Reach, Metric::EngagedUsers, Metric::Views, Metric::EngagementRate, Metric::Penetration];
        let names: Vec<&str> = metrics.iter().map(|m| m.name()).chain(["practice"]).collect();
        let (sort, desc) = sort_param(&ctx.params, &names, Metric::Penetration.name());
        let answer = run_query(
            &state,
            &ctx,
            &metrics,
            &[Dimension::Practice],
            vec![],
            vec![(sort.clone(), desc)],
            aq::MAX_LIMIT,
        )
        .await?;
        let tenant_practices = state.directory.names.get(&ctx.tenant).cloned().unwrap_or_default();
        let headings = [
            ("practice", "Practice"),
            (Metric::Reach.name(), "Reach (gross)"),
            (Metric::EngagedUsers.name(), "Engaged users (gross)"),
            ("views", "Views"),
            ("engagement_rate", "Engagement rate"),
            (Metric::Penetration.name(), "Weekly reach per 1,000 patients"),
        ]
        .into_iter()
        .map(|(key, label)| {
            let dir = if sort == key && desc { "asc" } else { "desc" };
            let arrow = match (sort == key, desc) {
                (true, true) => " ▼",
                (true, false) => " ▲",
                (false, _) => "",
            };
            Heading { href: ctx.link("/practices", &[("sort", key), ("dir", dir)]), label, arrow }
        })
        .collect();
        let rows = answer
            .results
            .iter()
            .map(|r| {
                let code = &r.dimensions[0];
                PracticeRow {
                    href: ctx.link(&format!("/practices/{code}"), &[]),
                    name: answer.meta.practice_names.get(code).cloned().unwrap_or_default(),
                    code: code.clone(),
                    reach: num(r.metrics[0]),
                    engaged_users: num(r.metrics[1]),
                    views: num(r.metrics[2]),
                    engagement_rate: rate(r.metrics[3]),
                    per_1000: per_thousand(r.metrics[4]),
                }
            })
            .collect();
        let bars: Vec<(String, Option<f64>)> = answer
            .results
            .iter()
            .take(15)
            .map(|r| (practice_label(&tenant_practices, &r.dimensions[0]), r.metrics[4]))
            .collect();
        let bars_svg = chart::bars("Penetration by practice", &bars, chart::BLUE, 900, &|v| format!("{v:.1}"));
        let page = PracticesPage { nav: Nav::new(&ctx, "/practices", "Practices"), headings, rows, bars_svg };
        Ok((html(&page)?, answer.results.len()))
    })
    .await
}

#[derive(Template)]
#[template(path = "dashboard/practice.html")]
struct PracticePage {
    nav: Nav,
    name: String,
    code: String,
    charts: Vec<String>,
    posts: PostsTable,
}

pub async fn practice(
    State(state): State<Shared>,
    headers: HeaderMap,
    Path(code): Path<String>,
    QueryString(params): QueryString<HashMap<String, String>>,
) -> Response {
    let path = format!("/practices/{code}");
    render(state, headers, &path.clone(), params, |state, ctx| async move {
        let names = state.directory.names.get(&ctx.tenant).cloned().unwrap_or_default();
        let Some(name) = names.get(&code) else {
            return Err(AppError::not_found(format!("practice {code} is not one of {}'s practices", ctx.tenant_name))
                .with_hint("pick one from the Practices page"));
        };
        let filter = Filter { op: FilterOp::Is, dimension: Dimension::Practice, values: vec![code.clone()] };
        let weekly = run_query(
            &state,
            &ctx,
            &[Metric::Reach, Metric::EngagedUsers, Metric::Views, Metric::Penetration],
            &[Dimension::Week],
            vec![filter],
            vec![("week".into(), false)],
            aq::MAX_LIMIT,
        )
        .await?;
        let labels: Vec<String> = weekly.results.iter().map(|r| uk_text(&r.dimensions[0])).collect();
        let charts = [
            ("Weekly reach", "reach", chart::BLUE, 0, 240),
            ("Weekly engaged users", "engaged users", chart::ORANGE, 1, 180),
        ]
        .into_iter()
        .map(|(title, series, colour, m, height)| {
            chart::lines(
                &format!("{title}, {}", practice_label(&names, &code)),
                &labels,
                &[Series {
                    name: series.into(),
                    colour,
                    values: weekly.results.iter().map(|r| r.metrics[m]).collect(),
                    dashed: false,
                }],
                None,
                960,
                height,
            )
        })
        .collect();
        let posts = read_report(&state, &ctx, Kind::Posts, Some(&code), Some("-reach"), Some(10)).await?;
        let rows = weekly.results.len() + posts.batch.num_rows();
        let page = PracticePage {
            nav: Nav::new(&ctx, "/practices", name),
            name: name.clone(),
            code: code.clone(),
            charts,
            posts: PostsTable::of(&posts, &state.config)?,
        };
        Ok((html(&page)?, rows))
    })
    .await
}

/// A practice as charts and lists name it: its name, with its ODS code when another practice of the tenant has the
/// same name ("The Surgery" is common).
fn practice_label(names: &BTreeMap<String, String>, code: &str) -> String {
    match names.get(code) {
        Some(name) if names.values().filter(|n| *n == name).count() > 1 => format!("{name} ({code})"),
        Some(name) => name.clone(),
        None => code.to_owned(),
    }
}

/// A day as the dashboard writes it everywhere: `25 Mar 2018` (UK style; ISO stays in URLs and downloads).
fn uk(d: NaiveDate) -> String {
    d.format("%-d %b %Y").to_string()
}

/// A moment in the scheduler's time zone, in the dashboard's style: `Mon 26 Mar 2018 08:00 BST`.
fn uk_time(config: &pulse_config::Config, t: chrono::DateTime<chrono::Utc>) -> String {
    t.with_timezone(&config.scheduler.tz()).format("%a %-d %b %Y %H:%M %Z").to_string()
}

/// An ISO day (`2018-03-25`) in the dashboard's style; anything else as it is.
fn uk_text(iso: &str) -> String {
    NaiveDate::parse_from_str(iso, "%Y-%m-%d").map_or_else(|_| iso.to_owned(), uk)
}

/// The posts of a report answer as the dashboard lists them (`templates/dashboard/posts_table.html`).
struct PostsTable {
    rows: Vec<PostRow>,
    /// Why there are none, when there are none.
    empty: String,
}

struct PostRow {
    posted: String,
    practice: String,
    /// The start of the post's text (a link to it when `permalink` is a Facebook address).
    excerpt: String,
    /// `https://` only (the pipelines keep only Facebook addresses): anything else is not linked.
    permalink: String,
    post_type: String,
    topic: String,
    reach: String,
    views: String,
    video_views: String,
    engagement_rate: String,
}

impl PostsTable {
    /// The rows of a posts answer, posting times in `config`'s time zone; "–" where a figure does not apply to the
    /// post (video views of a photo), "n/a" where it applies but Meta gave none.
    fn of(posts: &ReportAnswer, config: &pulse_config::Config) -> AppResult<PostsTable> {
        let rows = posts
            .post_views()?
            .into_iter()
            .map(|p| {
                let video_views = if p.applies("video_views") { num(p.video_views) } else { "–".to_owned() };
                PostRow {
                    posted: match p.posted_at {
                        Some(t) => t.with_timezone(&config.scheduler.tz()).format("%-d %b %Y %H:%M").to_string(),
                        None => p.created.map(uk).unwrap_or_default(),
                    },
                    permalink: if p.permalink.starts_with("https://") { p.permalink } else { String::new() },
                    excerpt: if p.excerpt.is_empty() { "–".to_owned() } else { p.excerpt },
                    practice: p.practice_name,
                    post_type: p.post_type,
                    topic: p.topic,
                    reach: num(p.reach),
                    views: num(p.views),
                    video_views,
                    engagement_rate: rate(p.engagement_rate),
                }
            })
            .collect();
        let empty = posts.empty_note.clone().unwrap_or_else(|| "No posts in this range.".to_owned());
        Ok(PostsTable { rows, empty })
    }
}

struct BandRow {
    band: String,
    people: String,
    per_1000: String,
}

#[derive(Template)]
#[template(path = "dashboard/age_bands.html")]
struct AgeBandsPage {
    nav: Nav,
    notes: Vec<String>,
    rows: Vec<BandRow>,
    people_svg: String,
    per_1000_svg: String,
}

pub async fn age_bands(
    State(state): State<Shared>,
    headers: HeaderMap,
    QueryString(params): QueryString<HashMap<String, String>>,
) -> Response {
    render(state, headers, "/age-bands", params, |state, ctx| async move {
        let answer = run_query(
            &state,
            &ctx,
            &[Metric::People, Metric::Penetration],
            &[Dimension::AgeBand],
            vec![],
            vec![("age_band".into(), false)],
            100,
        )
        .await?;
        let people: Vec<(String, Option<f64>)> =
            answer.results.iter().map(|r| (r.dimensions[0].clone(), r.metrics[0])).collect();
        let pen: Vec<(String, Option<f64>)> =
            answer.results.iter().map(|r| (r.dimensions[0].clone(), r.metrics[1])).collect();
        let page = AgeBandsPage {
            nav: Nav::new(&ctx, "/age-bands", "Age bands"),
            notes: answer.meta.notes.clone(),
            rows: answer
                .results
                .iter()
                .map(|r| BandRow {
                    band: r.dimensions[0].clone(),
                    people: num(r.metrics[0]),
                    per_1000: per_thousand(r.metrics[1]),
                })
                .collect(),
            people_svg: chart::bars("People by age band", &people, chart::BLUE, 460, &|v| thousands(v)),
            per_1000_svg: chart::bars("Penetration by age band", &pen, chart::GREEN, 460, &|v| format!("{v:.1}")),
        };
        Ok((html(&page)?, answer.results.len()))
    })
    .await
}

/// The metrics a campaign is measured on, in the order the campaigns page offers them.
const CAMPAIGN_METRICS: [&str; 4] = ["views", "reach", "engagements", "video_views"];

struct MetricLink {
    href: String,
    label: String,
    active: bool,
}

struct CampaignSection {
    /// `pre-registered` or `post hoc` for a registered campaign (none for a config one).
    registration: Option<&'static str>,
    name: String,
    from: String,
    to: String,
    posts: f64,
    post_lifetime: String,
    effect: Option<Effect>,
    /// Why there is no estimate, when there is none.
    note: String,
    series_svg: String,
}

struct Effect {
    words: String,
    lift: String,
    interval_svg: String,
}

#[derive(Template)]
#[template(path = "dashboard/campaigns.html")]
struct CampaignsPage {
    nav: Nav,
    metric: String,
    metrics: Vec<MetricLink>,
    campaigns: Vec<CampaignSection>,
    plan_href: String,
    /// Every campaign of the tenant on record (config and registered, withdrawn ones marked).
    record: Vec<RecordRow>,
    /// The caller may register and withdraw campaigns (admin scope).
    admin: bool,
    action: String,
    withdraw_action: String,
    form: RegisterForm,
    metric_names: &'static [&'static str],
}

#[derive(Template)]
#[template(path = "dashboard/plan.html")]
struct PlanPage {
    nav: Nav,
    /// The tenant, carried by the form for a key that reads several.
    tenant_field: Option<String>,
    form: PlanForm,
    metric_options: Vec<(String, bool)>,
    error: Option<String>,
    plan: Option<PlanView>,
    target_heading: String,
    chart_svg: String,
    share_labels: Vec<String>,
    /// Per duration: its cells (text, detected).
    options: Vec<(u32, Vec<(String, bool)>)>,
    needed: String,
}

struct PlanForm {
    start: String,
    days: String,
    share: String,
    target: String,
}

struct PlanView {
    headline: String,
    metric: String,
    mde: String,
    lift: String,
    level: String,
    placebos: usize,
    method: String,
}

fn capitalised(s: &str) -> String {
    let mut c = s.chars();
    c.next().map(|f| f.to_uppercase().chain(c).collect()).unwrap_or_default()
}

/// `/campaigns/plan`: the planner's form, and its answer once a start is given.
pub async fn campaign_plan(
    State(state): State<Shared>,
    headers: HeaderMap,
    QueryString(params): QueryString<HashMap<String, String>>,
) -> Response {
    use pulse_app::plan::{self, DAYS_OPTIONS, SHARE_OPTIONS};
    render(state, headers, "/campaigns/plan", params, |state, ctx| async move {
        let get = |k: &str| ctx.params.get(k).cloned().unwrap_or_default();
        let form = PlanForm {
            start: get("start"),
            days: ctx.params.get("days").cloned().unwrap_or_else(|| "2".into()),
            share: ctx.params.get("share").cloned().unwrap_or_else(|| "0.5".into()),
            target: get("target"),
        };
        let metric = ctx.params.get("metric").cloned().unwrap_or_else(|| "views".into());
        let metric_options = CAMPAIGN_METRICS.iter().map(|m| ((*m).to_owned(), *m == metric)).collect();
        let mut page = PlanPage {
            nav: Nav::new(&ctx, "/campaigns", "Plan a campaign"),
            tenant_field: (ctx.caller.tenants.len() > 1).then(|| ctx.tenant.clone()),
            form,
            metric_options,
            error: None,
            plan: None,
            target_heading: String::new(),
            chart_svg: String::new(),
            share_labels: SHARE_OPTIONS.iter().map(|s| format!("{:.0}% of pages", s * 100.0)).collect(),
            options: Vec::new(),
            needed: String::new(),
        };
        if page.form.start.is_empty() {
            return Ok((html(&page)?, 0));
        }
        // Only the planner's own parameters, for this page's tenant (the range picker's are not the plan's).
        let mut asked: HashMap<String, String> = ctx
            .params
            .iter()
            .filter(|(k, _)| matches!(k.as_str(), "start" | "days" | "share" | "metric" | "target"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        asked.insert("tenant".into(), ctx.tenant.clone());
        let started = Instant::now();
        let answer = match crate::api::plan_request(&ctx.caller, &asked) {
            Ok(request) => plan::plan_on(&state.store, &state.config, &ctx.caller.access, &request).await,
            Err(e) => Err(e),
        };
        // A plan is computation: charged to the key's work budget, as the API charges it.
        state.gate.work.charge(&ctx.caller.key_id, started.elapsed().as_secs_f64() * 1000.0);
        let answer = match answer {
            Ok(a) => a,
            // Wrong input, or a plan the history cannot make: said beside the form, which keeps what was typed.
            Err(e) if e.status() == 400 => {
                page.error = Some(e.to_string());
                return Ok((html(&page)?, 0));
            }
            Err(e) => return Err(e),
        };
        let p = &answer.plan;
        page.plan = Some(PlanView {
            headline: format!(
                "{} over {} day{} from {}, {:.0}% of {} pages taking part ({})",
                capitalised(&answer.metric.replace('_', " ")),
                p.days,
                if p.days == 1 { "" } else { "s" },
                uk(p.start),
                p.share * 100.0,
                p.pages,
                p.participants
            ),
            metric: answer.metric.replace('_', " "),
            mde: thousands(p.mde),
            lift: if p.baseline > 0.0 {
                format!(", {:.0}% of their usual {}", 100.0 * p.mde / p.baseline, thousands(p.baseline))
            } else {
                String::new()
            },
            level: plan::level_words(p.level),
            placebos: p.placebos,
            method: p.method.clone(),
        });
        if let Some(target) = answer.target {
            page.target_heading = format!(
                "If the campaign adds {} {} over {} days with {} pages: by duration and share of pages",
                thousands(target),
                answer.metric.replace('_', " "),
                p.days,
                p.participants
            );
            for &d in DAYS_OPTIONS {
                let cells = SHARE_OPTIONS
                    .iter()
                    .map(|&s| {
                        answer.options.iter().find(|o| o.plan.days == d && (o.plan.share - s).abs() < 1e-9).map_or_else(
                            || ("n/a".to_owned(), false),
                            |o| {
                                let mark = if o.detects() { " ✓" } else { "" };
                                (format!("{} / {}{mark}", thousands(o.expected), thousands(o.plan.mde)), o.detects())
                            },
                        )
                    })
                    .collect();
                page.options.push((d, cells));
            }
            // The compared share nearest the asked one, by duration: what the campaign would add against what it
            // must add to be seen.
            let nearest =
                SHARE_OPTIONS.iter().copied().min_by(|a, b| (a - p.share).abs().total_cmp(&(b - p.share).abs()));
            let at_share: Vec<&plan::PlanOption> = DAYS_OPTIONS
                .iter()
                .filter_map(|&d| answer.options.iter().find(|o| o.plan.days == d && Some(o.plan.share) == nearest))
                .collect();
            if !at_share.is_empty() {
                let labels: Vec<String> = at_share.iter().map(|o| format!("{} d", o.plan.days)).collect();
                page.chart_svg = chart::lines(
                    &format!(
                        "Expected effect and minimum detectable effect by duration, {:.0}% of pages",
                        at_share[0].plan.share * 100.0
                    ),
                    &labels,
                    &[
                        Series {
                            name: "expected".into(),
                            colour: chart::BLUE,
                            values: at_share.iter().map(|o| Some(o.expected)).collect(),
                            dashed: false,
                        },
                        Series {
                            name: "minimum detectable".into(),
                            colour: chart::ORANGE,
                            values: at_share.iter().map(|o| Some(o.plan.mde)).collect(),
                            dashed: true,
                        },
                    ],
                    None,
                    720,
                    240,
                );
            }
            page.needed = plan::needed_words(&answer);
        }
        let rows = answer.options.len() + 1;
        Ok((html(&page)?, rows))
    })
    .await
}

pub async fn campaigns(
    State(state): State<Shared>,
    headers: HeaderMap,
    QueryString(params): QueryString<HashMap<String, String>>,
) -> Response {
    render(state, headers, "/campaigns", params, |state, ctx| async move {
        campaigns_html(&state, &ctx, RegisterForm::default()).await
    })
    .await
}

/// The Campaigns page's register form: what was typed, and what came of it.
#[derive(Default)]
struct RegisterForm {
    values: HashMap<String, String>,
    error: Option<String>,
    done: Option<String>,
}

impl RegisterForm {
    fn value(&self, field: &str) -> &str {
        self.values.get(field).map_or("", String::as_str)
    }
}

/// A registered campaign's row on the Campaigns page.
struct RecordRow {
    name: String,
    window: String,
    matches: String,
    registration: String,
    registered: String,
    plan: String,
    withdrawn: Option<String>,
    /// It can be withdrawn here (registered, not withdrawn, and the caller may manage campaigns).
    withdrawable: bool,
}

async fn campaigns_html(state: &Shared, ctx: &Ctx, form: RegisterForm) -> AppResult<(String, usize)> {
    let metric = ctx.params.get("metric").cloned().unwrap_or_else(|| "views".into());
    if !CAMPAIGN_METRICS.contains(&metric.as_str()) {
        return Err(AppError::bad_request(format!("no campaign metric `{metric}`"))
            .with_hint("use views, reach, engagements or video_views"));
    }
    // Before the tenant's first jobs run there are no effects yet, and campaigns can still be registered.
    let (effects, days) = match read_report(state, ctx, Kind::Campaigns, None, None, None).await {
        Ok(uplift) => {
            let mut series_q = report::ReportQuery::new(Kind::CampaignSeries);
            series_q.tenant = Some(ctx.tenant.clone());
            let series = report::query(&state.store, &state.config, &ctx.caller.access, &series_q).await?;
            (uplift.campaign_effects()?, series.campaign_days()?)
        }
        Err(e) if e.kind == ErrorKind::NotReady => (Vec::new(), Vec::new()),
        Err(e) => return Err(e),
    };
    let listed =
        pulse_app::campaigns::listed(&state.store, &state.config, &ctx.caller.access, Some(&ctx.tenant)).await?;
    let campaigns: Vec<CampaignSection> = effects
        .iter()
        .filter(|c| c.practice_code == "ALL" && c.metric == metric)
        .map(|c| {
            let name = &c.campaign;
            let (from, to) = (c.window_from, c.window_to);
            let effect = c.interval().map(|(e, lo, hi)| Effect {
                words: effect_words(e, lo, hi, c.interval_level),
                lift: c.lift_pct.map(|l| format!("{l:+.0}%")).unwrap_or_else(|| "n/a".into()),
                interval_svg: chart::interval(&format!("Effect of {name} with its interval"), e, lo, hi, 600),
            });
            // Observed against counterfactual, day by day, with the campaign's window shaded.
            let series: Vec<_> =
                days.iter().filter(|d| &d.campaign == name && d.practice_code == "ALL" && d.metric == metric).collect();
            let observed: Vec<Option<f64>> = series.iter().map(|d| d.observed).collect();
            let counterfactual: Vec<Option<f64>> = series.iter().map(|d| d.counterfactual).collect();
            let in_window: Vec<Option<f64>> =
                series.iter().map(|d| (d.day.is_some() && d.day >= from && d.day <= to).then_some(0.0)).collect();
            let top = observed.iter().chain(&counterfactual).flatten().fold(0.0f64, |a, b| a.max(*b));
            let labels: Vec<String> = series.iter().map(|d| d.day.map(uk).unwrap_or_default()).collect();
            let band = Band {
                lo: in_window.clone(),
                hi: in_window.iter().map(|v| v.map(|_| top)).collect(),
                colour: chart::ORANGE,
            };
            let series_svg = chart::lines(
                &format!("{name}: observed and counterfactual daily {metric}"),
                &labels,
                &[
                    Series { name: "observed".into(), colour: chart::BLUE, values: observed, dashed: false },
                    Series { name: "counterfactual".into(), colour: chart::GREY, values: counterfactual, dashed: true },
                ],
                Some(&band),
                960,
                260,
            );
            CampaignSection {
                registration: pulse_app::campaigns::label(&listed, &ctx.tenant, name),
                name: name.clone(),
                from: from.map(uk).unwrap_or_default(),
                to: to.map(uk).unwrap_or_default(),
                posts: c.posts,
                post_lifetime: num(c.post_lifetime),
                effect,
                note: c.note.clone(),
                series_svg,
            }
        })
        .collect();
    let metrics = CAMPAIGN_METRICS
        .iter()
        .map(|m| MetricLink {
            href: ctx.link("/campaigns", &[("metric", m)]),
            label: m.replace('_', " "),
            active: *m == metric,
        })
        .collect();
    let rows = campaigns.len();
    let plan_href = ctx.link("/campaigns/plan", &[]);
    let admin = ctx.caller.require(KeyScope::Admin).is_ok();
    let record = record_rows(state, ctx, &listed, admin);
    let page = CampaignsPage {
        nav: Nav::new(ctx, "/campaigns", "Campaigns"),
        metric,
        metrics,
        campaigns,
        plan_href,
        record,
        admin,
        action: ctx.link("/campaigns", &[]),
        withdraw_action: ctx.link("/campaigns/withdraw", &[]),
        form,
        metric_names: &CAMPAIGN_METRICS,
    };
    Ok((html(&page)?, rows))
}

fn record_rows(state: &Shared, ctx: &Ctx, listed: &[pulse_app::campaigns::Managed], admin: bool) -> Vec<RecordRow> {
    listed
        .iter()
        .map(|m| {
            let end = m.start + chrono::Duration::days(i64::from(m.days.max(1)) - 1);
            let plan = match (&m.plan, &m.plan_note) {
                (Some(p), _) => {
                    let metric = p["metric"].as_str().unwrap_or("views").replace('_', " ");
                    let mde = p["plan"]["mde"].as_f64().unwrap_or(f64::NAN);
                    let baseline = p["plan"]["baseline"].as_f64().unwrap_or(0.0);
                    let share = p["plan"]["share"].as_f64().unwrap_or(0.0);
                    let lift = if baseline > 0.0 {
                        format!(" ({:.0}% of usual)", 100.0 * mde / baseline)
                    } else {
                        String::new()
                    };
                    format!(
                        "detects {} {metric}{lift} with {:.0}% of pages taking part",
                        pulse_app::text::thousands(mde),
                        share * 100.0
                    )
                }
                (None, Some(note)) => note.clone(),
                (None, None) => "–".into(),
            };
            RecordRow {
                name: m.name.clone(),
                window: format!("{} to {}", uk(m.start), uk(end)),
                matches: m.matches.clone(),
                registration: m.registration.clone(),
                registered: match (&m.registered_at, &m.registered_by) {
                    (Some(at), Some(by)) => format!("{} by {by}", uk_time(&state.config, *at)),
                    _ => "in the config".into(),
                },
                plan,
                withdrawn: match m.withdrawn_at {
                    Some(at) => {
                        Some(format!("{} by {}", uk_time(&state.config, at), m.withdrawn_by.as_deref().unwrap_or("?")))
                    }
                    None if m.shadowed => Some("not computed: the config now has a campaign of this name".into()),
                    None => None,
                },
                // Only before its cutoff: afterwards it stays computed.
                withdrawable: admin
                    && m.source == "registered"
                    && m.is_active()
                    && ctx.tenant == m.tenant
                    && chrono::Utc::now() < pulse_app::campaigns::cutoff(m.start),
            }
        })
        .collect()
}

/// `POST /campaigns` (admin, the page's form: `csrf`, `name`, `start`, `days`, `hashtag`, `post_type`, `share`,
/// `metric`): registers a campaign; the page shows it on record, or the error beside the form with what was typed.
pub async fn campaigns_register(
    State(state): State<Shared>,
    headers: HeaderMap,
    QueryString(params): QueryString<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    campaigns_form(state, headers, params, body, "POST /campaigns", |state, ctx, form, by| async move {
        let num = |field: &str| -> AppResult<Option<f64>> {
            match form.get(field).map(|v| v.trim()).filter(|v| !v.is_empty()) {
                None => Ok(None),
                Some(v) => v
                    .parse()
                    .map(Some)
                    .map_err(|_| AppError::bad_request(format!("{field} `{v}` is not a number")).at(field.to_owned())),
            }
        };
        let text = |field: &str| form.get(field).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let days = num("days")?.unwrap_or(2.0);
        if days.fract() != 0.0 || !(1.0..=28.0).contains(&days) {
            return Err(AppError::bad_request("days must be a whole number from 1 to 28").at("days"));
        }
        let request = pulse_app::campaigns::RegisterRequest {
            tenant: ctx.tenant.clone(),
            name: text("name").unwrap_or_default(),
            start: text("start").unwrap_or_default(),
            days: days as u32,
            hashtag: text("hashtag"),
            link: text("link"),
            text: text("text"),
            posts: Vec::new(),
            post_type: text("post_type"),
            share: num("share")?,
            metric: text("metric"),
            target: num("target")?,
        };
        let m = pulse_app::campaigns::register(
            &state.store,
            &state.config,
            &ctx.caller.access,
            &request,
            &by,
            chrono::Utc::now(),
        )
        .await?;
        Ok(format!("Registered {} ({}).", m.name, m.registration))
    })
    .await
}

/// `POST /campaigns/withdraw` (admin, `csrf` and `name`): withdraws a registered campaign; it stays on record.
pub async fn campaigns_withdraw(
    State(state): State<Shared>,
    headers: HeaderMap,
    QueryString(params): QueryString<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    campaigns_form(state, headers, params, body, "POST /campaigns/withdraw", |state, ctx, form, by| async move {
        let name = form.get("name").cloned().unwrap_or_default();
        let m = pulse_app::campaigns::withdraw(
            &state.store,
            &state.config,
            &ctx.caller.access,
            &ctx.tenant,
            &name,
            &by,
            chrono::Utc::now(),
        )
        .await?;
        Ok(format!("Withdrew {}: it is no longer computed from the next run, and stays on record.", m.name))
    })
    .await
}

/// A form posted to the Campaigns page: checked to come from the dashboard and from a key that may manage campaigns,
/// then `act` (which says what it did); the page is shown again with that, or the error and what was typed.
async fn campaigns_form<F, Fut>(
    state: Shared,
    headers: HeaderMap,
    params: HashMap<String, String>,
    body: Bytes,
    what: &str,
    act: F,
) -> Response
where
    F: FnOnce(Shared, Ctx, HashMap<String, String>, String) -> Fut,
    Fut: std::future::Future<Output = AppResult<String>>,
{
    let started = Instant::now();
    let values: HashMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
    let ctx = match context(&state, &headers, "/campaigns", params) {
        Ok(c) => c,
        Err(resp) => return *resp,
    };
    if values.get("csrf") != Some(&ctx.session.csrf) {
        let e = AppError::forbidden("the form did not come from this dashboard")
            .with_hint("use the form on the Campaigns page");
        log_request(&ctx.caller.key_id, &ctx.tenant, what, 0, e.status(), started);
        return error_page(&e);
    }
    if let Err(e) = ctx.caller.require(KeyScope::Admin) {
        log_request(&ctx.caller.key_id, &ctx.tenant, what, 0, e.status(), started);
        return error_page(&e);
    }
    let by = match &ctx.session.signed_in {
        Some(_) => ctx.caller.key_name.clone(),
        None => format!("key {}", ctx.caller.key_id),
    };
    let acting = Instant::now();
    let outcome = act(state.clone(), ctx.clone(), values.clone(), by).await;
    // A registration before its start makes a plan: computation, charged to the key's work budget as the API's is.
    state.gate.work.charge(&ctx.caller.key_id, acting.elapsed().as_secs_f64() * 1000.0);
    let (status, form) = match outcome {
        Ok(done) => (StatusCode::OK, RegisterForm { values: HashMap::new(), error: None, done: Some(done) }),
        // A failure of the service, not of what was typed: the error page, which says only what may be said.
        Err(e) if e.status() >= 500 => {
            log_request(&ctx.caller.key_id, &ctx.tenant, what, 0, e.status(), started);
            return error_page(&e);
        }
        Err(e) => {
            let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
            let mut message = e.to_string();
            if let Some(field) = &e.field {
                message = format!("{field}: {message}");
            }
            (status, RegisterForm { values, error: Some(message), done: None })
        }
    };
    match campaigns_html(&state, &ctx, form).await {
        Ok((body, n)) => {
            log_request(&ctx.caller.key_id, &ctx.tenant, what, n, status.as_u16(), started);
            let mut resp = html_response(status, body);
            resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            resp
        }
        Err(e) => {
            log_request(&ctx.caller.key_id, &ctx.tenant, what, 0, e.status(), started);
            error_page(&e)
        }
    }
}

#[derive(Template)]
#[template(path = "dashboard/posts.html")]
struct PostsPage {
    nav: Nav,
    by_type_svg: String,
    posts: PostsTable,
}

pub async fn posts(
    State(state): State<Shared>,
    headers: HeaderMap,
    QueryString(params): QueryString<HashMap<String, String>>,
) -> Response {
    render(state, headers, "/posts", params, |state, ctx| async move {
        let answer = read_report(&state, &ctx, Kind::Posts, None, Some("-reach"), Some(50)).await?;
        let by_type = run_query(
            &state,
            &ctx,
            &[Metric::Posts, Metric::Reach, Metric::EngagementRate],
            &[Dimension::PostType],
            vec![],
            vec![(Metric::Reach.name().into(), true)],
            100,
        )
        .await?;
        let bars: Vec<(String, Option<f64>)> = by_type
            .results
            .iter()
            .map(|r| (format!("{} ({} posts)", r.dimensions[0], num(r.metrics[0])), r.metrics[1]))
            .collect();
        let page = PostsPage {
            nav: Nav::new(&ctx, "/posts", "Posts"),
            by_type_svg: chart::bars("Reach by post type", &bars, chart::BLUE, 700, &|v| thousands(v)),
            posts: PostsTable::of(&answer, &state.config)?,
        };
        Ok((html(&page)?, answer.batch.num_rows()))
    })
    .await
}

struct ReauthLine {
    practice: String,
    page_id: String,
    detail: String,
}

struct CheckRow {
    practice: String,
    check: String,
    from: String,
    to: String,
    count: f64,
    detail: String,
}

struct JobRow {
    job: String,
    schedule: String,
    timezone: String,
    state: String,
    tick: String,
    next: String,
    detail: String,
}

struct HealthLine {
    practice: String,
    page_id: String,
    problem: String,
    checked: String,
    /// The re-authorisation invitation's link, to send to the practice's manager.
    link: Option<String>,
}

#[derive(Template)]
#[template(path = "dashboard/quality.html")]
struct QualityPage {
    nav: Nav,
    /// When an ingest run last checked the tenant's tokens (none: no run yet).
    tokens_checked: Option<String>,
    /// When the data-quality report was computed.
    computed: String,
    reauth: Vec<ReauthLine>,
    /// Pages the daily token check (debug_token) found needing re-authorisation, with their links.
    health: Vec<HealthLine>,
    checks: Vec<CheckRow>,
    /// What "no checks" means for this answer.
    no_checks: String,
    jobs: Vec<JobRow>,
}

pub async fn quality(
    State(state): State<Shared>,
    headers: HeaderMap,
    QueryString(params): QueryString<HashMap<String, String>>,
) -> Response {
    render(state, headers, "/quality", params, |state, ctx| async move {
        let answer = read_report(&state, &ctx, Kind::Quality, None, None, None).await?;
        let checks = answer.quality_checks()?;
        let names = state.directory.names.get(&ctx.tenant).cloned().unwrap_or_default();
        let label = |c: &pulse_app::views::QualityCheckView| {
            if names.contains_key(&c.practice_code) {
                practice_label(&names, &c.practice_code)
            } else {
                c.practice_name.clone()
            }
        };
        let token_check = pulse_app::quality::last_token_check(&state.store, &ctx.caller.access, &ctx.tenant).await?;
        let mark = aq::watermark(&state.store, &ctx.caller.access.scope(&ctx.tenant).map_err(AppError::from)?).await?;
        let computed = mark
            .rsplit_once('@')
            .and_then(|(_, at)| chrono::DateTime::parse_from_rfc3339(at).ok())
            .map_or_else(|| "at an unknown time".to_owned(), |t| uk_time(&state.config, t.with_timezone(&chrono::Utc)));
        let reauth = checks
            .iter()
            .filter(|c| c.check_name == "reauth")
            .map(|c| ReauthLine { practice: label(c), page_id: c.page_id.clone(), detail: c.detail.clone() })
            .collect();
        let check_rows: Vec<CheckRow> = checks
            .iter()
            .map(|c| CheckRow {
                practice: label(c),
                check: c.check_name.clone(),
                from: c.day_from.map(uk).unwrap_or_default(),
                to: c.day_to.map(uk).unwrap_or_default(),
                count: c.count,
                detail: c.detail.clone(),
            })
            .collect();
        // The scheduler's jobs for this tenant: what ran last and what runs next.
        let access = ctx.caller.access.analyst(&ctx.tenant).map_err(AppError::from)?;
        let jobs = pulse_app::scheduler::status(&state.store, &state.config, &access, chrono::Utc::now())
            .await?
            .into_iter()
            .map(|j| {
                let (state_text, tick, detail) = match &j.truth {
                    Some(s) => (s.state.clone(), uk_time(&state.config, s.tick), s.detail.clone()),
                    None => ("never run".to_owned(), String::new(), String::new()),
                };
                JobRow {
                    next: j.next.map(|t| uk_time(&state.config, t)).unwrap_or_default(),
                    job: j.job,
                    schedule: j.schedule,
                    timezone: j.timezone,
                    state: state_text,
                    tick,
                    detail,
                }
            })
            .collect();
        let scope = ctx.caller.access.scope(&ctx.tenant).map_err(AppError::from)?;
        let health = pulse_app::health::attention(&state.store, &state.config, &scope)
            .await?
            .into_iter()
            .map(|a| HealthLine {
                practice: if names.contains_key(&a.practice) {
                    practice_label(&names, &a.practice)
                } else {
                    a.practice.clone()
                },
                page_id: a.page,
                problem: a.problem,
                checked: uk_time(&state.config, a.checked_at),
                link: a.link,
            })
            .collect();
        let n = check_rows.len();
        let page = QualityPage {
            health,
            nav: Nav::new(&ctx, "/quality", "Data quality"),
            tokens_checked: token_check.map(|at| uk_time(&state.config, at)),
            computed,
            reauth,
            checks: check_rows,
            no_checks: answer.empty_note.clone().unwrap_or_else(|| "No issues.".to_owned()),
            jobs,
        };
        Ok((html(&page)?, n))
    })
    .await
}

struct RegionRow {
    href: String,
    name: String,
    practices: usize,
    official: usize,
    claimed: usize,
    without_page: usize,
    adoption: String,
    weekly_reach: String,
    reach_per_1000: String,
    engagements_per_1000: String,
    /// The practices without a page, as the dashboard names them: "Name (CODE)".
    without: Vec<String>,
    notes: Vec<String>,
}

#[derive(Template)]
#[template(path = "dashboard/region.html")]
struct RegionPage {
    nav: Nav,
    tenants: Vec<RegionRow>,
    adoption_svg: String,
    reach_svg: String,
}

pub async fn region(
    State(state): State<Shared>,
    headers: HeaderMap,
    QueryString(params): QueryString<HashMap<String, String>>,
) -> Response {
    render(state, headers, "/region", params, |state, ctx| async move {
        let sides = aq::region::side_by_side(
            &state.store,
            &state.config,
            &state.directory,
            &ctx.caller.access,
            ctx.from,
            ctx.to,
        )
        .await?;
        let adoption: Vec<(String, Option<f64>)> =
            sides.iter().map(|t| (t.name.clone(), t.adoption.map(|a| a * 100.0))).collect();
        let reach: Vec<(String, Option<f64>)> = sides.iter().map(|t| (t.name.clone(), t.reach_per_1000)).collect();
        let tenants = sides
            .iter()
            .map(|t| RegionRow {
                href: format!(
                    "/?{}",
                    form_urlencoded::Serializer::new(String::new()).append_pair("tenant", &t.tenant).finish()
                ),
                name: t.name.clone(),
                practices: t.practices,
                official: t.official,
                claimed: t.claimed,
                without_page: t.without_page,
                adoption: rate(t.adoption),
                weekly_reach: num(t.weekly_reach),
                reach_per_1000: per_thousand(t.reach_per_1000),
                engagements_per_1000: per_thousand(t.engagements_per_1000),
                without: t.practices_without_page.iter().map(|p| format!("{} ({})", p.name, p.code)).collect(),
                notes: t.notes.clone(),
            })
            .collect();
        let page = RegionPage {
            nav: Nav::new(&ctx, "/region", "Region"),
            tenants,
            adoption_svg: chart::bars("Practices with a page, %", &adoption, chart::GREEN, 460, &|v| {
                format!("{v:.0}%")
            }),
            reach_svg: chart::bars("Weekly reach per 1,000 registered patients", &reach, chart::BLUE, 460, &|v| {
                format!("{v:.1}")
            }),
        };
        Ok((html(&page)?, sides.len()))
    })
    .await
}

/// Awaits `work`, charging the time it took to the key's work budget, as the API charges the same work.
async fn charged<T>(state: &Shared, ctx: &Ctx, work: impl std::future::Future<Output = AppResult<T>>) -> AppResult<T> {
    let started = Instant::now();
    let out = work.await;
    state.gate.work.charge(&ctx.caller.key_id, started.elapsed().as_secs_f64() * 1000.0);
    out
}

#[derive(Template)]
#[template(path = "dashboard/benchmarks.html")]
struct BenchmarksPage {
    nav: Nav,
    b: aq::benchmarks::Benchmarks,
    /// Per band: its label, when shown its tenths as text, the tenant's own practices in it, why withheld.
    bands: Vec<(String, String, usize, Option<String>)>,
    rows: Vec<BenchmarkRow>,
}

struct BenchmarkRow {
    name: String,
    code: String,
    registered: String,
    band: String,
    rate: String,
    /// 1 to 10, or none when the band's deciles are withheld.
    decile: Option<u8>,
}

/// `GET /benchmarks`: the tenant's practices against the deciles of practices of similar list size across the
/// tenants that opted in.
pub async fn benchmarks(
    State(state): State<Shared>,
    headers: HeaderMap,
    QueryString(params): QueryString<HashMap<String, String>>,
) -> Response {
    render(state, headers, "/benchmarks", params, |state, ctx| async move {
        // Reads every opted-in tenant's reports.
        let b = charged(
            &state,
            &ctx,
            aq::benchmarks::benchmarks(
                &state.store,
                &state.config,
                &state.directory,
                &ctx.caller.access,
                Some(&ctx.tenant),
                ctx.from,
                ctx.to,
            ),
        )
        .await?;
        let bands = b
            .bands
            .iter()
            .map(|band| {
                let deciles =
                    band.deciles.as_ref().map(|d| d.iter().map(|v| format!("{v:.1}")).collect::<Vec<_>>().join(" · "));
                (band.band.clone(), deciles.unwrap_or_default(), band.own_practices, band.withheld.clone())
            })
            .collect();
        let rows: Vec<BenchmarkRow> = b
            .practices
            .iter()
            .map(|p| BenchmarkRow {
                name: p.name.clone(),
                code: p.code.clone(),
                registered: thousands(p.registered),
                band: p.band.clone(),
                rate: format!("{:.1}", p.rate),
                decile: p.decile,
            })
            .collect();
        let n = rows.len();
        let page = BenchmarksPage { nav: Nav::new(&ctx, "/benchmarks", "Benchmarks"), b, bands, rows };
        Ok((html(&page)?, n))
    })
    .await
}

#[derive(Template)]
#[template(path = "dashboard/posting.html")]
struct PostingPage {
    nav: Nav,
    p: aq::posting::Posting,
    hour_svg: String,
    weekday_svg: String,
    topic_svg: String,
    cadence_svg: String,
    /// The elasticity and what doubling does to each post, in words, when fitted.
    cadence_words: Option<String>,
    /// Why it is not fitted.
    cadence_note: Option<String>,
    /// Per topic: its name and its terms in words.
    topics: Vec<(String, String)>,
    rows: Vec<(String, String, String, String)>,
}

/// `GET /posting`: engagement by hour, day and topic of posting, and by how often the tenant's practices post.
pub async fn posting(
    State(state): State<Shared>,
    headers: HeaderMap,
    QueryString(params): QueryString<HashMap<String, String>>,
) -> Response {
    render(state, headers, "/posting", params, |state, ctx| async move {
        // A year of posts resampled.
        let p = charged(
            &state,
            &ctx,
            aq::posting::posting(
                &state.store,
                &state.config,
                &state.directory,
                &ctx.caller.access,
                Some(&ctx.tenant),
                ctx.from,
                ctx.to,
            ),
        )
        .await?;
        let rows_of = |cells: &[aq::posting::Cell]| -> Vec<(String, chart::RelativeRow)> {
            cells
                .iter()
                .map(|c| {
                    let e = c.relative.zip(c.low.zip(c.high)).map(|(v, (l, h))| (v, l, h));
                    let why = || match c.relative {
                        // An estimate without an interval: the estimate, and why there is no interval.
                        Some(v) => format!("{v:.2}, {}", c.note.as_deref().unwrap_or("no interval")),
                        None => c.note.clone().unwrap_or_else(|| "no estimate".to_owned()),
                    };
                    (format!("{} ({} posts)", c.key, c.posts), e.ok_or_else(why))
                })
                .collect()
        };
        let hour_svg = chart::relative_intervals(
            "Engagement by hour of posting, relative to the average post",
            &rows_of(&p.by_hour),
            760,
        );
        let weekday_svg = chart::relative_intervals(
            "Engagement by day of posting, relative to the average post",
            &rows_of(&p.by_weekday),
            760,
        );
        let topic_svg =
            chart::relative_intervals("Engagement by topic, relative to the average post", &rows_of(&p.by_topic), 760);
        let points: Vec<(String, f64, f64)> = p
            .cadence
            .practices
            .iter()
            .filter_map(|c| Some((format!("{} ({})", c.name, c.code), c.posts_per_week, c.engaged_per_1000?)))
            .collect();
        let fit = p.cadence.elasticity.map(|e| {
            // The fitted line through the points' mean (least squares passes through it).
            let logs: Vec<(f64, f64)> =
                points.iter().filter(|q| q.1 > 0.0 && q.2 > 0.0).map(|q| (q.1.ln(), q.2.ln())).collect();
            let n = logs.len().max(1) as f64;
            let (mx, my) = logs.iter().fold((0.0, 0.0), |a, q| (a.0 + q.0 / n, a.1 + q.1 / n));
            (my - e.value * mx, e.value)
        });
        let cadence_svg = chart::log_scatter(
            "Each practice: posts a week against its posts' engagement a week per 1,000 registered patients (the measure above)",
            "posts a week",
            "engaged a week per 1,000",
            &points,
            fit,
            760,
            340,
        );
        let cadence_words = p.cadence.elasticity.zip(p.cadence.per_post_when_doubled).map(|(e, d)| {
            // (Only fitted when practices post at rates different enough to say anything.)
            let pct = |v: f64| format!("{:+.0}%", v * 100.0);
            format!(
                "Elasticity {:.2} (95% interval {:.2} to {:.2}): a practice that posts twice as often gets {}                  engagement per post ({} to {}).",
                e.value,
                e.low,
                e.high,
                pct(d.value),
                pct(d.low),
                pct(d.high)
            )
        });
        let topics = p
            .topics
            .iter()
            .map(|t| (t.name.clone(), t.keywords.iter().chain(&t.hashtags).cloned().collect::<Vec<_>>().join(", ")))
            .collect();
        let rows = p
            .cadence
            .practices
            .iter()
            .map(|c| {
                (
                    format!("{} ({})", c.name, c.code),
                    c.posts.to_string(),
                    format!("{:.1}", c.posts_per_week),
                    c.engaged_per_1000.map_or("n/a (no list size)".to_owned(), |e| format!("{e:.2}")),
                )
            })
            .collect();
        let n = p.posts;
        let cadence_note = p.cadence.note.clone();
        let page = PostingPage {
            nav: Nav::new(&ctx, "/posting", "When to post"),
            p,
            hour_svg,
            weekday_svg,
            topic_svg,
            cadence_svg,
            cadence_note,
            cadence_words,
            topics,
            rows,
        };
        Ok((html(&page)?, n))
    })
    .await
}

// ----- login, logout, static -----------------------------------------------------------------------------------

pub(crate) fn cookie_header(state: &Shared, name: &str, value: &str, max_age: i64) -> HeaderValue {
    let secure = if state.config.server.secure_cookies { "; Secure" } else { "" };
    HeaderValue::from_str(&format!("{name}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}"))
        .unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Only a path on this site may be gone to after login.
pub(crate) fn safe_next(next: Option<&String>) -> String {
    /// Longer is not a page of this site anyone links to, and a sign-in keeps it for minutes.
    const MAX_NEXT_BYTES: usize = 2048;
    // Browsers drop tabs and newlines from URLs (`/\t/evil.example/` is read `//evil.example/`), and a control
    // character in a Location header fails the response: any of them, or a space, and it is the overview instead.
    match next {
        Some(n)
            if n.starts_with('/')
                && n.len() <= MAX_NEXT_BYTES
                && !n.starts_with("//")
                && !n.contains('\\')
                && !n.chars().any(|c| c.is_control() || c.is_whitespace()) =>
        {
            n.clone()
        }
        _ => "/".into(),
    }
}

#[derive(Template)]
#[template(path = "dashboard/login.html")]
struct LoginPage<'a> {
    title: &'a str,
    csrf: &'a str,
    next: &'a str,
    message: Option<&'a str>,
    /// "Sign in with <label>" and its link, when the organisation's identity provider is configured.
    oidc: Option<(&'a str, String)>,
}

fn login_page(state: &Shared, next: &str, message: Option<&str>, status: StatusCode) -> Response {
    let csrf = random_token();
    let oidc = state.oidc.as_ref().map(|o| {
        let query = form_urlencoded::Serializer::new(String::new()).append_pair("next", next).finish();
        let link = format!("/auth/oidc/start?{query}");
        (o.label(), link)
    });
    let page = LoginPage { title: "Log in", csrf: &csrf, next, message, oidc };
    let mut resp = match html(&page) {
        Ok(body) => html_response(status, body),
        Err(e) => return error_page(&e),
    };
    resp.headers_mut().append(header::SET_COOKIE, cookie_header(state, LOGIN_CSRF_COOKIE, &csrf, 3600));
    resp
}

/// The unsubscribe pages: the confirmation a digest's link opens, and what the confirming POST did.
enum UnsubscribeStep {
    Confirm { action: String },
    Done,
    Failed { message: String, hint: String },
}

#[derive(Template)]
#[template(path = "dashboard/unsubscribe.html")]
struct UnsubscribePage<'a> {
    title: &'a str,
    list: &'a str,
    email: &'a str,
    step: UnsubscribeStep,
}

fn unsubscribe_page(status: StatusCode, page: &UnsubscribePage<'_>) -> Response {
    match html(page) {
        Ok(body) => html_response(status, body),
        Err(e) => error_page(&e),
    }
}

/// `GET /unsubscribe?list=..&email=..&token=..`: the link in a digest. Asks to confirm with a button (a GET must not
/// change anything: mail scanners follow links).
pub async fn unsubscribe_form(QueryString(params): QueryString<HashMap<String, String>>) -> Response {
    let get = |k: &str| params.get(k).cloned().unwrap_or_default();
    let (list, email) = (get("list"), get("email"));
    let q = form_urlencoded::Serializer::new(String::new())
        .append_pair("list", &list)
        .append_pair("email", &email)
        .append_pair("token", &get("token"))
        .finish();
    let step = UnsubscribeStep::Confirm { action: format!("/unsubscribe?{q}") };
    unsubscribe_page(StatusCode::OK, &UnsubscribePage { title: "Unsubscribe", list: &list, email: &email, step })
}

/// `POST /unsubscribe?list=..&email=..&token=..`: from the confirm page, or a mail client's one-click unsubscribe
/// (RFC 8058, body `List-Unsubscribe=One-Click`). The signed token is the authority; idempotent.
pub async fn unsubscribe(
    State(state): State<Shared>,
    QueryString(params): QueryString<HashMap<String, String>>,
) -> Response {
    let started = Instant::now();
    let get = |k: &str| params.get(k).cloned().unwrap_or_default();
    let (list, email, token) = (get("list"), get("email"), get("token"));
    match pulse_app::subscriptions::unsubscribe(&state.store, &state.config, &list, &email, &token).await {
        Ok(()) => {
            log_request("-", "-", &format!("POST /unsubscribe list={list}"), 1, 200, started);
            let page =
                UnsubscribePage { title: "Unsubscribed", list: &list, email: &email, step: UnsubscribeStep::Done };
            unsubscribe_page(StatusCode::OK, &page)
        }
        Err(e) => {
            log_request("-", "-", &format!("POST /unsubscribe list={list}"), 0, e.status(), started);
            let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
            let step = UnsubscribeStep::Failed { message: e.message.clone(), hint: e.hint.clone().unwrap_or_default() };
            unsubscribe_page(status, &UnsubscribePage { title: "Unsubscribe", list: &list, email: &email, step })
        }
    }
}

pub async fn login_form(
    State(state): State<Shared>,
    QueryString(params): QueryString<HashMap<String, String>>,
) -> Response {
    login_page(&state, &safe_next(params.get("next")), None, StatusCode::OK)
}

pub async fn login(
    State(state): State<Shared>,
    extensions: axum::http::Extensions,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let started = Instant::now();
    let client = extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map_or_else(|| "unknown".to_owned(), |c| c.0.ip().to_string());
    let form: HashMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
    let next = safe_next(form.get("next"));
    let expected = cookie(&headers, LOGIN_CSRF_COOKIE);
    if expected.is_none() || expected.as_ref() != form.get("csrf") {
        log_request("-", "-", "POST /login (csrf mismatch)", 0, 403, started);
        return login_page(&state, &next, Some("The login form expired; please try again."), StatusCode::FORBIDDEN);
    }
    let key = form.get("key").map(String::as_str).unwrap_or_default();
    match state.gate.login(&state.config, key, &client) {
        Ok((session, caller)) => {
            log_request(&caller.key_id, &caller.tenants.join(","), "POST /login", 0, 303, started);
            let mut resp = Redirect::to(&next).into_response();
            let max_age = i64::from(state.config.server.session_hours) * 3600;
            resp.headers_mut().append(header::SET_COOKIE, cookie_header(&state, SESSION_COOKIE, &session, max_age));
            resp.headers_mut().append(header::SET_COOKIE, cookie_header(&state, LOGIN_CSRF_COOKIE, "", 0));
            resp
        }
        Err(e) => {
            log_request("-", "-", "POST /login", 0, e.status(), started);
            let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::UNAUTHORIZED);
            let mut resp = login_page(&state, &next, Some(&e.to_string()), status);
            if let Some(secs) = e.retry_after {
                resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            resp
        }
    }
}

pub async fn logout(State(state): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let form: HashMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
    if let Ok((_, session)) = state.gate.session_caller(&state.config, &headers)
        && form.get("csrf") == Some(&session.csrf)
        && let Some(id) = cookie(&headers, SESSION_COOKIE)
    {
        state.gate.logout(&id);
    } else {
        return error_page(
            &AppError::forbidden("the logout form did not come from this dashboard")
                .with_hint("use the Log out button"),
        );
    }
    let mut resp = Redirect::to("/login").into_response();
    resp.headers_mut().append(header::SET_COOKIE, cookie_header(&state, SESSION_COOKIE, "", 0));
    resp
}

pub async fn stylesheet() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8"), (header::CACHE_CONTROL, "max-age=3600")], CSS).into_response()
}

pub async fn not_found() -> Response {
    error_page(
        &AppError::not_found("there is no such page")
            .with_hint("the dashboard starts at /; the API is described at /api/v1/openapi.json"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Askama escapes every value; `safe` (or an `escape` filter or setting) is the way around it, kept for the
    /// charts `pulse_app::chart` draws. Any other use, in the dashboard's or the digest's templates or in a
    /// `#[template]` attribute, fails here.
    #[test]
    fn only_chart_svg_is_inserted_unescaped() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut seen = 0;
        for dir in [root.join("templates/dashboard"), root.join("../pulse-digest/templates")] {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                let text = std::fs::read_to_string(&path).unwrap();
                // Comments may say the word; code may not use it but on a chart.
                let code: String = text
                    .split("{#")
                    .enumerate()
                    .map(|(i, part)| if i == 0 { part } else { part.split_once("#}").map_or("", |(_, rest)| rest) })
                    .collect();
                assert!(!code.contains("escape"), "{}: an escape filter or setting", path.display());
                let mut at = 0;
                while let Some(i) = code[at..].find('|') {
                    let bar = at + i;
                    at = bar + 1;
                    let filter: String =
                        code[bar + 1..].trim_start().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                    if filter != "safe" {
                        continue;
                    }
                    let name = code[..bar]
                        .trim_end()
                        .rsplit(|c: char| !(c.is_alphanumeric() || c == '_' || c == '.'))
                        .next()
                        .unwrap();
                    assert!(
                        name.ends_with("_svg") || name == "svg",
                        "{}: `{name}|safe` inserts something that is not a chart unescaped",
                        path.display()
                    );
                    seen += 1;
                }
            }
        }
        assert!(seen >= 8, "the charts are found ({seen})");
        for source in [include_str!("pages.rs"), include_str!("../../pulse-digest/src/render.rs")] {
            for attr in source.lines().filter(|l| l.trim_start().starts_with("#[template(")) {
                assert!(!attr.contains("escape"), "a template with its escaping changed: {attr}");
            }
        }
    }

    fn nav(title: &str) -> Nav {
        Nav {
            title: title.to_owned(),
            links: vec![NavLink { href: "/?tenant=a&from=2018-01-01".into(), label: "Overview", active: true }],
            who: "key k1".into(),
            tenant_name: "North <Staffs>".into(),
            csrf: "c\"srf".into(),
            action: "/".into(),
            tenants: vec![
                TenantOption { id: "a".into(), name: "A & B".into(), selected: true },
                TenantOption { id: "b".into(), name: "B".into(), selected: false },
            ],
            hidden: vec![("sort".into(), "\"><script>".into())],
            defaulted: Some(("26 Mar 2017 to 25 Mar 2018".into(), "/?tenant=a&all=1".into())),
            from: "2018-01-01".into(),
            to: String::new(),
        }
    }

    #[test]
    fn every_value_is_escaped_and_the_page_carries_its_state() {
        let page = PracticePage {
            nav: nav("St Mary's <b>"),
            name: "<script>alert(1)</script>".into(),
            code: "M83001".into(),
            charts: vec!["<svg><text>chart</text></svg>".into()],
            posts: PostsTable {
                rows: vec![PostRow {
                    posted: "25 Mar 2018".into(),
                    practice: "A&E <i>".into(),
                    excerpt: "Stroke <u>signs</u>".into(),
                    permalink: "https://www.facebook.com/1/posts/2?a=1&b=\"<x>".into(),
                    post_type: "video".into(),
                    topic: "stroke".into(),
                    reach: "1,234".into(),
                    views: "n/a".into(),
                    video_views: "10".into(),
                    engagement_rate: "1.0%".into(),
                }],
                empty: String::new(),
            },
        };
        let out = html(&page).unwrap();
        for raw in ["<script>", "<b>", "<i>", "<u>", "\"<x>", "\"><script>", "North <Staffs>", "c\"srf"] {
            assert!(!out.contains(raw), "{raw} reached the page unescaped");
        }
        for escaped in
            ["&#60;script&#62;alert(1)&#60;/script&#62;", "A&#38;E &#60;i&#62;", "North &#60;Staffs&#62;", "A &#38; B"]
        {
            assert!(
                out.contains(escaped)
                    || out
                        .contains(&escaped.replace("&#60;", "&lt;").replace("&#62;", "&gt;").replace("&#38;", "&amp;")),
                "{escaped} missing from {out}"
            );
        }
        assert!(out.contains("<svg><text>chart</text></svg>"), "the chart is drawn");
        assert!(out.contains("<option value=\"a\" selected>"), "the tenant picker marks the tenant");
        assert!(out.contains("name=\"from\" value=\"2018-01-01\""), "the range is kept");
        assert!(
            out.contains("<a href=\"/?tenant=a&#38;from=2018-01-01\" class=\"active\">")
                || out.contains("<a href=\"/?tenant=a&amp;from=2018-01-01\" class=\"active\">")
        );
    }

    #[test]
    fn the_posts_table_says_why_it_is_empty() {
        let page = PostsPage {
            nav: nav("Posts"),
            by_type_svg: String::new(),
            posts: PostsTable { rows: vec![], empty: "No posts before 1 Jan 2017 <ever>".into() },
        };
        let out = html(&page).unwrap();
        assert!(out.contains("<p class=\"empty\">No posts before 1 Jan 2017 "), "{out}");
        assert!(!out.contains("<table>"), "no empty table");
    }
}

// ----- invitations (admins) ------------------------------------------------------------------------------------

struct InvitationRow {
    practice: String,
    state: String,
    created: String,
    created_by: String,
    expires: String,
    page: String,
}

struct NewLink {
    practice: String,
    expires: String,
    link: String,
}

#[derive(Template)]
#[template(path = "dashboard/invitations.html")]
struct InvitationsPage {
    nav: Nav,
    /// (code, "Name (CODE)", has a working token)
    practices: Vec<(String, String, bool)>,
    created: Vec<NewLink>,
    rows: Vec<InvitationRow>,
    /// Where the form posts (this page, for this tenant).
    action: String,
}

/// The invitations page for `ctx`'s tenant, with links just made (shown this once).
async fn invitations_html(state: &Shared, ctx: &Ctx, created: Vec<NewLink>) -> AppResult<(String, usize)> {
    ctx.caller.require(KeyScope::Admin)?;
    if state.connect.is_none() {
        return Err(AppError::not_found("invitations are not set up on this service")
            .with_hint("the operator adds [onboarding] to the config (README: Onboarding)"));
    }
    let names = state.directory.names.get(&ctx.tenant).cloned().unwrap_or_default();
    let without = pulse_app::onboarding::practices_without_token(&state.store, &state.config, &ctx.tenant).await?;
    let tenant = state.config.tenants.iter().find(|t| t.id.as_str() == ctx.tenant);
    let practices = tenant
        .map(|t| {
            t.practices
                .iter()
                .map(|p| {
                    let code = p.code.to_string();
                    let ok = !without.contains(&code);
                    (code.clone(), practice_label(&names, &code), ok)
                })
                .collect()
        })
        .unwrap_or_default();
    let rows: Vec<InvitationRow> = pulse_app::onboarding::list(&state.store, &ctx.caller.access, &ctx.tenant)
        .await?
        .into_iter()
        .map(|i| InvitationRow {
            practice: practice_label(&names, &i.practice),
            state: i.state,
            created: uk_time(&state.config, i.created_at),
            created_by: i.created_by,
            expires: uk_time(&state.config, i.expires_at),
            page: i.page.unwrap_or_else(|| "–".into()),
        })
        .collect();
    let n = rows.len();
    let page = InvitationsPage {
        nav: Nav::new(ctx, "/invitations", "Invitations"),
        practices,
        created,
        rows,
        action: ctx.link("/invitations", &[]),
    };
    Ok((html(&page)?, n))
}

/// `GET /invitations` (admin): who was invited, what became of each invitation, and the form to invite.
pub async fn invitations(
    State(state): State<Shared>,
    headers: HeaderMap,
    QueryString(params): QueryString<HashMap<String, String>>,
) -> Response {
    render(state, headers, "/invitations", params, |state, ctx| async move {
        invitations_html(&state, &ctx, Vec::new()).await
    })
    .await
}

/// `POST /invitations` (admin, the page's form: `csrf`, `practice` or `all_without_token`): makes the invitations
/// and shows their links once.
pub async fn invite(
    State(state): State<Shared>,
    headers: HeaderMap,
    QueryString(params): QueryString<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let started = Instant::now();
    let form: HashMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
    let ctx = match context(&state, &headers, "/invitations", params) {
        Ok(c) => c,
        Err(resp) => return *resp,
    };
    let result = async {
        if form.get("csrf") != Some(&ctx.session.csrf) {
            return Err(AppError::forbidden("the form did not come from this dashboard")
                .with_hint("use the form on the Invitations page"));
        }
        ctx.caller.require(KeyScope::Admin)?;
        let practices = match form.get("practice").filter(|p| !p.is_empty()) {
            Some(p) if p == "*" => {
                pulse_app::onboarding::practices_without_token(&state.store, &state.config, &ctx.tenant).await?
            }
            Some(p) => vec![p.clone()],
            None => return Err(AppError::bad_request("choose a practice").at("practice")),
        };
        let by = match &ctx.session.signed_in {
            Some(_) => ctx.caller.key_name.clone(),
            None => format!("key {}", ctx.caller.key_id),
        };
        let created = pulse_app::onboarding::invite(
            &state.store,
            &state.config,
            &ctx.caller.access,
            &ctx.tenant,
            &practices,
            &by,
            chrono::Utc::now(),
        )
        .await?;
        let names = state.directory.names.get(&ctx.tenant).cloned().unwrap_or_default();
        let links = created
            .into_iter()
            .map(|c| NewLink {
                practice: practice_label(&names, &c.practice),
                expires: uk_time(&state.config, c.expires_at),
                link: c.link,
            })
            .collect();
        invitations_html(&state, &ctx, links).await
    }
    .await;
    match result {
        Ok((body, n)) => {
            log_request(&ctx.caller.key_id, &ctx.tenant, "POST /invitations", n, 200, started);
            let mut resp = html_response(StatusCode::OK, body);
            resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            resp
        }
        Err(e) => {
            log_request(&ctx.caller.key_id, &ctx.tenant, "POST /invitations", 0, e.status(), started);
            error_page(&e)
        }
    }
}
