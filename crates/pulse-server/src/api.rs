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
use serde_json::json;

use crate::{ApiError, Shared, json_body, log_request};

type ApiResult = Result<Response, ApiError>;

pub async fn health(State(state): State<Shared>) -> Response {
    json_body(&json!({"status": "ok", "version": env!("CARGO_PKG_VERSION"), "store": state.store.describe()}))
}

pub async fn openapi() -> Response {
    json_body(&crate::openapi::document())
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

pub async fn me(State(state): State<Shared>, headers: HeaderMap) -> ApiResult {
    logged(&state, &headers, KeyScope::Read, "GET /api/v1/me".into(), |state, caller| async move {
        let tenants: Vec<serde_json::Value> = caller
            .access
            .scopes()
            .iter()
            .map(|s| {
                let name = state.config.tenant(s.tenant()).map(|t| t.name.clone()).unwrap_or_default();
                json!({"id": s.to_string(), "name": name})
            })
            .collect();
        let body = json!({
            "key_id": caller.key_id,
            "name": caller.key_name,
            "scopes": caller.scopes,
            "tenants": tenants,
        });
        Ok((json_body(&body), caller.tenants.join(","), 1))
    })
    .await
}

/// `POST /api/v2/query`: metrics by dimensions, Plausible's v2 shape.
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
        let value = serde_json::to_value(&answer)
            .map_err(|e| AppError::new(pulse_app::error::ErrorKind::Internal, e.to_string()))?;
        Ok((json_body(&value), tenant, rows))
    })
    .await
}

pub async fn reports_index(State(state): State<Shared>, headers: HeaderMap) -> ApiResult {
    logged(&state, &headers, KeyScope::Read, "GET /api/v1/reports".into(), |_state, caller| async move {
        let reports: Vec<serde_json::Value> = Kind::ALL
            .iter()
            .map(|k| {
                json!({
                    "name": k.name(),
                    "about": k.about(),
                    "url": format!("/api/v1/reports/{}", k.name()),
                    "date_column": k.date_column(),
                    "columns": k.table().columns.iter().map(|c| json!({"name": c.name, "unit": report::unit(*k, c.name), "about": c.doc})).collect::<Vec<_>>(),
                })
            })
            .collect();
        Ok((json_body(&json!({"reports": reports})), caller.tenants.join(","), reports.len()))
    })
    .await
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
                let run = answer.run.as_ref().map(|r| {
                    json!({"run_id": r.run_id, "from": r.range_from.to_string(), "to": r.range_to.to_string(), "computed_at": r.computed_at})
                });
                json_body(&json!({"report": kind.name(), "tenant": tenant, "run": run, "note": answer.empty_note,
                    "total": answer.total, "offset": answer.offset, "returned": rows, "next": next, "rows": rows_json}))
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
pub async fn keys_list(State(state): State<Shared>, headers: HeaderMap) -> ApiResult {
    logged(&state, &headers, KeyScope::Admin, "GET /api/v1/keys".into(), |state, caller| async move {
        let now = chrono::Utc::now();
        let keys: Vec<serde_json::Value> = state
            .keys
            .list()?
            .into_iter()
            .filter(|k| k.tenants.iter().all(|t| caller.tenants.contains(t)))
            .map(|k| {
                json!({
                    "id": k.id, "name": k.name, "tenants": k.tenants, "scopes": k.scopes, "state": k.state(now),
                    "created_at": k.created_at, "expires_at": k.expires_at, "revoked_at": k.revoked_at,
                    "last_used_at": k.last_used_at,
                })
            })
            .collect();
        let n = keys.len();
        Ok((json_body(&json!({"keys": keys})), caller.tenants.join(","), n))
    })
    .await
}

/// `POST /api/v1/keys/{id}/revoke` (admin): revokes a key whose tenants are all the caller's.
pub async fn keys_revoke(State(state): State<Shared>, headers: HeaderMap, Path(id): Path<String>) -> ApiResult {
    logged(&state, &headers, KeyScope::Admin, format!("POST /api/v1/keys/{id}/revoke"), |state, caller| async move {
        let visible =
            state.keys.list()?.into_iter().any(|k| k.id == id && k.tenants.iter().all(|t| caller.tenants.contains(t)));
        if !visible {
            return Err(AppError::not_found(format!("no key `{id}` among this admin's tenants")));
        }
        let record = state.keys.revoke(&id)?;
        Ok((json_body(&json!({"id": record.id, "revoked_at": record.revoked_at})), caller.tenants.join(","), 1))
    })
    .await
}

/// `POST /api/v1/exports` (export scope): a research export of the key's tenants as a tar archive of the data
/// package; recorded in the audit trail with the key id.
pub async fn export(State(state): State<Shared>, headers: HeaderMap, body: Bytes) -> ApiResult {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Request {
        #[serde(default)]
        tenants: Vec<String>,
        from: Option<NaiveDate>,
        to: Option<NaiveDate>,
        project: String,
        purpose: String,
        #[serde(default)]
        tables: Vec<String>,
        #[serde(default)]
        campaigns: Vec<String>,
        #[serde(default)]
        metrics: Vec<String>,
    }
    logged(&state, &headers, KeyScope::Export, "POST /api/v1/exports".into(), |state, caller| async move {
        let req: Request = serde_json::from_slice(&body).map_err(|e| {
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
pub async fn subscriptions_list(State(state): State<Shared>, headers: HeaderMap) -> ApiResult {
    logged(&state, &headers, KeyScope::Read, "GET /api/v1/subscriptions".into(), |state, caller| async move {
        let lists = pulse_app::subscriptions::lists(&state.store, &state.config, &caller.access).await?;
        let n = lists.len();
        Ok((json_body(&json!({"subscriptions": lists})), caller.tenants.join(","), n))
    })
    .await
}

/// `POST /api/v1/subscriptions/{list}/recipients` (admin) with `{"email": ...}`: adds someone to a list.
pub async fn subscriptions_add(
    State(state): State<Shared>,
    headers: HeaderMap,
    Path(list): Path<String>,
    body: Bytes,
) -> ApiResult {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Request {
        email: String,
    }
    let what = format!("POST /api/v1/subscriptions/{list}/recipients");
    logged(&state, &headers, KeyScope::Admin, what, |state, caller| async move {
        let req: Request = serde_json::from_slice(&body).map_err(|e| {
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
        Ok((json_body(&json!(l)), l.tenant.clone(), l.recipients.len()))
    })
    .await
}

/// `DELETE /api/v1/subscriptions/{list}/recipients/{email}` (admin): takes someone off a list.
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
        Ok((json_body(&json!(l)), l.tenant.clone(), l.recipients.len()))
    })
    .await
}
