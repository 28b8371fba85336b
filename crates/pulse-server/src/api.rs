//! The JSON API: the query endpoint, report endpoints with CSV/JSON/Parquet download, who-am-I, key management for
//! admin keys, health and the OpenAPI document. Each handler authenticates, calls the application layer, renders.

use std::collections::HashMap;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, Query as QueryString, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::NaiveDate;
use pulse_app::error::{AppError, AppResult};
use pulse_app::keys::{Caller, KeyScope};
use pulse_app::report::{self, Kind, ReportQuery};
use pulse_query::{self as query, Query};
use pulse_store::Store;

use crate::openapi::Errors;
use crate::{ApiError, Shared, json_of, log_request, wire};

type ApiResult = Result<Response, ApiError>;

#[utoipa::path(get, path = "/healthz", tag = "service", summary = "Liveness", security(()),
    responses((status = 200, description = "ok", body = wire::Health)))]
pub async fn health(State(state): State<Shared>) -> Response {
    json_of(&wire::Health { status: "ok", version: env!("CARGO_PKG_VERSION"), store: state.store.describe() })
}

#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "service", summary = "This document", security(()),
    responses((status = 200, description = "OpenAPI 3.1", content_type = "application/json")))]
pub async fn openapi() -> Response {
    json_of(&crate::openapi::document())
}

/// Runs `f` for an authenticated caller and logs the request whatever the outcome.
async fn logged<F, Fut>(state: &Shared, headers: &HeaderMap, scope: KeyScope, what: String, f: F) -> ApiResult
where
    F: FnOnce(Shared, Caller) -> Fut,
    Fut: std::future::Future<Output = AppResult<(Response, String, usize)>>,
{
    let started = Instant::now();
    let caller = match state.gate.api_caller(&state.config, headers) {
        Ok(c) => c,
        Err(e) => {
            log_request("-", "-", &what, 0, e.status(), started);
            return Err(e.into());
        }
    };
    if let Err(e) = caller.require(scope) {
        // A known key without the scope: logged under its id; an export it may not make is audited too.
        if scope == KeyScope::Export {
            let spec =
                pulse_export::ExportSpec { requested_by: format!("key {}", caller.key_id), ..Default::default() };
            if let Err(audit) =
                pulse_export::record_refusal(&state.store, &state.config, &spec, &caller.tenants, &e.message).await
            {
                log_request(&caller.key_id, "-", &what, 0, audit.status(), started);
                return Err(audit.into());
            }
        }
        log_request(&caller.key_id, &caller.tenants.join(","), &what, 0, e.status(), started);
        return Err(e.into());
    }
    let key = caller.key_id.clone();
    // An error after the key was accepted is logged with the key's tenants (the one asked for is not known yet).
    let tenants = caller.tenants.join(",");
    let result = f(state.clone(), caller).await;
    // The work is charged to the key whatever came of it.
    state.gate.work.charge(&key, started.elapsed().as_secs_f64() * 1000.0);
    match result {
        Ok((resp, tenant, rows)) => {
            log_request(&key, &tenant, &what, rows, resp.status().as_u16(), started);
            Ok(resp)
        }
        Err(e) => {
            log_request(&key, &tenants, &what, 0, e.status(), started);
            Err(e.into())
        }
    }
}

#[utoipa::path(get, path = "/api/v1/me", tag = "keys", summary = "The key: id, name, scopes, tenants",
    responses((status = 200, description = "the key", body = wire::Me), Errors))]
pub async fn me(State(state): State<Shared>, headers: HeaderMap) -> ApiResult {
    logged(&state, &headers, KeyScope::Read, "GET /api/v1/me".into(), |state, caller| async move {
        let tenants = caller
            .access
            .scopes()
            .iter()
            .map(|s| wire::TenantRef {
                id: s.to_string(),
                name: state.config.tenant(s.tenant()).map(|t| t.name.clone()).unwrap_or_default(),
            })
            .collect();
        let body = wire::Me {
            key_id: caller.key_id.clone(),
            name: caller.key_name.clone(),
            scopes: caller.scopes.clone(),
            tenants,
        };
        Ok((json_of(&body), caller.tenants.join(","), 1))
    })
    .await
}

/// `POST /api/v2/query`: metrics by dimensions, Plausible's v2 shape.
#[utoipa::path(post, path = "/api/v2/query", tag = "query",
    summary = "Metrics by dimensions over a date range, with filters, order and paging",
    request_body = pulse_query::QueryBody,
    responses((status = 200, description = "the answer", body = pulse_query::Answer), Errors))]
pub async fn query(State(state): State<Shared>, headers: HeaderMap, body: Bytes) -> ApiResult {
    let parsed = Query::parse(&body);
    let what = match &parsed {
        // A long query (many filter values) is logged as its size and digest, not its text.
        Ok(q) => {
            let text = q.normalised();
            if text.len() <= 300 {
                format!("POST /api/v2/query {text}")
            } else {
                let params = [("query".to_owned(), text.clone())];
                format!(
                    "POST /api/v2/query ({} bytes){}",
                    text.len(),
                    crate::query_digest(params.iter().map(|(k, v)| (k, v)))
                )
            }
        }
        Err(_) => "POST /api/v2/query (unparsable)".to_owned(),
    };
    logged(&state, &headers, KeyScope::Read, what, |state, caller| async move {
        let q = parsed?;
        let answer = query::run(&state.store, &state.directory, &caller.access, &q, Some(&state.cache)).await?;
        let rows = answer.results.len();
        let tenant = answer.meta.tenant.clone();
        Ok((json_of(&answer), tenant, rows))
    })
    .await
}

