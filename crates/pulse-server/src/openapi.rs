//! The OpenAPI 3.1 document, built from the same definitions the handlers use: the metric and dimension lists,
//! which report answers which combination, the report kinds and their columns, the key scopes. Adding a metric or a
//! report changes the document without editing it.

use pulse_app::keys::KeyScope;
use pulse_app::report::{self, Kind};
use pulse_query::{self as query, Dimension, Metric};
use serde_json::{Value, json};

fn error_response(what: &str) -> Value {
    json!({"description": what, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}})
}

pub fn document() -> Value {
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
    let scopes: Vec<&str> = KeyScope::ALL.iter().map(|s| s.as_str()).collect();
    let errors = json!({
        "400": error_response("the request is wrong: the body says which field and how to fix it"),
        "401": error_response("no key, or a key that is unknown, expired or revoked"),
        "403": error_response("the key may not read that tenant, or lacks the scope"),
        "409": error_response("the tenant's reports have not been computed yet"),
        "429": error_response("over the key's rate limit; Retry-After says when to retry"),
        "503": error_response("the store is unavailable; retry"),
    });
    let with_errors = |ok: Value| {
        let mut r = errors.clone();
        r.as_object_mut().expect("object").insert("200".into(), ok);
        r
    };
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Practice Pulse analyst API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": format!(
                "Engagement analytics across GP practices' Facebook pages, per commissioning organisation. Every request carries an API key (`Authorization: Bearer pulse_<id>_<secret>`, from `pulse keys create`); the tenant comes from the key. A key for one tenant reads that tenant; an admin key for a region names one of its tenants in `site_id`.\n\nMetrics:\n{metric_docs}\nDimensions:\n{dimension_docs}\nWhich report answers which combination (a query's metrics, dimensions and filters must all come from one):\n{combos}\nReports:\n{report_docs}"
            ),
        },
        "components": {
            "securitySchemes": {"key": {"type": "http", "scheme": "bearer", "description": format!("API key; scopes: {}", scopes.join(", "))}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "properties": {"error": {"type": "object", "properties": {
                        "code": {"type": "string"}, "message": {"type": "string"},
                        "hint": {"type": ["string", "null"]}, "field": {"type": ["string", "null"]}
                    }, "required": ["code", "message"]}}
                },
                "Query": {
                    "type": "object",
                    "required": ["metrics"],
                    "additionalProperties": false,
                    "properties": {
                        "site_id": {"type": "string", "description": "tenant id; required for a key that reads several tenants"},
                        "metrics": {"type": "array", "items": {"type": "string", "enum": metrics}, "minItems": 1},
                        "dimensions": {"type": "array", "items": {"type": "string", "enum": dimensions}},
                        "date_range": {
                            "description": "\"all\", \"Nd\" (1 to 1098 days), \"6mo\", \"12mo\" ending at the latest day in the reports, or two YYYY-MM-DD days",
                            "oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string", "format": "date"}, "minItems": 2, "maxItems": 2}]
                        },
                        "filters": {"type": "array", "items": {"type": "array", "prefixItems": [
                            {"type": "string", "enum": ["is", "is_not", "contains"]},
                            {"type": "string", "enum": dimensions},
                            {"type": "array", "items": {"type": "string"}, "minItems": 1}
                        ]}},
                        "order_by": {"type": "array", "items": {"type": "array", "prefixItems": [{"type": "string"}, {"type": "string", "enum": ["asc", "desc"]}]}},
                        "pagination": {"type": "object", "properties": {
                            "limit": {"type": "integer", "minimum": 1, "maximum": query::MAX_LIMIT},
                            "offset": {"type": "integer", "minimum": 0}
                        }}
                    }
                },
                "QueryAnswer": {
                    "type": "object",
                    "properties": {
                        "results": {"type": "array", "items": {"type": "object", "properties": {
                            "dimensions": {"type": "array", "items": {"type": "string"}},
                            "metrics": {"type": "array", "items": {"type": ["number", "null"]}}
                        }}},
                        "meta": {"type": "object", "properties": {
                            "tenant": {"type": "string"}, "source": {"type": "string"},
                            "date_range": {"type": ["array", "null"], "items": {"type": "string", "format": "date"}},
                            "total_rows": {"type": "integer"}, "watermark": {"type": "string"},
                            "practice_names": {"type": "object", "additionalProperties": {"type": "string"}},
                            "notes": {"type": "array", "items": {"type": "string"}}, "cached": {"type": "boolean"}
                        }},
                        "query": {"$ref": "#/components/schemas/Query"}
                    }
                }
            }
        },
        "security": [{"key": []}],
        "paths": {
            "/api/v2/query": {"post": {
                "summary": "Metrics by dimensions over a date range, with filters, order and paging",
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Query"}}}},
                "responses": with_errors(json!({"description": "the answer", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/QueryAnswer"}}}}))
            }},
            "/api/v1/reports": {"get": {"summary": "The reports and their columns", "responses": with_errors(json!({"description": "the list"}))}},
            "/api/v1/reports/{kind}": {"get": {
                "summary": "One report for one tenant, as JSON, CSV or Parquet",
                "parameters": [
                    {"name": "kind", "in": "path", "required": true, "schema": {"type": "string", "enum": kinds}},
                    {"name": "site_id", "in": "query", "schema": {"type": "string"}, "description": "tenant, for a key that reads several"},
                    {"name": "practice", "in": "query", "schema": {"type": "string"}, "description": "ODS code of one of the tenant's practices"},
                    {"name": "from", "in": "query", "schema": {"type": "string", "format": "date"}},
                    {"name": "to", "in": "query", "schema": {"type": "string", "format": "date"}},
                    {"name": "latest_week", "in": "query", "schema": {"type": "boolean"}},
                    {"name": "sort", "in": "query", "schema": {"type": "string"}, "description": "a column; -column for descending"},
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": query::MAX_LIMIT}},
                    {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0}},
                    {"name": "variant", "in": "query", "schema": {"type": "string"}},
                    {"name": "format", "in": "query", "schema": {"type": "string", "enum": ["json", "csv", "parquet"]}}
                ],
                "responses": with_errors(json!({"description": "the rows (JSON: with run and null reasons; CSV and Parquet as downloads)"}))
            }},
            "/api/v1/exports": {"post": {
                "summary": "A research export of the key's tenants (export scope): a tar archive of a Frictionless data package, disclosure-controlled and pseudonymised, recorded in the audit trail",
                "requestBody": {"required": true, "content": {"application/json": {"schema": {
                    "type": "object", "required": ["project", "purpose"], "additionalProperties": false,
                    "properties": {
                        "project": {"type": "string", "description": "an [[export_project]] of the deployment"},
                        "purpose": {"type": "string", "description": "the data-sharing agreement or study reference"},
                        "tenants": {"type": "array", "items": {"type": "string"}},
                        "tables": {"type": "array", "items": {"type": "string", "enum": pulse_export::TABLES}},
                        "campaigns": {"type": "array", "items": {"type": "string"}},
                        "metrics": {"type": "array", "items": {"type": "string", "enum": pulse_export::METRICS}},
                        "from": {"type": "string", "format": "date"}, "to": {"type": "string", "format": "date"}
                    }
                }}}},
                "responses": with_errors(json!({"description": "the package", "content": {"application/x-tar": {}}}))
            }},
            "/api/v1/me": {"get": {"summary": "The key: id, name, scopes, tenants", "responses": with_errors(json!({"description": "the key"}))}},
            "/api/v1/keys": {"get": {"summary": "Keys for the caller's tenants (admin scope)", "responses": with_errors(json!({"description": "the keys, without secrets or hashes"}))}},
            "/api/v1/keys/{id}/revoke": {"post": {
                "summary": "Revoke a key of the caller's tenants (admin scope)",
                "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}],
                "responses": with_errors(json!({"description": "revoked"}))
            }},
            "/api/v1/subscriptions": {"get": {"summary": "Digest lists of the caller's tenants, with their recipients and who unsubscribed", "responses": with_errors(json!({"description": "the lists"}))}},
            "/api/v1/subscriptions/{list}/recipients": {"post": {
                "summary": "Add a recipient to a digest list (admin scope)",
                "parameters": [{"name": "list", "in": "path", "required": true, "schema": {"type": "string"}}],
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object", "required": ["email"], "additionalProperties": false, "properties": {"email": {"type": "string", "format": "email"}}}}}},
                "responses": with_errors(json!({"description": "the list after the change"}))
            }},
            "/api/v1/subscriptions/{list}/recipients/{email}": {"delete": {
                "summary": "Remove a recipient from a digest list (admin scope)",
                "parameters": [{"name": "list", "in": "path", "required": true, "schema": {"type": "string"}}, {"name": "email", "in": "path", "required": true, "schema": {"type": "string"}}],
                "responses": with_errors(json!({"description": "the list after the change"}))
            }},
            "/api/v1/openapi.json": {"get": {"summary": "This document", "security": [], "responses": {"200": {"description": "OpenAPI 3.1"}}}},
            "/healthz": {"get": {"summary": "Liveness", "security": [], "responses": {"200": {"description": "ok"}}}}
        }
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_document_lists_every_metric_dimension_and_report() {
        let doc = super::document();
        let text = doc.to_string();
        for m in pulse_query::Metric::ALL {
            assert!(text.contains(&format!("\"{}\"", m.name())), "{}", m.name());
        }
        for k in pulse_app::report::Kind::ALL {
            assert!(text.contains(k.name()), "{}", k.name());
        }
        assert_eq!(doc["openapi"], "3.1.0");
        assert!(doc["paths"]["/api/v2/query"]["post"]["responses"]["400"].is_object());
    }
}
