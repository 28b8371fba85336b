//! The dashboard: server-rendered HTML with inline SVG charts, no scripts, nothing fetched from elsewhere. Every page
//! reads through the application layer with the session's key, so it shows exactly what that key's API calls would.
//! The range (`from`, `to`) and, for a regional key, the tenant live in the URL, so a page can be shared.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, Query as QueryString, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::NaiveDate;
use pulse_app::chart::{self, Band, Series, escape};
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
}

impl Ctx {
    /// `?tenant=..&from=..&to=..` for links, plus `extra`.
    fn link(&self, path: &str, extra: &[(&str, &str)]) -> String {
        let mut q = form_urlencoded::Serializer::new(String::new());
        if self.caller.tenants.len() > 1 {
            q.append_pair("tenant", &self.tenant);
        }
        if let Some(f) = self.from {
            q.append_pair("from", &f.to_string());
        }
        if let Some(t) = self.to {
            q.append_pair("to", &t.to_string());
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

fn shell(title: &str, nav: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{} · Practice Pulse</title><link rel=\"stylesheet\" href=\"/static/pulse.css\"></head><body>{nav}<main>{body}</main></body></html>",
        escape(title)
    )
}

const PAGES: [(&str, &str); 6] = [
    ("/", "Overview"),
    ("/practices", "Practices"),
    ("/age-bands", "Age bands"),
    ("/campaigns", "Campaigns"),
    ("/posts", "Posts"),
    ("/quality", "Data quality"),
];

fn page(ctx: &Ctx, active: &str, title: &str, body: &str) -> String {
    let mut nav = String::from("<header><strong class=\"brand\">Practice Pulse</strong><nav>");
    for (path, label) in PAGES {
        let class = if path == active { " class=\"active\"" } else { "" };
        let _ = write!(nav, "<a href=\"{}\"{class}>{label}</a>", escape(&ctx.link(path, &[])));
    }
    nav.push_str("</nav>");
    let _ = write!(
        nav,
        "<form method=\"post\" action=\"/logout\" class=\"logout\"><span class=\"who\">key {} · {}</span><input type=\"hidden\" name=\"csrf\" value=\"{}\"><button type=\"submit\">Log out</button></form></header>",
        escape(&ctx.caller.key_id),
        escape(&ctx.tenant_name),
        escape(&ctx.session.csrf)
    );
    // The range picker (and the tenant picker for a regional key): a GET form, so the URL is the state.
    let mut picker = format!("<form method=\"get\" class=\"range\" action=\"{}\">", escape(active));
    if ctx.caller.tenants.len() > 1 {
        picker.push_str("<label>Tenant <select name=\"tenant\">");
        for (t, name) in &ctx.tenant_names {
            let sel = if *t == ctx.tenant { " selected" } else { "" };
            let _ = write!(picker, "<option value=\"{}\"{sel}>{}</option>", escape(t), escape(name));
        }
        picker.push_str("</select></label>");
    }
    let d = |x: Option<NaiveDate>| x.map(|d| d.to_string()).unwrap_or_default();
    for (k, v) in &ctx.params {
        if !matches!(k.as_str(), "tenant" | "from" | "to") {
            let _ = write!(picker, "<input type=\"hidden\" name=\"{}\" value=\"{}\">", escape(k), escape(v));
        }
    }
    let _ = write!(
        picker,
        "<label>From <input type=\"date\" name=\"from\" value=\"{}\"></label><label>To <input type=\"date\" name=\"to\" value=\"{}\"></label><button type=\"submit\">Apply</button></form>",
        d(ctx.from),
        d(ctx.to)
    );
    shell(title, &nav, &format!("<h1>{}</h1>{picker}{body}", escape(title)))
}

fn error_page(e: &AppError) -> Response {
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
    let body = format!(
        "<h1>{}</h1><p class=\"error\">{}</p>{}<p><a href=\"/\">Back to the overview</a></p>",
        status.canonical_reason().unwrap_or("Error"),
        escape(&message),
        hint.map(|h| format!("<p class=\"hint\">{}</p>", escape(&h))).unwrap_or_default()
    );
    html_response(status, shell("Error", "", &body))
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
    let ctx = match context(&state, &headers, path, params) {
        Ok(c) => c,
        Err(resp) => {
            log_request("-", "-", &what, 0, resp.status().as_u16(), started);
            return *resp;
        }
    };
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

fn card(label: &str, value: &str, notes: &[(String, Option<f64>)]) -> String {
    let mut out = format!(
        "<div class=\"card\"><div class=\"label\">{}</div><div class=\"value\">{}</div>",
        escape(label),
        escape(value)
    );
    for (what, c) in notes {
        let class = match c {
            Some(x) if *x > 0.0 => "up",
            Some(x) if *x < 0.0 => "down",
            _ => "flat",
        };
        let _ = write!(out, "<div class=\"change {class}\">{} {}</div>", pct(*c), escape(what));
    }
    out.push_str("</div>");
    out
}

pub async fn overview(
    State(state): State<Shared>,
    headers: HeaderMap,
    QueryString(params): QueryString<HashMap<String, String>>,
) -> Response {
    render(state, headers, "/", params, |state, ctx| async move {
        let o = overview::weekly(&state.store, &state.config, &ctx.caller.access, Some(&ctx.tenant), ctx.from, ctx.to).await?;
        let mut body = String::new();
        match &o.latest {
            Some(l) => {
                let _ = write!(body, "<p class=\"lede\">Week ending {} · {} pages with data</p><div class=\"cards\">", uk(l.ending), l.pages);
                let cmp = |f: fn(&overview::Week) -> Option<f64>| {
                    vec![
                        ("vs previous week".to_owned(), overview::change(f(l), o.previous.as_ref().and_then(f))),
                        ("vs same week last year".to_owned(), overview::change(f(l), o.last_year.as_ref().and_then(f))),
                    ]
                };
                body.push_str(&card("Reach (gross)", &num(l.reach), &cmp(|w| w.reach)));
                body.push_str(&card("Engaged users (gross)", &num(l.engaged_users), &cmp(|w| w.engaged_users)));
                body.push_str(&card("Views", &num(l.views), &cmp(|w| w.views)));
                body.push_str("</div>");
            }
            None => body.push_str("<p class=\"empty\">No weeks in this range.</p>"),
        }
        let labels: Vec<String> = o.weeks.iter().map(|w| uk(w.ending)).collect();
        // Each on its own axis: engaged users are a few per cent of reach and would draw flat along the bottom.
        body.push_str(&chart::lines(
            "Weekly reach across the tenant's pages",
            &labels,
            &[Series { name: "reach".into(), colour: chart::BLUE, values: o.weeks.iter().map(|w| w.reach).collect(), dashed: false }],
            None,
            960,
            260,
        ));
        body.push_str(&chart::lines(
            "Weekly engaged users across the tenant's pages",
            &labels,
            &[Series { name: "engaged users".into(), colour: chart::ORANGE, values: o.weeks.iter().map(|w| w.engaged_users).collect(), dashed: false }],
            None,
            960,
            200,
        ));
        body.push_str("<p class=\"note\">Reach and engaged users are each page's weekly unique counts from Meta, summed over pages: gross, because a person reached by two practices' pages counts twice. Weeks are Pacific-time weeks ending on Sunday, as Meta reports them.</p>");
        let rows = o.weeks.len();
        Ok((page(&ctx, "/", &format!("{} overview", ctx.tenant_name), &body), rows))
    })
    .await
}

fn sort_param(params: &HashMap<String, String>, allowed: &[&str], default: &str) -> (String, bool) {
    let sort =
        params.get("sort").filter(|s| allowed.contains(&s.as_str())).cloned().unwrap_or_else(|| default.to_owned());
    let desc = params.get("dir").map(|d| d != "asc").unwrap_or(true);
    (sort, desc)
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
        let answer = run_query(&state, &ctx, &metrics, &[Dimension::Practice], vec![], vec![(sort.clone(), desc)], aq::MAX_LIMIT).await?;
        let tenant_practices = state.directory.names.get(&ctx.tenant).cloned().unwrap_or_default();
        let mut body = String::from("<p class=\"lede\">Each practice over the range: weekly reach summed over the weeks (gross), and penetration as average weekly reach per 1,000 registered patients (a page reaches people who are not its patients too, so this can pass 1,000). Click a heading to sort.</p><table class=\"sortable\"><thead><tr>");
        let headings = [("practice", "Practice"), (Metric::Reach.name(), "Reach (gross)"), (Metric::EngagedUsers.name(), "Engaged users (gross)"), ("views", "Views"), ("engagement_rate", "Engagement rate"), (Metric::Penetration.name(), "Weekly reach per 1,000 patients")];
        for (key, label) in headings {
            let dir = if sort == key && desc { "asc" } else { "desc" };
            let arrow = if sort == key { if desc { " ▼" } else { " ▲" } } else { "" };
            let _ = write!(body, "<th><a href=\"{}\">{label}{arrow}</a></th>", escape(&ctx.link("/practices", &[("sort", key), ("dir", dir)])));
        }
        body.push_str("</tr></thead><tbody>");
        for r in &answer.results {
            let code = &r.dimensions[0];
            let name = answer.meta.practice_names.get(code).cloned().unwrap_or_default();
            let _ = write!(
                body,
                "<tr><td><a href=\"{}\">{}</a> <span class=\"code\">{}</span></td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
                escape(&ctx.link(&format!("/practices/{code}"), &[])),
                escape(&name),
                escape(code),
                num(r.metrics[0]),
                num(r.metrics[1]),
                num(r.metrics[2]),
                rate(r.metrics[3]),
                per_thousand(r.metrics[4])
            );
        }
        body.push_str("</tbody></table>");
        let bars: Vec<(String, Option<f64>)> = answer
            .results
            .iter()
            .take(15)
            .map(|r| (practice_label(&tenant_practices, &r.dimensions[0]), r.metrics[4]))
            .collect();
        let _ = write!(body, "<h2>Weekly reach per 1,000 registered patients (first 15 as sorted)</h2>{}", chart::bars("Penetration by practice", &bars, chart::BLUE, 900, &|v| format!("{v:.1}")));
        let n = answer.results.len();
        Ok((page(&ctx, "/practices", "Practices", &body), n))
    })
    .await
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
        let mut body = format!("<p class=\"lede\">{} · ODS code {}</p>", escape(name), escape(&code));
        for (title, name, colour, m, height) in [
            ("Weekly reach", "reach", chart::BLUE, 0, 240),
            ("Weekly engaged users", "engaged users", chart::ORANGE, 1, 180),
        ] {
            body.push_str(&chart::lines(
                &format!("{title}, {}", practice_label(&names, &code)),
                &labels,
                &[Series {
                    name: name.into(),
                    colour,
                    values: weekly.results.iter().map(|r| r.metrics[m]).collect(),
                    dashed: false,
                }],
                None,
                960,
                height,
            ));
        }
        let posts = read_report(&state, &ctx, Kind::Posts, Some(&code), Some("-reach"), Some(10)).await?;
        body.push_str("<h2>Top posts by reach</h2>");
        body.push_str(&posts_table(&posts)?);
        let rows = weekly.results.len() + posts.batch.num_rows();
        Ok((page(&ctx, "/practices", name, &body), rows))
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

fn posts_table(posts: &ReportAnswer) -> AppResult<String> {
    let rows = posts.post_views()?;
    if rows.is_empty() {
        return Ok(format!(
            "<p class=\"empty\">{}</p>",
            escape(posts.empty_note.as_deref().unwrap_or("No posts in this range."))
        ));
    }
    let mut out = String::from(
        "<table><thead><tr><th>Posted</th><th>Practice</th><th>Type</th><th>Topic</th><th>Reach</th><th>Views</th><th>Video views</th><th>Engagement rate</th></tr></thead><tbody>",
    );
    for p in &rows {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            p.created.map(uk).unwrap_or_default(),
            escape(&p.practice_name),
            escape(&p.post_type),
            escape(&p.topic),
            num(p.reach),
            num(p.views),
            num(p.video_views),
            rate(p.engagement_rate)
        );
    }
    out.push_str("</tbody></table>");
    Ok(out)
}

pub async fn age_bands(
    State(state): State<Shared>,
    headers: HeaderMap,
    QueryString(params): QueryString<HashMap<String, String>>,
) -> Response {
    render(state, headers, "/age-bands", params, |state, ctx| async move {
        let answer = run_query(&state, &ctx, &[Metric::People, Metric::Penetration], &[Dimension::AgeBand], vec![], vec![("age_band".into(), false)], 100).await?;
        let mut body = String::new();
        for n in &answer.meta.notes {
            let _ = write!(body, "<p class=\"note\">{}</p>", escape(n));
        }
        if answer.results.is_empty() {
            // The answer's notes above say why (no facts that early, not computed yet, Meta withheld it, ...).
            body.push_str("<p class=\"empty\">No age-band figures for this range: see the note above.</p>");
        }
        let people: Vec<(String, Option<f64>)> = answer.results.iter().map(|r| (r.dimensions[0].clone(), r.metrics[0])).collect();
        let pen: Vec<(String, Option<f64>)> = answer.results.iter().map(|r| (r.dimensions[0].clone(), r.metrics[1])).collect();
        let _ = write!(body, "<div class=\"two\"><section><h2>People engaged, by age band</h2>{}</section><section><h2>Per 1,000 registered patients in the band</h2>{}</section></div>",
            chart::bars("People by age band", &people, chart::BLUE, 460, &|v| thousands(v)),
            chart::bars("Penetration by age band", &pen, chart::GREEN, 460, &|v| format!("{v:.1}")));
        body.push_str("<table><thead><tr><th>Age band</th><th>People</th><th>Per 1,000 registered</th></tr></thead><tbody>");
        for r in &answer.results {
            let _ = write!(body, "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>", escape(&r.dimensions[0]), num(r.metrics[0]), per_thousand(r.metrics[1]));
        }
        body.push_str("</tbody></table>");
        let n = answer.results.len();
        Ok((page(&ctx, "/age-bands", "Age bands", &body), n))
    })
    .await
}

pub async fn campaigns(
    State(state): State<Shared>,
    headers: HeaderMap,
    QueryString(params): QueryString<HashMap<String, String>>,
) -> Response {
    render(state, headers, "/campaigns", params, |state, ctx| async move {
        let metric = ctx.params.get("metric").cloned().unwrap_or_else(|| "views".into());
        if !["views", "reach", "engagements", "video_views"].contains(&metric.as_str()) {
            return Err(AppError::bad_request(format!("no campaign metric `{metric}`")).with_hint("use views, reach, engagements or video_views"));
        }
        let uplift = read_report(&state, &ctx, Kind::Campaigns, None, None, None).await?;
        let mut series_q = report::ReportQuery::new(Kind::CampaignSeries);
        series_q.tenant = Some(ctx.tenant.clone());
        let series = report::query(&state.store, &state.config, &ctx.caller.access, &series_q).await?;
        let mut body = String::from("<p class=\"lede\">What each campaign added on its pages against a counterfactual built from the same pages' other days, with the interval. ");
        for m in ["views", "reach", "engagements", "video_views"] {
            let class = if m == metric { " class=\"active\"" } else { "" };
            let _ = write!(body, "<a{class} href=\"{}\">{}</a> ", escape(&ctx.link("/campaigns", &[("metric", m)])), m.replace('_', " "));
        }
        body.push_str("</p>");
        body.push_str("<p class=\"note\">How to read an effect: it is what the campaign's pages got beyond what they were expected to get without it. The interval is the range the true effect lies in with the confidence shown (a 94% interval: 94 times in 100 the method's interval holds the true effect). An interval that includes zero means the campaign's effect cannot be told apart from ordinary variation; one that stays above zero means it very likely added something, by at least its lower end.</p>");
        let days = series.campaign_days()?;
        let mut rows = 0;
        for c in uplift.campaign_effects()?.iter().filter(|c| c.practice_code == "ALL" && c.metric == metric) {
            rows += 1;
            let name = &c.campaign;
            let (from, to) = (c.window_from, c.window_to);
            let _ = write!(body, "<section class=\"campaign\"><h2>{}</h2><p>{} to {} · {} posts · their lifetime {}: {}</p>", escape(name), from.map(uk).unwrap_or_default(), to.map(uk).unwrap_or_default(), c.posts, escape(&metric), num(c.post_lifetime));
            match c.interval() {
                Some((e, lo, hi)) => {
                    let _ = write!(body, "<p class=\"effect\">Effect on the pages' {}: {}; lift {}.</p>{}", escape(&metric), escape(&effect_words(e, lo, hi, c.interval_level)), c.lift_pct.map(|l| format!("{l:+.0}%")).unwrap_or_else(|| "n/a".into()), chart::interval(&format!("Effect of {name} with its interval"), e, lo, hi, 600));
                }
                None => {
                    let _ = write!(body, "<p class=\"note\">No effect estimate: {}</p>", escape(&c.note));
                }
            }
            // Observed against counterfactual, day by day.
            let series: Vec<_> = days.iter().filter(|d| &d.campaign == name && d.practice_code == "ALL" && d.metric == metric).collect();
            let observed: Vec<Option<f64>> = series.iter().map(|d| d.observed).collect();
            let counterfactual: Vec<Option<f64>> = series.iter().map(|d| d.counterfactual).collect();
            // The campaign window, shaded.
            let in_window: Vec<Option<f64>> = series.iter().map(|d| (d.day.is_some() && d.day >= from && d.day <= to).then_some(0.0)).collect();
            let top = observed.iter().chain(&counterfactual).flatten().fold(0.0f64, |a, b| a.max(*b));
            let labels: Vec<String> = series.iter().map(|d| d.day.map(uk).unwrap_or_default()).collect();
            let band = Band { lo: in_window.clone(), hi: in_window.iter().map(|v| v.map(|_| top)).collect(), colour: chart::ORANGE };
            body.push_str(&chart::lines(
                &format!("{name}: observed and counterfactual daily {metric}"),
                &labels,
                &[
                    Series { name: "observed".into(), colour: chart::BLUE, values: observed, dashed: false },
                    Series { name: "counterfactual".into(), colour: chart::GREY, values: counterfactual, dashed: true },
                ],
                Some(&band),
                960,
                260,
            ));
            body.push_str("</section>");
        }
        if rows == 0 {
            body.push_str("<p class=\"empty\">No campaigns in this range. Campaigns are configured in pulse.toml and measured by `pulse jobs run`.</p>");
        }
        Ok((page(&ctx, "/campaigns", "Campaigns", &body), rows))
    })
    .await
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
        let body = format!(
            "<h2>Reach by post type</h2>{}<h2>Top 50 posts by reach</h2>{}",
            chart::bars("Reach by post type", &bars, chart::BLUE, 700, &|v| thousands(v)),
            posts_table(&answer)?
        );
        let n = answer.batch.num_rows();
        Ok((page(&ctx, "/posts", "Posts", &body), n))
    })
    .await
}