#[utoipa::path(get, path = "/api/v1/reports", tag = "reports", summary = "The reports and their columns",
    responses((status = 200, description = "the list", body = wire::ReportsIndex), Errors))]
pub async fn reports_index(State(state): State<Shared>, headers: HeaderMap) -> ApiResult {
    logged(&state, &headers, KeyScope::Read, "GET /api/v1/reports".into(), |_state, caller| async move {
        let reports: Vec<wire::ReportInfo> = Kind::ALL
            .iter()
            .map(|k| wire::ReportInfo {
                name: k.name(),
                about: k.about(),
                url: format!("/api/v1/reports/{}", k.name()),
                date_column: k.date_column(),
                columns: k
                    .table()
                    .columns
                    .iter()
                    .map(|c| wire::ColumnInfo { name: c.name, unit: report::unit(*k, c.name), about: c.doc })
                    .collect(),
            })
            .collect();
        let n = reports.len();
        Ok((json_of(&wire::ReportsIndex { reports }), caller.tenants.join(","), n))
    })
    .await
}

/// `GET /api/v1/region`: every tenant the key reads, side by side: reach and engagements per 1,000 registered
/// patients over the range, and adoption (practices with an official page, a claimed page, none; those without
/// listed).
#[utoipa::path(get, path = "/api/v1/region", tag = "reports",
    summary = "The key's tenants side by side: reach and engagements per 1,000 registered patients, and adoption",
    params(
        ("from" = Option<chrono::NaiveDate>, Query, description = "first day (ISO 8601)"),
        ("to" = Option<chrono::NaiveDate>, Query, description = "last day (ISO 8601)"),
    ),
    responses((status = 200, description = "one entry per tenant", body = wire::Region), Errors))]
pub async fn region(
    State(state): State<Shared>,
    headers: HeaderMap,
    QueryString(params): QueryString<HashMap<String, String>>,
) -> ApiResult {
    let what = format!("GET /api/v1/region{}", crate::query_digest(params.iter()));
    logged(&state, &headers, KeyScope::Read, what, |state, caller| async move {
        if let Some(unknown) = params.keys().find(|k| !matches!(k.as_str(), "from" | "to")) {
            return Err(AppError::bad_request(format!("unknown parameter `{unknown}`"))
                .with_hint("the parameters are from and to")
                .at(unknown.clone()));
        }
        let (from, to) = (day(&params, "from")?, day(&params, "to")?);
        if let (Some(f), Some(t)) = (from, to)
            && t < f
        {
            return Err(AppError::bad_request(format!("`to` ({t}) is before `from` ({f})")).at("to"));
        }
        // The same bound as every other range: at most three years.
        if let (Some(f), Some(t)) = (from, to)
            && (t - f).num_days() > query::MAX_RANGE_DAYS
        {
            return Err(AppError::bad_request(format!("the range {f} to {t} spans more than three years"))
                .with_hint("split it into requests of up to three years")
                .at("from"));
        }
        let tenants =
            query::region::side_by_side(&state.store, &state.config, &state.directory, &caller.access, from, to)
                .await?;
        let n = tenants.len();
        Ok((json_of(&wire::Region { from, to, tenants }), caller.tenants.join(","), n))
    })
    .await
}

/// The `tenant`, `from` and `to` of an endpoint that takes only those; any other parameter is refused by name.
fn tenant_and_range(
    params: &HashMap<String, String>,
) -> AppResult<(Option<&str>, Option<chrono::NaiveDate>, Option<chrono::NaiveDate>)> {
    if let Some(unknown) = params.keys().find(|k| !matches!(k.as_str(), "tenant" | "from" | "to")) {
        return Err(AppError::bad_request(format!("unknown parameter `{unknown}`"))
            .with_hint("the parameters are tenant, from and to")
            .at(unknown.clone()));
    }
    let tenant = params.get("tenant").map(String::as_str).filter(|t| !t.is_empty());
    Ok((tenant, day(params, "from")?, day(params, "to")?))
}

/// `GET /api/v1/benchmarks`: the tenant's practices (weekly engagements per 1,000 registered patients) against the
/// deciles of practices of similar list size across the tenants that opted in; a band of fewer than 3 tenants or 10
/// practices is withheld. The tenant must have opted in (`benchmark = true`).
#[utoipa::path(get, path = "/api/v1/benchmarks", tag = "reports",
    summary = "Peer benchmarks: the tenant's practices against national deciles by list size (opt-in tenants only)",
    params(
        ("tenant" = Option<String>, Query, description = "the tenant (default: the key's only one)"),
        ("from" = Option<chrono::NaiveDate>, Query, description = "first day (default: 13 weeks before `to`)"),
        ("to" = Option<chrono::NaiveDate>, Query, description = "last day (default: the reports' last)"),
    ),
    responses((status = 200, description = "the bands and the tenant's practices placed in them", body = query::benchmarks::Benchmarks), Errors))]
