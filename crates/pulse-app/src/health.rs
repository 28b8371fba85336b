//! Token health: each page's token checked through Meta's `debug_token` (validity, scopes, data access expiry),
//! daily by the scheduler and by `pulse pages health`. A page whose token was invalidated (a password change, the
//! manager's role removed, the app removed), lost a permission the ingester needs, or whose data access ends within
//! [`EXPIRY_WARNING_DAYS`] needs re-authorisation: the check makes a fresh invitation for that practice (when
//! `[onboarding]` is set) and keeps its link sealed in the vault, so the data-quality page and the weekly digest
//! can show a link that works. Re-authorising through it replaces the token in the vault; checkpoints are per page,
//! so ingest resumes where it stopped.
//!
//! Each check is a journal entry per page in the tenant's `token_health` stream; the latest is the page's health.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, TimeZone, Utc};
use pulse_config::{Config, Secret, TenantScope};
use pulse_domain::StateEvent;
use pulse_ingest::GraphClient;
use pulse_store::Store;
use serde::{Deserialize, Serialize};

use crate::error::{AppError, AppResult, ErrorKind};
use crate::vault::{Entry, Vault};

/// The state stream of token checks.
pub const STREAM: &str = "token_health";

/// A page whose data access ends within this many days needs re-authorisation.
pub const EXPIRY_WARNING_DAYS: i64 = 14;

/// The permissions a page token must carry for the ingester.
pub const NEEDED: [&str; 2] = ["pages_read_engagement", "read_insights"];

/// A page's token, as last checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageHealth {
    pub page: String,
    pub practice: String,
    pub checked_at: DateTime<Utc>,
    /// `ok`, `expiring` (data access ends soon), `invalid`, `permission` (a needed permission lost), `unchecked`
    /// (Meta could not be asked).
    pub state: String,
    /// What is wrong, in words (never the token).
    pub problem: Option<String>,
    pub data_access_expires_at: Option<DateTime<Utc>>,
    /// The invitation made for re-authorisation, and its link sealed in the vault.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invitation: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed_link: Option<Entry>,
}

impl PageHealth {
    pub fn needs_attention(&self) -> bool {
        matches!(self.state.as_str(), "expiring" | "invalid" | "permission")
    }
}

/// What a page needs, as the dashboard and the digest show it: the link opened from the vault.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Attention {
    pub practice: String,
    pub page: String,
    pub state: String,
    pub problem: String,
    pub checked_at: DateTime<Utc>,
    /// A working re-authorisation link, when onboarding is set up and the invitation is still open.
    pub link: Option<String>,
}

fn subcode_words(subcode: Option<i64>) -> &'static str {
    match subcode {
        Some(458) => "the app was removed from the page manager's account",
        Some(460) => "the page manager changed their Facebook password",
        Some(463) => "the token expired",
        Some(459) | Some(464) => "Facebook locked the page manager's account until they log in",
        _ => "Facebook no longer accepts the token (the manager's role on the page removed, or the token revoked)",
    }
}

/// What one `debug_token` answer says of a page.
pub fn judge(
    data: &pulse_graph::wire::DebugTokenData,
    now: DateTime<Utc>,
) -> (String, Option<String>, Option<DateTime<Utc>>) {
    let expires =
        (data.data_access_expires_at > 0).then(|| Utc.timestamp_opt(data.data_access_expires_at, 0).single()).flatten();
    if !data.is_valid {
        let why = match &data.error {
            Some(e) if e.message.to_ascii_lowercase().contains("data access") => {
                "the app's data access expired (90 days without the manager using it)".to_owned()
            }
            Some(e) => subcode_words(e.error_subcode).to_owned(),
            None => subcode_words(None).to_owned(),
        };
        return ("invalid".into(), Some(why), expires);
    }
    let missing: Vec<&str> = NEEDED.iter().copied().filter(|p| !data.scopes.iter().any(|s| s == p)).collect();
    if !missing.is_empty() {
        return (
            "permission".into(),
            Some(format!("the token lost the permission {}", missing.join(" and "))),
            expires,
        );
    }
    if let Some(at) = expires
        && at - now <= Duration::days(EXPIRY_WARNING_DAYS)
    {
        return ("expiring".into(), Some(format!("data access ends on {}", at.format("%-d %B %Y"))), expires);
    }
    ("ok".into(), None, expires)
}

