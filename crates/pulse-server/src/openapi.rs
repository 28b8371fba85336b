//! The OpenAPI 3.1 document, derived by utoipa from the handlers' `#[utoipa::path]` annotations (`api.rs`) and the
//! body types (`wire.rs`, `pulse_query::{QueryBody, Answer}`), which are the types the handlers really send and
//! accept. The lists that live in data rather than types are filled in from the same definitions the handlers use:
//! the metric and dimension names, which report answers which combination, the report kinds and their columns, the
//! key scopes, the export tables and metrics. Adding a metric, a report or an endpoint changes the document without
//! editing it.

use pulse_app::keys::KeyScope;
use pulse_app::report::{self, Kind};
use pulse_query::{self as query, Dimension, Metric};
use serde_json::{Value, json};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoResponses, Modify, OpenApi};

use crate::api;
use crate::wire::ErrorBody;

/// What any authenticated endpoint may answer instead of its result.
#[derive(IntoResponses)]
#[allow(dead_code)] // a description of responses, never built
pub enum Errors {
    /// the request is wrong: the body says which field and how to fix it
    #[response(status = 400)]
    BadRequest(ErrorBody),
    /// no key, or a key that is unknown, expired or revoked
    #[response(status = 401)]
    Unauthenticated(ErrorBody),
    /// the key may not read that tenant, or lacks the scope
    #[response(status = 403)]
    Forbidden(ErrorBody),
    /// no such report, key, list or page
    #[response(status = 404)]
    NotFound(ErrorBody),
    /// the tenant's reports have not been computed yet
    #[response(status = 409)]
    NotReady(ErrorBody),
    /// the body is over the limit (256 KiB); refused from its headers
    #[response(status = 413)]
    TooLarge(ErrorBody),
    /// over the key's rate or work budget; Retry-After says when to retry
    #[response(status = 429)]
    RateLimited(ErrorBody),
    /// the method is not one this path answers
    #[response(status = 405)]
    MethodNotAllowed(ErrorBody),
    /// the server failed to answer; the operator's log has the detail
    #[response(status = 500)]
    Internal(ErrorBody),
    /// the store is unavailable; retry
    #[response(status = 503)]
    Unavailable(ErrorBody),
}

/// The bearer scheme every endpoint but the health check and this document requires.
struct KeyAuth;

impl Modify for KeyAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let scopes: Vec<&str> = KeyScope::ALL.iter().map(|s| s.as_str()).collect();
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(format!("API key; scopes: {}", scopes.join(", "))))
                    .build(),
            ),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Practice Pulse analyst API"),
    paths(
        api::query,
        api::reports_index,
        api::report,
        api::region,
        api::campaign_plan,
        api::benchmarks,
        api::posting,
        api::campaigns_list,
        api::campaigns_register,
        api::campaigns_withdraw,
        api::export,
        api::me,
        api::keys_list,
        api::keys_revoke,
        api::subscriptions_list,
        api::subscriptions_add,
        api::subscriptions_remove,
        api::invitations_create,
        api::invitations_list,
        api::invitations_revoke,
        api::openapi,
        api::health,
    ),
    components(schemas(ErrorBody)),
    modifiers(&KeyAuth),
    security(("key" = []))
)]
struct Doc;

/// Sets `doc[path...]` (objects created on the way) to `value`.
fn set(doc: &mut Value, path: &[&str], value: Value) {
    let mut at = doc;
    for key in path {
        at = &mut at[*key];
    }
    *at = value;
}