pub async fn benchmarks(
    State(state): State<Shared>,
    headers: HeaderMap,
    QueryString(params): QueryString<HashMap<String, String>>,
) -> ApiResult {
    let what = format!("GET /api/v1/benchmarks{}", crate::query_digest(params.iter()));
    logged(&state, &headers, KeyScope::Read, what, |state, caller| async move {
        let (tenant, from, to) = tenant_and_range(&params)?;
        if let (Some(f), Some(t)) = (from, to)
            && (t - f).num_days() > query::MAX_RANGE_DAYS
        {
            return Err(AppError::bad_request(format!("the range {f} to {t} spans more than three years")).at("from"));
        }
        let b = query::benchmarks::benchmarks(
            &state.store,
            &state.config,
            &state.directory,
            &caller.access,
            tenant,
            from,
            to,
        )
        .await?;
        let n = b.practices.len();
        Ok((json_of(&b), b.tenant.clone(), n))
    })
    .await
}

/// `GET /api/v1/posting`: when and what to post. Engagement (engaged per 100 reached, relative to the tenant's
/// average post) by hour and day of posting (Europe/London) and by topic (the config's dictionaries), each with a 95%
/// interval from resampling the tenant's pages; and each practice's posts a week against its posts' engaged users a
/// week per 1,000 registered patients, with the fitted elasticity.
#[utoipa::path(get, path = "/api/v1/posting", tag = "reports",
    summary = "When and what to post: engagement by hour, day and topic, and by how often practices post",
    params(
        ("tenant" = Option<String>, Query, description = "the tenant (default: the key's only one)"),
        ("from" = Option<chrono::NaiveDate>, Query, description = "first posting day (default: a year before `to`)"),
        ("to" = Option<chrono::NaiveDate>, Query, description = "last posting day (default: the reports' last)"),
    ),
    responses((status = 200, description = "the analyses, with intervals", body = query::posting::Posting), Errors))]
pub async fn posting(
    State(state): State<Shared>,
    headers: HeaderMap,
    QueryString(params): QueryString<HashMap<String, String>>,
) -> ApiResult {
    let what = format!("GET /api/v1/posting{}", crate::query_digest(params.iter()));
    logged(&state, &headers, KeyScope::Read, what, |state, caller| async move {
        let (tenant, from, to) = tenant_and_range(&params)?;
        let p =
            query::posting::posting(&state.store, &state.config, &state.directory, &caller.access, tenant, from, to)
                .await?;
        let n = p.posts;
        Ok((json_of(&p), p.tenant.clone(), n))
    })
    .await
}

/// `GET /api/v1/campaigns/plan`: before a campaign, the smallest effect it could detect from the tenant's history
/// (80% power, judged by the same interval as its uplift report), and with `target` the days and share of pages that
/// detecting it needs. The same answer as `pulse campaign plan --json`.
#[utoipa::path(get, path = "/api/v1/campaigns/plan", tag = "reports",
    summary = "Plan a campaign: its minimum detectable effect, and what a target effect needs",
    params(
        ("tenant" = Option<String>, Query, description = "the tenant (default: the key's only one)"),
        ("start" = chrono::NaiveDate, Query, description = "the campaign's first day (ISO 8601)"),
        ("days" = Option<u32>, Query, description = "how many days it runs, 1 to 28 (default 2)"),
        ("share" = Option<f64>, Query, description = "the share of the tenant's pages taking part, above 0 and at most 1 (default 0.5)"),
        ("metric" = Option<String>, Query, description = "views (default), reach, engagements or video_views"),
        ("target" = Option<f64>, Query, description = "an effect to detect: a total over the participating pages and days"),
    ),
    responses((status = 200, description = "the plan, the options compared for a target and the smallest that detects it", content_type = "application/json"), Errors))]
pub async fn campaign_plan(
    State(state): State<Shared>,
    headers: HeaderMap,
    QueryString(params): QueryString<HashMap<String, String>>,
) -> ApiResult {
    let what = format!("GET /api/v1/campaigns/plan{}", crate::query_digest(params.iter()));
    logged(&state, &headers, KeyScope::Read, what, |state, caller| async move {
        let request = plan_request(&caller, &params)?;
        let answer = pulse_app::plan::plan_on(&state.store, &state.config, &caller.access, &request).await?;
        let n = answer.options.len() + 1;
        Ok((json_of(&pulse_app::plan::plan_json(&answer)), answer.tenant.clone(), n))
    })
    .await
}

/// `GET /api/v1/campaigns`: the campaigns of the key's tenants (or of `?tenant=`): the config's and those registered
/// through the API or dashboard, each pre-registered, post hoc or configured, with the plan stored at registration.
#[utoipa::path(get, path = "/api/v1/campaigns", tag = "reports",
    summary = "Campaigns of the caller's tenants, with how and when each was registered",
    params(("tenant" = Option<String>, Query, description = "one tenant (default: all of the key's)")),
    responses((status = 200, description = "the campaigns, withdrawn ones marked", body = wire::Campaigns), Errors))]