pub async fn quality(
    State(state): State<Shared>,
    headers: HeaderMap,
    QueryString(params): QueryString<HashMap<String, String>>,
) -> Response {
    render(state, headers, "/quality", params, |state, ctx| async move {
        let answer = read_report(&state, &ctx, Kind::Quality, None, None, None).await?;
        let checks = answer.quality_checks()?;
        let mut body = String::new();
        let reauth: Vec<_> = checks.iter().filter(|c| c.check_name == "reauth").collect();
        let names = state.directory.names.get(&ctx.tenant).cloned().unwrap_or_default();
        let label = |c: &pulse_app::views::QualityCheckView| {
            if names.contains_key(&c.practice_code) { practice_label(&names, &c.practice_code) } else { c.practice_name.clone() }
        };
        body.push_str("<h2>Pages needing re-authorisation</h2>");
        // Tokens are checked by every ingest run; the list comes from the data-quality report. Say both times, in the
        // scheduler's time zone, so a reader knows how old "every token works" is and whether a newer check exists.
        let scope = ctx.caller.access.scope(&ctx.tenant).map_err(AppError::from)?;
        let runs = pulse_store::Store::read_runs(&state.store, &scope).await.map_err(AppError::from)?;
        let mark = aq::watermark(&state.store, &scope).await?;
        let computed = mark
            .rsplit_once('@')
            .and_then(|(_, at)| chrono::DateTime::parse_from_rfc3339(at).ok())
            .map_or_else(|| "at an unknown time".to_owned(), |t| uk_time(&state.config, t.with_timezone(&chrono::Utc)));
        match runs.iter().map(|r| r.finished_at.max(r.started_at)).max() {
            Some(at) => {
                let _ = write!(body, "<p class=\"note\">Tokens last checked by an ingest run on {} (every run checks each page's token). This list is from the reports computed {}: <code>pulse jobs run</code> brings it up to date with newer runs.</p>", uk_time(&state.config, at), computed);
            }
            None => body.push_str("<p class=\"note\">Token status: no ingest has run for this tenant yet, so no token has been checked.</p>"),
        }
        if reauth.is_empty() {
            body.push_str("<p class=\"ok\">None: every page's token works.</p>");
        } else {
            body.push_str("<ul class=\"reauth\">");
            for c in &reauth {
                let _ = write!(body, "<li><strong>{}</strong> (page {}): {}</li>", escape(&label(c)), escape(&c.page_id), escape(&c.detail));
            }
            body.push_str("</ul>");
        }
        body.push_str("<h2>All checks</h2>");
        if checks.is_empty() {
            let _ = write!(body, "<p class=\"ok\">{}</p>", escape(answer.empty_note.as_deref().unwrap_or("No issues.")));
        } else {
            body.push_str("<table><thead><tr><th>Practice</th><th>Check</th><th>From</th><th>To</th><th>Count</th><th>What to do</th></tr></thead><tbody>");
            for c in &checks {
                let _ = write!(body, "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"n\">{}</td><td>{}</td></tr>", escape(&label(c)), escape(&c.check_name), c.day_from.map(uk).unwrap_or_default(), c.day_to.map(uk).unwrap_or_default(), c.count, escape(&c.detail));
            }
            body.push_str("</tbody></table>");
        }
        // The scheduler's jobs for this tenant: what ran last and what runs next.
        let access = ctx.caller.access.analyst(&ctx.tenant).map_err(AppError::from)?;
        let jobs = pulse_app::scheduler::status(&state.store, &state.config, &access, chrono::Utc::now()).await?;
        body.push_str("<h2>Scheduled runs</h2>");
        if jobs.is_empty() {
            body.push_str("<p>No scheduled jobs for this tenant (the operator's <code>pulse run</code> daemon runs them).</p>");
        } else {
            body.push_str("<table class=\"schedule\"><thead><tr><th>Job</th><th>Schedule</th><th>Last run</th><th>For</th><th>Next run</th><th>Detail</th></tr></thead><tbody>");
            for j in &jobs {
                let (state_text, tick, detail) = match &j.truth {
                    Some(s) => (s.state.clone(), uk_time(&state.config, s.tick), s.detail.clone()),
                    None => ("never run".to_owned(), String::new(), String::new()),
                };
                let next = j.next.map(|t| uk_time(&state.config, t)).unwrap_or_default();
                let _ = write!(body, "<tr><td>{}</td><td><code>{}</code> ({})</td><td class=\"state-{}\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>", escape(&j.job), escape(&j.schedule), escape(&j.timezone), escape(&state_text), escape(&state_text), escape(&tick), escape(&next), escape(&detail));
            }
            body.push_str("</tbody></table>");
        }
        let n = checks.len();
        Ok((page(&ctx, "/quality", "Data quality", &body), n))
    })
    .await
}

