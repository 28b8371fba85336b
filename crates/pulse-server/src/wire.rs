//! The JSON bodies the API sends and accepts, as types: the handlers build these and serialise them, and the
//! OpenAPI document (`openapi.rs`, utoipa) is derived from the same definitions, so the two cannot drift.

use chrono::{DateTime, NaiveDate, Utc};
use pulse_app::keys::KeyScope;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Every error: what went wrong, how to fix it, and the field at fault when there is one.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Error)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// A stable code: `bad_request`, `unauthenticated`, `forbidden`, `not_found`, `not_ready`, `rate_limited`,
    /// `too_large`, `unavailable`, `internal`, ...
    pub code: String,
    pub message: String,
    /// What to do next.
    pub hint: Option<String>,
    /// The request field at fault.
    pub field: Option<String>,
}

/// `GET /healthz`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    pub status: &'static str,
    pub version: &'static str,
    /// The store in use, without credentials.
    pub store: String,
}

/// `GET /api/v1/me`: the key making the request.
#[derive(Debug, Serialize, ToSchema)]
pub struct Me {
    pub key_id: String,
    pub name: String,
    pub scopes: Vec<KeyScope>,
    pub tenants: Vec<TenantRef>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TenantRef {
    pub id: String,
    pub name: String,
}

/// `GET /api/v1/reports`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReportsIndex {
    pub reports: Vec<ReportInfo>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReportInfo {
    pub name: &'static str,
    pub about: &'static str,
    pub url: String,
    /// The column `from`/`to` select on.
    pub date_column: &'static str,
    pub columns: Vec<ColumnInfo>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ColumnInfo {
    pub name: &'static str,
    /// `people`, `per 1,000 registered patients`, ... or empty.
    pub unit: &'static str,
    pub about: &'static str,
}

/// `GET /api/v1/reports/{kind}` as JSON: one page of rows, with the total and the next page's link.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReportPage {
    pub report: &'static str,
    pub tenant: String,
    /// The pipelines run the rows came from.
    pub run: Option<RunRef>,
    /// Why there are no rows, when there are none.
    pub note: Option<String>,
    /// Rows before paging.
    pub total: usize,
    pub offset: usize,
    pub returned: usize,
    /// The next page, when there is one: rows are never cut without saying so.
    pub next: Option<String>,
    /// The rows, one object per row, with `practice_name` beside `practice_code` and a `null_reasons` object.
    #[schema(value_type = Vec<Object>)]
    pub rows: serde_json::Value,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RunRef {
    pub run_id: String,
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub computed_at: String,
}

/// `GET /api/v1/keys` (admin): never a secret or a hash.
#[derive(Debug, Serialize, ToSchema)]
pub struct KeysList {
    pub keys: Vec<KeyInfo>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct KeyInfo {
    pub id: String,
    pub name: String,
    pub tenants: Vec<String>,
    pub scopes: Vec<KeyScope>,
    /// `active`, `revoked` or `expired`.
    pub state: &'static str,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
}

/// `POST /api/v1/keys/{id}/revoke` (admin).
#[derive(Debug, Serialize, ToSchema)]
pub struct Revoked {
    pub id: String,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// `POST /api/v1/exports` (export scope): what to export and under which agreement.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExportRequest {
    /// An `[[export_project]]` of the deployment.
    pub project: String,
    /// The data-sharing agreement or study reference.
    pub purpose: String,
    /// Tenants to include (default: the key's).
    #[serde(default)]
    pub tenants: Vec<String>,
    pub from: Option<NaiveDate>,
    pub to: Option<NaiveDate>,
    /// Tables to include (default: all): see the enumeration.
    #[serde(default)]
    pub tables: Vec<String>,
    #[serde(default)]
    pub campaigns: Vec<String>,
    /// Metrics to include (default: all): see the enumeration.
    #[serde(default)]
    pub metrics: Vec<String>,
}

/// `POST /api/v1/subscriptions/{list}/recipients` (admin).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecipientRequest {
    #[schema(format = "email")]
    pub email: String,
}

/// `POST /api/v1/invitations` (admin): invitations for practices of one tenant.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InvitationRequest {
    pub tenant: String,
    /// Practice codes to invite; or leave it out and set `all_without_token`.
    #[serde(default)]
    pub practices: Vec<String>,
    /// Every practice of the tenant with no page whose token works.
    #[serde(default)]
    pub all_without_token: bool,
}

/// A new invitation: the link is shown this once (only a digest of its secret is kept).
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedInvitation {
    pub id: String,
    pub tenant: String,
    pub practice: String,
    pub practice_name: String,
    pub expires_at: chrono::DateTime<chrono::Utc>,
    /// Send this to the practice's manager; it works once.
    pub link: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct InvitationsCreated {
    pub invitations: Vec<CreatedInvitation>,
}

/// One invitation's journal: who invited, when, and which page was connected with it. Never its link.
#[derive(Debug, Serialize, ToSchema)]
pub struct InvitationInfo {
    pub id: String,
    pub practice: String,
    /// `open`, `used`, `expired`, `revoked`.
    pub state: String,
    pub created_by: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub expires_at: chrono::DateTime<chrono::Utc>,
    pub page: Option<String>,
    pub used_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl From<pulse_app::onboarding::Invitation> for InvitationInfo {
    fn from(i: pulse_app::onboarding::Invitation) -> Self {
        InvitationInfo {
            id: i.id,
            practice: i.practice,
            state: i.state,
            created_by: i.created_by,
            created_at: i.created_at,
            expires_at: i.expires_at,
            page: i.page,
            used_at: i.used_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct InvitationsList {
    pub tenant: String,
    pub invitations: Vec<InvitationInfo>,
}

/// `GET /api/v1/region`: the key's tenants side by side, with adoption.
#[derive(Debug, Serialize, ToSchema)]
pub struct Region {
    pub from: Option<NaiveDate>,
    pub to: Option<NaiveDate>,
    pub tenants: Vec<pulse_query::region::TenantSide>,
}

/// `GET /api/v1/subscriptions`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Subscriptions {
    pub subscriptions: Vec<pulse_app::subscriptions::List>,
}

/// `GET /api/v1/campaigns`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Campaigns {
    pub campaigns: Vec<pulse_app::campaigns::Managed>,
}