pub async fn campaigns_list(
    State(state): State<Shared>,
    headers: HeaderMap,
    QueryString(params): QueryString<HashMap<String, String>>,
) -> ApiResult {
    let what = format!("GET /api/v1/campaigns{}", crate::query_digest(params.iter()));
    logged(&state, &headers, KeyScope::Read, what, |state, caller| async move {
        let tenant = params.get("tenant").map(String::as_str).filter(|t| !t.is_empty());
        let campaigns = pulse_app::campaigns::listed(&state.store, &state.config, &caller.access, tenant).await?;
        let n = campaigns.len();
        Ok((json_of(&wire::Campaigns { campaigns }), tenant.map_or_else(|| caller.tenants.join(","), str::to_owned), n))
    })
    .await
}

/// `POST /api/v1/campaigns` (admin): registers a campaign. Before its start its plan is stored with it
/// (pre-registered) when registered before its cutoff (midnight Pacific starting the day before its first day); later,
/// it is labelled post hoc. A name already registered is a 409.
#[utoipa::path(post, path = "/api/v1/campaigns", tag = "reports",
    summary = "Register a campaign (admin scope): pre-registered with its plan before its start, post hoc after",
    request_body = pulse_app::campaigns::RegisterRequest,
    responses((status = 200, description = "the campaign as registered", body = pulse_app::campaigns::Managed), Errors))]
pub async fn campaigns_register(State(state): State<Shared>, headers: HeaderMap, body: Bytes) -> ApiResult {
    logged(&state, &headers, KeyScope::Admin, "POST /api/v1/campaigns".into(), |state, caller| async move {
        let req: pulse_app::campaigns::RegisterRequest = serde_json::from_slice(&body).map_err(|e| {
            AppError::bad_request(format!("the body is not a campaign: {e}")).with_hint(
                r##"send {"tenant": "north-staffs", "name": "Flu jabs", "start": "2018-10-06", "days": 2, "hashtag": "#FluJab"}"##,
            )
        })?;
        let by = format!("key {}", caller.key_id);
        let m = pulse_app::campaigns::register(&state.store, &state.config, &caller.access, &req, &by, chrono::Utc::now())
            .await?;
        Ok((json_of(&m), m.tenant.clone(), 1))
    })
    .await
}

/// `POST /api/v1/campaigns/{name}/withdraw?tenant=` (admin): stops computing a registered campaign; it stays listed
/// as withdrawn, with who and when.
#[utoipa::path(post, path = "/api/v1/campaigns/{name}/withdraw", tag = "reports",
    summary = "Withdraw a registered campaign (admin scope); it stays on record as withdrawn",
    params(("name" = String, Path), ("tenant" = Option<String>, Query, description = "the tenant (default: the key's only one)")),
    responses((status = 200, description = "the campaign, withdrawn", body = pulse_app::campaigns::Managed), Errors))]
pub async fn campaigns_withdraw(
    State(state): State<Shared>,
    headers: HeaderMap,
    Path(name): Path<String>,
    QueryString(params): QueryString<HashMap<String, String>>,
) -> ApiResult {
    logged(&state, &headers, KeyScope::Admin, "POST /api/v1/campaigns/withdraw".into(), |state, caller| async move {
        let tenant = named_tenant(&caller, &params)?;
        let by = format!("key {}", caller.key_id);
        let m = pulse_app::campaigns::withdraw(
            &state.store,
            &state.config,
            &caller.access,
            &tenant,
            &name,
            &by,
            chrono::Utc::now(),
        )
        .await?;
        Ok((json_of(&m), m.tenant.clone(), 1))
    })
    .await
}

/// The plan a request's parameters describe (shared by the API and the dashboard); every parameter checked.
pub(crate) fn plan_request(
    caller: &Caller,
    params: &HashMap<String, String>,
) -> AppResult<pulse_app::plan::PlanRequest> {
    if let Some(unknown) =
        params.keys().find(|k| !matches!(k.as_str(), "tenant" | "start" | "days" | "share" | "metric" | "target"))
    {
        return Err(AppError::bad_request(format!("unknown parameter `{unknown}`"))
            .with_hint("the parameters are tenant, start, days, share, metric and target")
            .at(unknown.clone()));
    }
    let tenant = pulse_app::tenant::resolve(
        &caller.access,
        params.get("tenant").map(String::as_str).filter(|t| !t.is_empty()),
        "tenant",
        "name one of your key's tenants",
    )?;
    let start = day(params, "start")?.ok_or_else(|| {
        AppError::bad_request("`start` is missing: the campaign's first day").with_hint("start=2018-03-10").at("start")
    })?;
    let number = |name: &str| -> AppResult<Option<f64>> {
        params
            .get(name)
            .filter(|v| !v.is_empty())
            .map(|v| {
                v.parse::<f64>()
                    .map_err(|_| AppError::bad_request(format!("`{name}` = `{v}` is not a number")).at(name.to_owned()))
            })
            .transpose()
    };
    let days = count(params, "days")?.unwrap_or(2);
    Ok(pulse_app::plan::PlanRequest {
        tenant: tenant.to_string(),
        start,
        days: u32::try_from(days).unwrap_or(u32::MAX),
        share: number("share")?.unwrap_or(0.5),
        metric: params.get("metric").filter(|m| !m.is_empty()).cloned().unwrap_or_else(|| "views".into()),
        target: number("target")?,
    })
}