/// A re-authorisation link sealed in the vault, bound to the tenant and `link:<page>`.
fn seal_link(v: &Vault, tenant: &str, page: &str, practice: &str, link: &str, at: DateTime<Utc>) -> AppResult<Entry> {
    let bound = format!("link:{page}");
    let (nonce, sealed) = v.seal(tenant, &bound, &Secret::new(link))?;
    Ok(Entry {
        page: bound,
        practice: practice.to_owned(),
        key_id: v.key_id().to_owned(),
        nonce,
        sealed,
        by: "token health check".into(),
        obtained_at: at,
        removed: false,
        kind: None,
    })
}

/// Seals every kept re-authorisation link again under the current key (with `pulse vault rotate`), so dropping the
/// old key does not silently break the links the data-quality page and the digest show. Returns how many.
pub async fn reseal_links<S: Store>(store: &S, vault: &Vault, access: &pulse_config::Access) -> AppResult<usize> {
    let mut n = 0;
    for scope in access.write_scopes() {
        let tenant = scope.as_str().to_owned();
        let mut events = Vec::new();
        for (page, mut h) in latest(store, scope.read()).await? {
            let Some(sealed) = h.sealed_link.as_ref().filter(|e| e.key_id != vault.key_id()) else { continue };
            let Ok(link) = vault.open(&tenant, sealed) else { continue };
            h.sealed_link = Some(seal_link(vault, &tenant, &h.page, &h.practice, link.expose(), sealed.obtained_at)?);
            events.push(StateEvent {
                id: uuid::Uuid::new_v4().to_string(),
                stream: STREAM.into(),
                key: page,
                at: Utc::now(),
                body: serde_json::to_string(&h)
                    .map_err(|e| AppError::new(ErrorKind::Internal, format!("health: {e}")))?,
            });
        }
        n += events.len();
        if !events.is_empty() {
            store.append_state(&scope, &events).await?;
        }
    }
    Ok(n)
}

/// Every page's latest health in `scope`.
pub async fn latest<S: Store>(store: &S, scope: &TenantScope) -> AppResult<BTreeMap<String, PageHealth>> {
    let mut out = BTreeMap::new();
    for e in store.read_state(scope, STREAM).await? {
        if let Ok(h) = serde_json::from_str::<PageHealth>(&e.body) {
            out.insert(e.key.clone(), h);
        }
    }
    Ok(out)
}

/// The pages of `scope` that need attention now, each with a working re-authorisation link where there is one.
/// `scope` must be one the caller may read; links open only with the vault's keys.
pub async fn attention<S: Store>(store: &S, config: &Config, scope: &TenantScope) -> AppResult<Vec<Attention>> {
    let vault = Vault::from_config(config).ok().flatten();
    let open: Vec<String> = crate::onboarding::list(store, &config.operator_access(), scope.as_str())
        .await
        .map(|l| l.into_iter().filter(|i| i.state == "open").map(|i| i.id).collect())
        .unwrap_or_default();
    let mut out = Vec::new();
    for h in latest(store, scope).await?.into_values().filter(PageHealth::needs_attention) {
        let link = match (&vault, &h.sealed_link, &h.invitation) {
            (Some(v), Some(sealed), Some(id)) if open.contains(id) => {
                v.open(scope.as_str(), sealed).ok().map(|s| s.expose().to_owned())
            }
            _ => None,
        };
        out.push(Attention {
            practice: h.practice.clone(),
            page: h.page.clone(),
            state: h.state.clone(),
            problem: h.problem.clone().unwrap_or_default(),
            checked_at: h.checked_at,
            link,
        });
    }
    Ok(out)
}

/// What a check found, for the command's output.
#[derive(Debug, Default, Clone)]
pub struct Checked {
    pub pages: Vec<(String, PageHealth)>,
}