pub fn document() -> Value {
    let mut doc = serde_json::to_value(Doc::openapi()).unwrap_or_else(|e| json!({"error": e.to_string()}));
    let metrics: Vec<&str> = Metric::ALL.iter().map(|m| m.name()).collect();
    let dimensions: Vec<&str> = Dimension::ALL.iter().map(|d| d.name()).collect();
    let metric_docs: String = Metric::ALL.iter().map(|m| format!("- `{}`: {}\n", m.name(), m.about())).collect();
    let dimension_docs: String = Dimension::ALL.iter().map(|d| format!("- `{}`: {}\n", d.name(), d.about())).collect();
    let combos: String = query::combinations()
        .into_iter()
        .map(|(table, m, d)| format!("- `{table}`: metrics {} by dimensions {}\n", m.join(", "), d.join(", ")))
        .collect();
    let kinds: Vec<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
    let report_docs: String = Kind::ALL
        .iter()
        .map(|k| {
            let cols: Vec<String> = k
                .table()
                .columns
                .iter()
                .map(|c| {
                    let unit = report::unit(*k, c.name);
                    if unit.is_empty() { format!("`{}`", c.name) } else { format!("`{}` ({unit})", c.name) }
                })
                .collect();
            format!("- `{}`: {}. Columns: {}\n", k.name(), k.about(), cols.join(", "))
        })
        .collect();
    set(
        &mut doc,
        &["info", "description"],
        json!(format!(
            "Engagement analytics across GP practices' Facebook pages, per commissioning organisation. Every request carries an API key (`Authorization: Bearer pulse_<id>_<secret>`, from `pulse keys create`); the tenant comes from the key. A key for one tenant reads that tenant; an admin key for a region names one of its tenants in `site_id`.\n\nMetrics:\n{metric_docs}\nDimensions:\n{dimension_docs}\nWhich report answers which combination (a query's metrics, dimensions and filters must all come from one):\n{combos}\nReports:\n{report_docs}"
        )),
    );
    // The query's names are data (Metric::ALL, Dimension::ALL), not types: fill in their enumerations.
    let q = ["components", "schemas", "Query", "properties"];
    set(&mut doc, &[&q[..], &["metrics", "items", "enum"]].concat(), json!(metrics));
    set(&mut doc, &[&q[..], &["metrics", "minItems"]].concat(), json!(1));
    set(&mut doc, &[&q[..], &["dimensions", "items", "enum"]].concat(), json!(dimensions));
    let range_doc = doc["components"]["schemas"]["Query"]["properties"]["date_range"]["description"].clone();
    set(
        &mut doc,
        &[&q[..], &["date_range"]].concat(),
        json!({"description": range_doc, "oneOf": [
            {"type": "string"},
            {"type": "array", "items": {"type": "string", "format": "date"}, "minItems": 2, "maxItems": 2},
            {"type": "null"}
        ]}),
    );
    set(
        &mut doc,
        &[&q[..], &["filters", "items"]].concat(),
        json!({"type": "array", "description": "[operator, dimension, values]", "prefixItems": [
            {"type": "string", "enum": ["is", "is_not", "contains"]},
            {"type": "string", "enum": dimensions},
            {"type": "array", "items": {"type": "string", "maxLength": query::MAX_FILTER_VALUE_BYTES}, "minItems": 1, "maxItems": query::MAX_FILTER_VALUES}
        ]}),
    );
    set(&mut doc, &[&q[..], &["filters", "maxItems"]].concat(), json!(query::MAX_FILTERS));
    let orderable = [metrics.clone(), dimensions.clone()].concat();
    set(
        &mut doc,
        &[&q[..], &["order_by", "items"]].concat(),
        json!({"type": "array", "description": "[metric or dimension, direction]", "prefixItems": [{"type": "string", "enum": orderable}, {"type": "string", "enum": ["asc", "desc"]}]}),
    );
    set(&mut doc, &["components", "schemas", "Pagination", "properties", "limit", "maximum"], json!(query::MAX_LIMIT));
    let e = ["components", "schemas", "ExportRequest", "properties"];
    set(&mut doc, &[&e[..], &["tables", "items", "enum"]].concat(), json!(pulse_export::TABLES));
    set(&mut doc, &[&e[..], &["metrics", "items", "enum"]].concat(), json!(pulse_export::METRICS));
    // The report endpoint: its kinds, formats and page size, and the Parquet download as a binary body.
    let report = &mut doc["paths"]["/api/v1/reports/{kind}"]["get"];
    if let Some(params) = report["parameters"].as_array_mut() {
        for p in params.iter_mut() {
            match p["name"].as_str() {
                Some("kind") => p["schema"]["enum"] = json!(kinds),
                Some("format") => p["schema"]["enum"] = json!(["json", "csv", "parquet"]),
                Some("limit") => p["schema"]["maximum"] = json!(query::MAX_LIMIT),
                _ => {}
            }
        }
    }
    report["responses"]["200"]["content"]["application/vnd.apache.parquet"]["schema"] =
        json!({"type": "string", "contentMediaType": "application/vnd.apache.parquet"});
    report["responses"]["200"]["headers"] = json!({
        "X-Total-Count": {"description": "rows before paging", "schema": {"type": "integer"}},
        "Link": {"description": "`<next page>; rel=\"next\"` when rows follow", "schema": {"type": "string"}}
    });
    doc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_lists_every_metric_dimension_and_report() {
        let doc = document();
        assert_eq!(doc["openapi"], "3.1.0");
        let q = &doc["components"]["schemas"]["Query"]["properties"];
        let names = |v: &Value| -> Vec<String> {
            v.as_array()
                .unwrap_or_else(|| panic!("an enumeration: {v}"))
                .iter()
                .map(|x| x.as_str().unwrap().to_owned())
                .collect()
        };
        assert_eq!(
            names(&q["metrics"]["items"]["enum"]),
            Metric::ALL.iter().map(|m| m.name().to_owned()).collect::<Vec<_>>()
        );
        assert_eq!(
            names(&q["dimensions"]["items"]["enum"]),
            Dimension::ALL.iter().map(|d| d.name().to_owned()).collect::<Vec<_>>()
        );
        let kind = doc["paths"]["/api/v1/reports/{kind}"]["get"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "kind")
            .cloned()
            .unwrap();
        assert_eq!(names(&kind["schema"]["enum"]), Kind::ALL.iter().map(|k| k.name().to_owned()).collect::<Vec<_>>());
        assert!(doc["paths"]["/api/v2/query"]["post"]["responses"]["400"].is_object());
        assert_eq!(
            doc["paths"]["/api/v2/query"]["post"]["responses"]["200"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/QueryAnswer"
        );
        assert_eq!(
            doc["components"]["schemas"]["QueryAnswer"]["properties"]["query"]["$ref"],
            "#/components/schemas/Query"
        );
        let report = &doc["paths"]["/api/v1/reports/{kind}"]["get"];
        let format = report["parameters"].as_array().unwrap().iter().find(|p| p["name"] == "format").unwrap();
        assert_eq!(format["schema"]["enum"], json!(["json", "csv", "parquet"]));
        assert_eq!(report["responses"]["200"]["content"]["application/vnd.apache.parquet"]["schema"]["type"], "string");
        assert_eq!(
            doc["components"]["schemas"]["Pagination"]["properties"]["limit"]["maximum"],
            json!(query::MAX_LIMIT)
        );
        assert!(report["responses"]["405"].is_object() && report["responses"]["500"].is_object());
        assert!(
            doc["components"]["securitySchemes"]["key"]["scheme"]
                .as_str()
                .is_some_and(|s| s.eq_ignore_ascii_case("bearer"))
        );
        for schema in ["Error", "Query", "QueryAnswer", "Meta", "ReportPage", "Me", "KeysList", "ExportRequest"] {
            assert!(doc["components"]["schemas"][schema].is_object(), "{schema} is described");
        }
    }

    /// Every route the server answers is in the document, and every path in the document is a route: read from
    /// the router's source, where the routes are declared.
    #[test]
    fn the_document_and_the_router_have_the_same_api_routes() {
        let doc = document();
        let mut documented: Vec<String> = doc["paths"].as_object().unwrap().keys().cloned().collect();
        documented.sort();
        let source = include_str!("lib.rs");
        let mut routed: Vec<String> = source
            .match_indices(".route(\"")
            .map(|(at, m)| {
                let rest = &source[at + m.len()..];
                rest[..rest.find('"').unwrap()].to_owned()
            })
            .filter(|p| p.starts_with("/api/") || p == "/healthz")
            .collect();
        routed.sort();
        assert_eq!(documented, routed);
        // Each documented operation is the method routed.
        for (path, ops) in doc["paths"].as_object().unwrap() {
            let line = source.lines().find(|l| l.contains(&format!(".route(\"{path}\""))).unwrap();
            for method in ops.as_object().unwrap().keys() {
                assert!(line.contains(&format!("{method}(")), "{method} {path} is documented but routed as {line}");
            }
        }
    }
}