/// A `YYYY-MM-DD` query parameter, when given (the API's and the dashboard's ranges).
pub(crate) fn day(params: &HashMap<String, String>, name: &str) -> AppResult<Option<NaiveDate>> {
    params
        .get(name)
        .filter(|v| !v.is_empty())
        .map(|v| pulse_config::real_date(name, v).map_err(|m| AppError::bad_request(m).at(name.to_owned())))
        .transpose()
}

fn count(params: &HashMap<String, String>, name: &str) -> AppResult<Option<usize>> {
    params
        .get(name)
        .filter(|v| !v.is_empty())
        .map(|v| {
            v.parse::<usize>().map_err(|_| {
                AppError::bad_request(format!("`{name}` = `{v}` is not a whole number")).at(name.to_owned())
            })
        })
        .transpose()
}

/// The report query a request's parameters describe (shared by the API and the dashboard).
pub fn report_query(kind: Kind, params: &HashMap<String, String>) -> AppResult<ReportQuery> {
    const KNOWN: &[&str] =
        &["site_id", "tenant", "practice", "from", "to", "latest_week", "sort", "limit", "offset", "variant", "format"];
    if let Some(unknown) = params.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return Err(AppError::bad_request(format!("unknown parameter `{unknown}`"))
            .with_hint(format!("the parameters are {}", KNOWN.join(", ")))
            .at(unknown.clone()));
    }
    let mut q = ReportQuery::new(kind);
    q.tenant = params.get("site_id").or(params.get("tenant")).filter(|v| !v.is_empty()).cloned();
    q.practice = params.get("practice").filter(|v| !v.is_empty()).cloned();
    q.from = day(params, "from")?;
    q.to = day(params, "to")?;
    if let (Some(f), Some(t)) = (q.from, q.to)
        && t < f
    {
        return Err(AppError::bad_request(format!("`to` ({t}) is before `from` ({f})")).at("to"));
    }
    // The same bound as the query API: a range of at most three years.
    if let (Some(f), Some(t)) = (q.from, q.to)
        && (t - f).num_days() > query::MAX_RANGE_DAYS
    {
        return Err(AppError::bad_request(format!(
            "the range {f} to {t} spans {} days, more than the {} one request may",
            (t - f).num_days(),
            query::MAX_RANGE_DAYS
        ))
        .with_hint("split it into requests of up to three years")
        .at("from"));
    }
    q.latest_week = matches!(params.get("latest_week").map(String::as_str), Some("true" | "1"));
    q.sort = params.get("sort").filter(|v| !v.is_empty()).cloned();
    let limit = count(params, "limit")?.unwrap_or(query::MAX_LIMIT);
    if limit == 0 || limit > query::MAX_LIMIT {
        return Err(AppError::bad_request(format!("limit {limit} is out of range"))
            .with_hint(format!("ask for 1 to {} rows and page with offset", query::MAX_LIMIT))
            .at("limit"));
    }
    q.top = Some(limit);
    q.offset = count(params, "offset")?;
    q.variant = params.get("variant").filter(|v| !v.is_empty()).cloned();
    Ok(q)
}

/// `GET /api/v1/reports/{kind}`: one report for one tenant, as JSON (default), CSV or Parquet.
#[utoipa::path(get, path = "/api/v1/reports/{kind}", tag = "reports",
    summary = "One report for one tenant, as JSON, CSV or Parquet",
    params(
        ("kind" = String, Path, description = "the report"),
        ("site_id" = Option<String>, Query, description = "tenant, for a key that reads several"),
        ("practice" = Option<String>, Query, description = "ODS code of one of the tenant's practices"),
        ("from" = Option<chrono::NaiveDate>, Query, description = "first day (ISO 8601)"),
        ("to" = Option<chrono::NaiveDate>, Query, description = "last day (ISO 8601); at most three years after `from`"),
        ("latest_week" = Option<bool>, Query, description = "only the latest week"),
        ("sort" = Option<String>, Query, description = "a column; -column for descending"),
        ("limit" = Option<usize>, Query, minimum = 1, description = "rows per page (default and most: the maximum)"),
        ("offset" = Option<usize>, Query, description = "rows to skip: the `next` link carries it"),
        ("variant" = Option<String>, Query, description = "a what-if range's reports (`pulse jobs run --from --to`)"),
        ("tenant" = Option<String>, Query, description = "the same as site_id"),
        ("format" = Option<String>, Query, description = "json (default), csv or parquet"),
    ),
    responses(
        (status = 200, description = "the rows: JSON with the run, total and next page; CSV and Parquet as downloads with X-Total-Count and a Link to the next page",
            content((wire::ReportPage = "application/json"), (String = "text/csv"), (String = "application/vnd.apache.parquet"))),
        Errors
    ))]