// ----- login, logout, static -----------------------------------------------------------------------------------

fn cookie_header(state: &Shared, name: &str, value: &str, max_age: i64) -> HeaderValue {
    let secure = if state.config.server.secure_cookies { "; Secure" } else { "" };
    HeaderValue::from_str(&format!("{name}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}"))
        .unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Only a path on this site may be gone to after login.
fn safe_next(next: Option<&String>) -> String {
    // Browsers drop tabs and newlines from URLs (`/\t/evil.example/` is read `//evil.example/`), and a control
    // character in a Location header fails the response: any of them, or a space, and it is the overview instead.
    match next {
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && !n.contains('\\')
                && !n.chars().any(|c| c.is_control() || c.is_whitespace()) =>
        {
            n.clone()
        }
        _ => "/".into(),
    }
}

fn login_page(state: &Shared, next: &str, message: Option<&str>, status: StatusCode) -> Response {
    let csrf = random_token();
    let body = format!(
        "<div class=\"login\"><h1>Practice Pulse</h1><p>Log in with your API key (from your operator's <code>pulse keys create</code>).</p>{}<form method=\"post\" action=\"/login\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\"><input type=\"hidden\" name=\"next\" value=\"{}\"><label>API key <input type=\"password\" name=\"key\" autocomplete=\"current-password\" required></label><button type=\"submit\">Log in</button></form></div>",
        message.map(|m| format!("<p class=\"error\">{}</p>", escape(m))).unwrap_or_default(),
        escape(next)
    );
    let mut resp = html_response(status, shell("Log in", "", &body));
    resp.headers_mut().append(header::SET_COOKIE, cookie_header(state, LOGIN_CSRF_COOKIE, &csrf, 3600));
    resp
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
    let body = format!(
        "<div class=\"login\"><h1>Unsubscribe</h1><p>Stop sending the weekly digest <strong>{}</strong> to <strong>{}</strong>?</p><form method=\"post\" action=\"/unsubscribe?{}\"><button type=\"submit\">Unsubscribe</button></form></div>",
        escape(&list),
        escape(&email),
        escape(&q)
    );
    html_response(StatusCode::OK, shell("Unsubscribe", "", &body))
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
            let body = format!(
                "<div class=\"login\"><h1>Unsubscribed</h1><p>{} will not get the weekly digest <strong>{}</strong> any more.</p></div>",
                escape(&email),
                escape(&list)
            );
            html_response(StatusCode::OK, shell("Unsubscribed", "", &body))
        }
        Err(e) => {
            log_request("-", "-", &format!("POST /unsubscribe list={list}"), 0, e.status(), started);
            let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
            let body = format!(
                "<div class=\"login\"><h1>Could not unsubscribe</h1><p class=\"error\">{}</p><p>{}</p></div>",
                escape(&e.message),
                escape(e.hint.as_deref().unwrap_or(""))
            );
            html_response(status, shell("Unsubscribe", "", &body))
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