/// Checks every page token of the tenants named (all when empty) through `debug_token`, records each page's
/// health, and makes a re-authorisation invitation for each page that newly needs one.
pub async fn check<S: Store>(store: &S, config: &Config, tenants: &[String], now: DateTime<Utc>) -> AppResult<Checked> {
    let app_id = config.graph.app_id.clone().filter(|a| !a.trim().is_empty()).ok_or_else(|| {
        AppError::bad_request("checking tokens needs the Meta app's id: set [graph] app_id")
            .with_hint("debug_token is asked with the app's own token (app id and secret)")
    })?;
    let secret = match &config.graph.app_secret {
        Some(r) => {
            config.resolve(r).map_err(|e| AppError::bad_request(format!("graph.app_secret ({}): {e}", r.describe())))?
        }
        None => return Err(AppError::bad_request("checking tokens needs [graph] app_secret")),
    };
    let app_token = Secret::new(format!("{app_id}|{}", secret.expose()));
    let (targets, _) = crate::ingest::targets(store, config, tenants).await.map_err(AppError::from)?;
    let client = GraphClient::new(
        &config.graph.base_url,
        config.graph.version,
        Some(secret),
        std::time::Duration::from_secs(30),
    )
    .map_err(|e| AppError::new(ErrorKind::Unavailable, format!("the Graph API client: {e}")))?;
    let tokens: Vec<Secret> = targets.iter().map(|t| t.token.clone()).collect();
    let answers = client.debug_tokens(&app_token, &tokens).await.map_err(|e| {
        AppError::new(ErrorKind::Unavailable, format!("asking Meta's debug_token: {e}"))
            .with_hint("check [graph] base_url, app_id and app_secret; tokens were not judged, nothing was recorded")
    })?;
    let vault = Vault::from_config(config)?;
    let mut checked = Checked::default();
    let mut by_tenant: BTreeMap<String, Vec<StateEvent>> = BTreeMap::new();
    for (t, answer) in targets.iter().zip(answers) {
        let tenant = t.scope.as_str().to_owned();
        let previous = latest(store, t.scope.read()).await?.remove(t.page.as_str());
        let (state, problem, expires) = match &answer {
            Ok(data) => judge(data, now),
            Err(why) => ("unchecked".into(), Some(why.clone()), None),
        };
        let mut h = PageHealth {
            page: t.page.to_string(),
            practice: t.practice.to_string(),
            checked_at: now,
            state,
            problem,
            data_access_expires_at: expires,
            invitation: None,
            sealed_link: None,
        };
        if h.needs_attention() {
            // Keep the invitation made earlier while it is still open; otherwise make one.
            let open_ids: Vec<String> = crate::onboarding::list(store, &config.operator_access(), &tenant)
                .await?
                .into_iter()
                // Only an open invitation bound to this page is kept (older ones could connect any page).
                .filter(|i| i.state == "open" && i.for_page.as_deref() == Some(h.page.as_str()))
                .map(|i| i.id)
                .collect();
            match previous.filter(|p| p.invitation.as_ref().is_some_and(|id| open_ids.contains(id))) {
                Some(p) => (h.invitation, h.sealed_link) = (p.invitation, p.sealed_link),
                None if config.onboarding.is_some() && vault.is_some() => {
                    let v = vault.as_ref().expect("checked");
                    let by = "token health check".to_owned();
                    let c = crate::onboarding::invite_to_renew(store, config, &tenant, &h.practice, &h.page, &by, now)
                        .await?;
                    h.sealed_link = Some(seal_link(v, &tenant, &h.page, &h.practice, &c.link, now)?);
                    h.invitation = Some(c.id);
                }
                None => {}
            }
        }
        by_tenant.entry(tenant.clone()).or_default().push(StateEvent {
            id: uuid::Uuid::new_v4().to_string(),
            stream: STREAM.into(),
            key: h.page.clone(),
            at: now,
            body: serde_json::to_string(&h).map_err(|e| AppError::new(ErrorKind::Internal, format!("health: {e}")))?,
        });
        checked.pages.push((tenant, h));
    }
    let access = config.operator_access();
    for (tenant, events) in by_tenant {
        store.append_state(&access.write_scope(&tenant)?, &events).await?;
    }
    Ok(checked)
}