pub async fn report(
    State(state): State<Shared>,
    headers: HeaderMap,
    Path(kind): Path<String>,
    QueryString(params): QueryString<HashMap<String, String>>,
) -> ApiResult {
    let what = format!("GET /api/v1/reports/{kind}{}", crate::query_digest(params.iter()));
    logged(&state, &headers, KeyScope::Read, what, |state, caller| async move {
        let kind: Kind = kind.parse().map_err(|e: String| AppError::not_found(e))?;
        let q = report_query(kind, &params)?;
        let answer = report::query(&state.store, &state.config, &caller.access, &q).await?;
        let rows = answer.batch.num_rows();
        let tenant = answer.tenant.clone();
        let format = params.get("format").map(String::as_str).unwrap_or("json");
        // Never cut without saying so: the total, and a link to the next page when there is one.
        let next = answer.more().then(|| {
            let mut p: Vec<(String, String)> =
                params.iter().filter(|(k, _)| k.as_str() != "offset").map(|(k, v)| (k.clone(), v.clone())).collect();
            p.push(("offset".into(), (answer.offset + rows).to_string()));
            p.sort();
            let qs = form_urlencoded::Serializer::new(String::new()).extend_pairs(p).finish();
            format!("/api/v1/reports/{}?{qs}", kind.name())
        });
        let filename = format!("{}-{}", tenant, kind.name());
        let resp = match format {
            "json" => {
                let mut buf = Vec::new();
                report::write_json(&answer, &mut buf).map_err(AppError::from)?;
                let rows_json: serde_json::Value = serde_json::from_slice(&buf).unwrap_or_default();
                let run = answer.run.as_ref().map(|r| wire::RunRef {
                    run_id: r.run_id.clone(),
                    from: r.range_from,
                    to: r.range_to,
                    computed_at: r.computed_at.clone(),
                });
                json_of(&wire::ReportPage {
                    report: kind.name(),
                    tenant: tenant.clone(),
                    run,
                    note: answer.empty_note.clone(),
                    total: answer.total,
                    offset: answer.offset,
                    returned: rows,
                    next: next.clone(),
                    rows: rows_json,
                })
            }
            "csv" => {
                let mut buf = Vec::new();
                report::write_csv(&answer, &mut buf).map_err(AppError::from)?;
                download(buf, "text/csv; charset=utf-8", &format!("{filename}.csv"))
            }
            "parquet" => {
                let mut buf = Vec::new();
                report::write_parquet_to(&answer, &mut buf).map_err(AppError::from)?;
                download(buf, "application/vnd.apache.parquet", &format!("{filename}.parquet"))
            }
            other => {
                return Err(AppError::bad_request(format!("format `{other}`"))
                    .with_hint("use json, csv or parquet")
                    .at("format"));
            }
        };
        let mut resp = resp;
        let h = resp.headers_mut();
        h.insert("x-total-count", HeaderValue::from(answer.total));
        if let Some(next) = &next
            && let Ok(v) = HeaderValue::from_str(&format!("<{next}>; rel=\"next\""))
        {
            h.insert(header::LINK, v);
            h.insert("x-pulse-partial", HeaderValue::from_static("more rows follow: see the Link header (rel=next)"));
        }
        Ok((resp, tenant, rows))
    })
    .await
}

fn download(body: Vec<u8>, content_type: &'static str, filename: &str) -> Response {
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, content_type.to_owned()),
            (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{filename}\"")),
        ],
        body,
    )
        .into_response()
}

/// `GET /api/v1/keys` (admin): the keys for the caller's tenants, without hashes.
#[utoipa::path(get, path = "/api/v1/keys", tag = "keys", summary = "Keys for the caller's tenants (admin scope)",
    responses((status = 200, description = "the keys, without secrets or hashes", body = wire::KeysList), Errors))]
pub async fn keys_list(State(state): State<Shared>, headers: HeaderMap) -> ApiResult {
    logged(&state, &headers, KeyScope::Admin, "GET /api/v1/keys".into(), |state, caller| async move {
        let now = chrono::Utc::now();
        let keys: Vec<wire::KeyInfo> = state
            .keys
            .list()?
            .into_iter()
            .filter(|k| k.tenants.iter().all(|t| caller.tenants.contains(t)))
            .map(|k| wire::KeyInfo {
                state: k.state(now),
                id: k.id,
                name: k.name,
                tenants: k.tenants,
                scopes: k.scopes,
                created_at: k.created_at,
                expires_at: k.expires_at,
                revoked_at: k.revoked_at,
                last_used_at: k.last_used_at,
            })
            .collect();
        let n = keys.len();
        Ok((json_of(&wire::KeysList { keys }), caller.tenants.join(","), n))
    })
    .await
}

/// `POST /api/v1/keys/{id}/revoke` (admin): revokes a key whose tenants are all the caller's.
#[utoipa::path(post, path = "/api/v1/keys/{id}/revoke", tag = "keys",
    summary = "Revoke a key of the caller's tenants (admin scope)",
    params(("id" = String, Path, description = "the key's id (not its secret)")),
    responses((status = 200, description = "revoked", body = wire::Revoked), Errors))]
pub async fn keys_revoke(State(state): State<Shared>, headers: HeaderMap, Path(id): Path<String>) -> ApiResult {
    logged(&state, &headers, KeyScope::Admin, format!("POST /api/v1/keys/{id}/revoke"), |state, caller| async move {
        let visible =
            state.keys.list()?.into_iter().any(|k| k.id == id && k.tenants.iter().all(|t| caller.tenants.contains(t)));
        if !visible {
            return Err(AppError::not_found(format!("no key `{id}` among this admin's tenants")));
        }
        let record = state.keys.revoke(&id)?;
        Ok((json_of(&wire::Revoked { id: record.id, revoked_at: record.revoked_at }), caller.tenants.join(","), 1))
    })
    .await
}

/// `POST /api/v1/exports` (export scope): a research export of the key's tenants as a tar archive of the data
/// package; recorded in the audit trail with the key id.
#[utoipa::path(post, path = "/api/v1/exports", tag = "exports",
    summary = "A research export of the key's tenants (export scope): a tar archive of a Frictionless data package, disclosure-controlled and pseudonymised, recorded in the audit trail",
    request_body = wire::ExportRequest,
    responses((status = 200, description = "the package", content_type = "application/x-tar"), Errors))]
pub async fn export(State(state): State<Shared>, headers: HeaderMap, body: Bytes) -> ApiResult {
    logged(&state, &headers, KeyScope::Export, "POST /api/v1/exports".into(), |state, caller| async move {
        let req: wire::ExportRequest = serde_json::from_slice(&body).map_err(|e| {
            AppError::bad_request(format!("the export request is not valid: {e}")).with_hint(
                "send {\"project\": NAME, \"purpose\": AGREEMENT, \"tenants\": [..], \"from\": DAY, \"to\": DAY}",
            )
        })?;
        let spec = pulse_export::ExportSpec {
            tenants: req.tenants,
            from: req.from,
            to: req.to,
            project: req.project,
            purpose: req.purpose,
            requested_by: format!("key {}", caller.key_id),
            tables: req.tables,
            campaigns: req.campaigns,
            metrics: req.metrics,
        };
        let dir = std::env::temp_dir().join(format!("pulse-export-{}", crate::auth::random_token()));
        let result = pulse_export::run(&state.store, &state.config, &caller.access, &spec, &dir, &mut |_| {}).await;
        let archived = result.and_then(|o| pulse_export::archive(&dir, &o.export_id).map(|tar| (o, tar)));
        let _ = std::fs::remove_dir_all(&dir);
        let (outcome, tar) = archived?;
        let rows = outcome.rows.values().sum();
        let name = format!("{}.tar", outcome.export_id);
        Ok((download(tar, "application/x-tar", &name), caller.tenants.join(","), rows))
    })
    .await
}

/// `GET /api/v1/subscriptions`: the digest lists of the key's tenants, with their members.
#[utoipa::path(get, path = "/api/v1/subscriptions", tag = "digests",
    summary = "Digest lists of the caller's tenants, with their recipients and who unsubscribed",
    responses((status = 200, description = "the lists", body = wire::Subscriptions), Errors))]
pub async fn subscriptions_list(State(state): State<Shared>, headers: HeaderMap) -> ApiResult {
    logged(&state, &headers, KeyScope::Read, "GET /api/v1/subscriptions".into(), |state, caller| async move {
        let lists = pulse_app::subscriptions::lists(&state.store, &state.config, &caller.access).await?;
        let n = lists.len();
        Ok((json_of(&wire::Subscriptions { subscriptions: lists }), caller.tenants.join(","), n))
    })
    .await
}

/// `POST /api/v1/subscriptions/{list}/recipients` (admin) with `{"email": ...}`: adds someone to a list.
#[utoipa::path(post, path = "/api/v1/subscriptions/{list}/recipients", tag = "digests",
    summary = "Add a recipient to a digest list (admin scope)",
    params(("list" = String, Path, description = "a `[[subscription]]` list of the caller's tenants")),
    request_body = wire::RecipientRequest,
    responses((status = 200, description = "the list after the change", body = pulse_app::subscriptions::List), Errors))]
pub async fn subscriptions_add(
    State(state): State<Shared>,
    headers: HeaderMap,
    Path(list): Path<String>,
    body: Bytes,
) -> ApiResult {
    let what = format!("POST /api/v1/subscriptions/{list}/recipients");
    logged(&state, &headers, KeyScope::Admin, what, |state, caller| async move {
        let req: wire::RecipientRequest = serde_json::from_slice(&body).map_err(|e| {
            AppError::bad_request(format!("the body is not a recipient: {e}"))
                .with_hint(r#"send {"email": "name@organisation.nhs.uk"}"#)
        })?;
        let by = format!("key {}", caller.key_id);
        let l = pulse_app::subscriptions::change(
            &state.store,
            &state.config,
            &caller.access,
            &list,
            &req.email,
            "add",
            &by,
        )
        .await?;
        Ok((json_of(&l), l.tenant.clone(), l.recipients.len()))
    })
    .await
}

/// `DELETE /api/v1/subscriptions/{list}/recipients/{email}` (admin): takes someone off a list.
#[utoipa::path(delete, path = "/api/v1/subscriptions/{list}/recipients/{email}", tag = "digests",
    summary = "Remove a recipient from a digest list (admin scope)",
    params(("list" = String, Path, description = "a `[[subscription]]` list of the caller's tenants"), ("email" = String, Path)),
    responses((status = 200, description = "the list after the change", body = pulse_app::subscriptions::List), Errors))]
pub async fn subscriptions_remove(
    State(state): State<Shared>,
    headers: HeaderMap,
    Path((list, email)): Path<(String, String)>,
) -> ApiResult {
    let what = format!("DELETE /api/v1/subscriptions/{list}/recipients");
    logged(&state, &headers, KeyScope::Admin, what, |state, caller| async move {
        let by = format!("key {}", caller.key_id);
        let l =
            pulse_app::subscriptions::change(&state.store, &state.config, &caller.access, &list, &email, "remove", &by)
                .await?;
        Ok((json_of(&l), l.tenant.clone(), l.recipients.len()))
    })
    .await
}

/// `POST /api/v1/invitations` (admin): single-use, expiring links for practice managers to connect their page.
#[utoipa::path(post, path = "/api/v1/invitations", tag = "onboarding",
    summary = "Invite practices to connect their Facebook page (admin scope)",
    request_body = wire::InvitationRequest,
    responses((status = 200, description = "the invitations, each with its link (shown this once)", body = wire::InvitationsCreated), Errors))]
pub async fn invitations_create(State(state): State<Shared>, headers: HeaderMap, body: Bytes) -> ApiResult {
    logged(&state, &headers, KeyScope::Admin, "POST /api/v1/invitations".into(), |state, caller| async move {
        let req: wire::InvitationRequest = serde_json::from_slice(&body).map_err(|e| {
            AppError::bad_request(format!("the body is not an invitation request: {e}"))
                .with_hint(r#"send {"tenant": "north-staffs", "practices": ["M83001"]} or {"tenant": "north-staffs", "all_without_token": true}"#)
        })?;
        caller.access.scope(&req.tenant)?;
        let practices = match (req.all_without_token, req.practices.is_empty()) {
            (true, true) => pulse_app::onboarding::practices_without_token(&state.store, &state.config, &req.tenant).await?,
            (false, false) => req.practices,
            _ => {
                return Err(AppError::bad_request("give either `practices` or `all_without_token: true`")
                    .at("practices")
                    .with_hint(r#"{"tenant": "north-staffs", "practices": ["M83001"]}"#));
            }
        };
        if practices.len() > 10_000 {
            return Err(AppError::bad_request("at most 10,000 practices per request").at("practices"));
        }
        let by = format!("key {}", caller.key_id);
        let created =
            pulse_app::onboarding::invite(&state.store, &state.config, &caller.access, &req.tenant, &practices, &by, chrono::Utc::now())
                .await?;
        let n = created.len();
        let invitations = created
            .into_iter()
            .map(|c| wire::CreatedInvitation {
                id: c.id,
                tenant: c.tenant,
                practice: c.practice,
                practice_name: c.practice_name,
                expires_at: c.expires_at,
                link: c.link,
            })
            .collect();
        Ok((json_of(&wire::InvitationsCreated { invitations }), req.tenant.clone(), n))
    })
    .await
}

/// The tenant `?tenant=` names, or the key's only one.
fn named_tenant(caller: &Caller, params: &HashMap<String, String>) -> AppResult<String> {
    let scope = pulse_app::tenant::resolve(
        &caller.access,
        params.get("tenant").map(String::as_str),
        "tenant",
        "add ?tenant=<id>",
    )?;
    Ok(scope.as_str().to_owned())
}

/// `GET /api/v1/invitations?tenant=` (admin): the tenant's invitations and what became of them.
#[utoipa::path(get, path = "/api/v1/invitations", tag = "onboarding",
    summary = "A tenant's invitations: who invited, which page was connected (admin scope)",
    params(("tenant" = Option<String>, Query, description = "needed when the key has several tenants")),
    responses((status = 200, description = "newest first, never a link", body = wire::InvitationsList), Errors))]
pub async fn invitations_list(
    State(state): State<Shared>,
    headers: HeaderMap,
    QueryString(params): QueryString<HashMap<String, String>>,
) -> ApiResult {
    logged(&state, &headers, KeyScope::Admin, "GET /api/v1/invitations".into(), |state, caller| async move {
        let tenant = named_tenant(&caller, &params)?;
        let list = pulse_app::onboarding::list(&state.store, &caller.access, &tenant).await?;
        let n = list.len();
        let invitations = list.into_iter().map(wire::InvitationInfo::from).collect();
        Ok((json_of(&wire::InvitationsList { tenant: tenant.clone(), invitations }), tenant, n))
    })
    .await
}

/// `POST /api/v1/invitations/{id}/revoke?tenant=` (admin): withdraws an open invitation; its link stops working.
#[utoipa::path(post, path = "/api/v1/invitations/{id}/revoke", tag = "onboarding",
    summary = "Withdraw an open invitation (admin scope)",
    params(("id" = String, Path, description = "the invitation's id"),
        ("tenant" = Option<String>, Query, description = "needed when the key has several tenants")),
    responses((status = 200, description = "withdrawn", body = wire::InvitationInfo), Errors))]
pub async fn invitations_revoke(
    State(state): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
    QueryString(params): QueryString<HashMap<String, String>>,
) -> ApiResult {
    logged(
        &state,
        &headers,
        KeyScope::Admin,
        format!("POST /api/v1/invitations/{id}/revoke"),
        |state, caller| async move {
            let tenant = named_tenant(&caller, &params)?;
            let by = format!("key {}", caller.key_id);
            let i =
                pulse_app::onboarding::revoke(&state.store, &state.config, &caller.access, &tenant, &id, &by).await?;
            let info = wire::InvitationInfo::from(i);
            Ok((json_of(&info), tenant, 1))
        },
    )
    .await
}
