//! Invitations: how a tenant's admin gets a practice's page connected without anyone handling a token. An invitation
//! is a single-use link that expires (`[onboarding] invitation_days`), made for one practice and sent to its practice
//! manager; it opens the connect page, which starts Facebook Login (the server's `connect` module) and ends with the
//! chosen page's token sealed in the vault.
//!
//! Every invitation's life is a journal in the tenant's `invitation` state stream: `created` (who, for which
//! practice, until when, a digest of the link's secret: never the secret), `used` (which page was connected, when)
//! or `revoked`. That journal is the audit of who invited and who connected which page.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use pulse_config::{Access, Config, OnboardingConfig};
use pulse_domain::StateEvent;
use pulse_store::Store;
use serde::{Deserialize, Serialize};

use crate::error::{AppError, AppResult, ErrorKind};
use crate::keys::{random_hex, same, sha256_hex};

/// The state stream of each tenant's invitations.
pub const STREAM: &str = "invitation";

/// The prefix of an invitation's link token (`inv1.<tenant>.<id>.<secret>`).
const PREFIX: &str = "inv1";

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Event {
    /// `created`, `used`, `revoked`.
    action: String,
    practice: String,
    by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires_at: Option<DateTime<Utc>>,
    /// SHA-256 of the link's secret, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    secret_sha256: Option<String>,
    /// The page connected (`used`); on `created`, the only page it may connect (a re-authorisation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    page: Option<String>,
}

/// An invitation as its journal says it is now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Invitation {
    pub id: String,
    pub tenant: String,
    pub practice: String,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// `open`, `used`, `expired`, `revoked`.
    pub state: String,
    /// The page it connected, once used.
    pub page: Option<String>,
    /// The only page it may connect: set on re-authorisation invitations (made by the token check), which renew
    /// one page's connection and nothing else.
    pub for_page: Option<String>,
    pub used_at: Option<DateTime<Utc>>,
    #[serde(skip)]
    secret_sha256: String,
}

/// A new invitation and its link (the only time the link exists: it is not stored).
#[derive(Debug, Clone, Serialize)]
pub struct Created {
    pub id: String,
    pub tenant: String,
    pub practice: String,
    pub practice_name: String,
    pub expires_at: DateTime<Utc>,
    pub link: String,
}

fn onboarding(config: &Config) -> AppResult<&OnboardingConfig> {
    config.onboarding.as_ref().ok_or_else(|| {
        AppError::bad_request("invitations are not set up in this deployment").with_hint(
            "add [onboarding] public_url, [graph] app_id and app_secret, and a [vault] to the config (README: Onboarding)",
        )
    })
}

fn event(key: &str, e: &Event) -> StateEvent {
    StateEvent {
        id: uuid::Uuid::new_v4().to_string(),
        stream: STREAM.into(),
        key: key.to_owned(),
        at: Utc::now(),
        body: serde_json::to_string(e).unwrap_or_default(),
    }
}

/// Every invitation of `tenant`, newest first. `access` must cover the tenant.
pub async fn list<S: Store>(store: &S, access: &Access, tenant: &str) -> AppResult<Vec<Invitation>> {
    let scope = access.scope(tenant)?;
    let now = Utc::now();
    let mut by_id: BTreeMap<String, Invitation> = BTreeMap::new();
    for e in store.read_state(&scope, STREAM).await? {
        let Ok(ev) = serde_json::from_str::<Event>(&e.body) else { continue };
        match ev.action.as_str() {
            "created" => {
                by_id.insert(
                    e.key.clone(),
                    Invitation {
                        id: e.key.clone(),
                        tenant: tenant.to_owned(),
                        practice: ev.practice,
                        created_by: ev.by,
                        created_at: e.at,
                        expires_at: ev.expires_at.unwrap_or(e.at),
                        state: "open".into(),
                        page: None,
                        for_page: ev.page,
                        used_at: None,
                        secret_sha256: ev.secret_sha256.unwrap_or_default(),
                    },
                );
            }
            // Only an open invitation can be used: one revoked first stays revoked.
            "used" => {
                if let Some(i) = by_id.get_mut(&e.key).filter(|i| i.state == "open") {
                    i.state = "used".into();
                    i.page = ev.page;
                    i.used_at = Some(e.at);
                }
            }
            "revoked" => {
                if let Some(i) = by_id.get_mut(&e.key).filter(|i| i.state == "open") {
                    i.state = "revoked".into();
                }
            }
            _ => {}
        }
    }
    let mut out: Vec<Invitation> = by_id.into_values().collect();
    for i in &mut out {
        if i.state == "open" && i.expires_at <= now {
            i.state = "expired".into();
        }
    }
    out.sort_by_key(|i| std::cmp::Reverse(i.created_at));
    Ok(out)
}

/// The practices of `tenant` with no page that has a usable token (in the vault or by reference), including those
/// with no page at all.
pub async fn practices_without_token<S: Store>(store: &S, config: &Config, tenant: &str) -> AppResult<Vec<String>> {
    let (targets, _) = crate::ingest::targets(store, config, &[tenant.to_owned()]).await?;
    let t = config
        .tenant(&tenant.parse().map_err(|_| AppError::not_found(format!("no tenant `{tenant}`")))?)
        .ok_or_else(|| AppError::not_found(format!("no tenant `{tenant}`")))?;
    Ok(t.practices
        .iter()
        .filter(|p| !targets.iter().any(|x| x.practice == p.code))
        .map(|p| p.code.to_string())
        .collect())
}

/// Creates one invitation per practice in `practices` of `tenant`, by `by`, at `now` (valid for
/// `[onboarding] invitation_days` from then). `access` must cover the tenant (the
/// surface decides who may invite: admin keys, the operator). Each practice must be the tenant's.
pub async fn invite<S: Store>(
    store: &S,
    config: &Config,
    access: &Access,
    tenant: &str,
    practices: &[String],
    by: &str,
    now: DateTime<Utc>,
) -> AppResult<Vec<Created>> {
    make(store, config, access, tenant, practices, None, by, now).await
}

/// An invitation to renew `page`'s connection for `practice` (the token check makes these): it can connect that
/// page only, so whoever holds the link can do nothing but what the page's own admin could.
pub async fn invite_to_renew<S: Store>(
    store: &S,
    config: &Config,
    tenant: &str,
    practice: &str,
    page: &str,
    by: &str,
    now: DateTime<Utc>,
) -> AppResult<Created> {
    let made =
        make(store, config, &config.operator_access(), tenant, &[practice.to_owned()], Some(page), by, now).await?;
    made.into_iter().next().ok_or_else(|| AppError::new(ErrorKind::Internal, "no invitation was made"))
}

#[allow(clippy::too_many_arguments)]
async fn make<S: Store>(
    store: &S,
    config: &Config,
    access: &Access,
    tenant: &str,
    practices: &[String],
    for_page: Option<&str>,
    by: &str,
    now: DateTime<Utc>,
) -> AppResult<Vec<Created>> {
    let o = onboarding(config)?;
    access.scope(tenant)?;
    let t = config
        .tenant(&tenant.parse().map_err(|_| AppError::not_found(format!("no tenant `{tenant}`")))?)
        .ok_or_else(|| AppError::not_found(format!("no tenant `{tenant}`")))?;
    let scope = config.operator_access().write_scope(tenant)?;
    let expires_at = now + Duration::days(i64::from(o.invitation_days));
    let mut events = Vec::new();
    let mut out = Vec::new();
    for code in practices {
        let practice = t.practices.iter().find(|p| p.code.as_str() == code).ok_or_else(|| {
            AppError::not_found(format!("tenant {tenant} has no practice {code}"))
                .at("practice")
                .with_hint("`pulse config check` lists each tenant's practices")
        })?;
        let id = uuid::Uuid::new_v4().simple().to_string();
        let secret = random_hex(16)?;
        events.push(event(
            &id,
            &Event {
                action: "created".into(),
                practice: code.clone(),
                by: by.to_owned(),
                expires_at: Some(expires_at),
                secret_sha256: Some(sha256_hex(&secret)),
                page: for_page.map(str::to_owned),
            },
        ));
        let token = format!("{PREFIX}.{tenant}.{id}.{secret}");
        out.push(Created {
            id,
            tenant: tenant.to_owned(),
            practice: code.clone(),
            practice_name: practice.name.clone(),
            expires_at,
            link: format!("{}/connect?invitation={token}", o.public_url.trim_end_matches('/')),
        });
    }
    if !events.is_empty() {
        store.append_state(&scope, &events).await?;
    }
    Ok(out)
}

fn unusable(why: &str) -> AppError {
    AppError::new(ErrorKind::Forbidden, format!("this invitation link {why}"))
        .with_hint("ask whoever sent it for a new invitation")
}

/// The open invitation a link token names, after its secret is checked. Refused, saying why but nothing of the
/// secret, when the token is malformed, unknown, used, revoked or expired.
pub async fn open<S: Store>(store: &S, config: &Config, token: &str) -> AppResult<Invitation> {
    onboarding(config)?;
    let parts: Vec<&str> = token.trim().split('.').collect();
    let [PREFIX, tenant, id, secret] = parts.as_slice() else {
        return Err(unusable("is not one Practice Pulse made (it may have been cut short when copied)"));
    };
    if config.tenants.iter().all(|t| t.id.as_str() != *tenant) {
        return Err(unusable("is not one Practice Pulse made"));
    }
    let all = list(store, &config.operator_access(), tenant).await?;
    let Some(inv) = all.into_iter().find(|i| i.id == *id) else {
        return Err(unusable("is not one Practice Pulse made"));
    };
    // Constant-time comparison of the digests: the secret is a capability.
    if !same(&sha256_hex(secret), &inv.secret_sha256) {
        return Err(unusable("is not one Practice Pulse made"));
    }
    match inv.state.as_str() {
        "open" => Ok(inv),
        "used" => Err(unusable("has already been used to connect a page; each link works once")),
        "revoked" => Err(unusable("was withdrawn")),
        _ => Err(unusable(&format!("expired on {}", inv.expires_at.format("%-d %B %Y")))),
    }
}

/// `inv` again from its journal: still open (not used, revoked or expired since it was opened)?
pub async fn open_by_id<S: Store>(store: &S, config: &Config, inv: &Invitation) -> AppResult<()> {
    let now = list(store, &config.operator_access(), &inv.tenant).await?;
    match now.iter().find(|i| i.id == inv.id).map(|i| i.state.as_str()) {
        Some("open") => Ok(()),
        Some("used") => Err(unusable("has already been used to connect a page; each link works once")),
        Some("revoked") => Err(unusable("was withdrawn")),
        Some(_) => Err(unusable(&format!("expired on {}", inv.expires_at.format("%-d %B %Y")))),
        None => Err(unusable("is not one Practice Pulse made")),
    }
}

/// Uses the invitation once: under a lease in the store, checks it is still open (not used, revoked or expired),
/// runs `connect` (which stores the page's token), and only when that succeeded marks it used for `page`. Two windows
/// racing with one invitation cannot both connect: the second waits out nothing, it is refused while the first holds
/// the lease and finds the invitation used after. A failure in `connect` leaves the invitation open.
pub async fn use_once<S, F, Fut>(
    store: &S,
    config: &Config,
    inv: &Invitation,
    page: &str,
    by: &str,
    connect: F,
) -> AppResult<()>
where
    S: Store,
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = AppResult<()>>,
{
    let scope = config.operator_access().write_scope(&inv.tenant)?;
    let lease = format!("invitation-{}", inv.id);
    let holder = format!("connect:{}", uuid::Uuid::new_v4().simple());
    if !store.try_lease(&scope, &lease, &holder, std::time::Duration::from_secs(60)).await?.acquired() {
        return Err(unusable("is being used in another window right now"));
    }
    let result = async {
        open_by_id(store, config, inv).await?;
        connect().await?;
        let e = Event {
            action: "used".into(),
            practice: inv.practice.clone(),
            by: by.to_owned(),
            expires_at: None,
            secret_sha256: None,
            page: Some(page.to_owned()),
        };
        store.append_state(&scope, &[event(&inv.id, &e)]).await?;
        Ok(())
    }
    .await;
    let _ = store.release_lease(&scope, &lease, &holder).await;
    result
}

/// Withdraws an open invitation of `tenant` (its link stops working at once). `access` must cover the tenant; the
/// surface decides who may (admin keys, the operator).
pub async fn revoke<S: Store>(
    store: &S,
    config: &Config,
    access: &Access,
    tenant: &str,
    id: &str,
    by: &str,
) -> AppResult<Invitation> {
    let all = list(store, access, tenant).await?;
    let inv = all.into_iter().find(|i| i.id == id).ok_or_else(|| {
        AppError::not_found(format!("tenant {tenant} has no invitation `{id}`"))
            .with_hint("`pulse pages invitations --tenant T` lists them")
    })?;
    if inv.state != "open" {
        return Err(AppError::bad_request(format!("invitation {id} is {}, not open: nothing to withdraw", inv.state)));
    }
    let scope = config.operator_access().write_scope(tenant)?;
    // The lease `use_once` holds: a revocation and a connection in flight do not interleave.
    let lease = format!("invitation-{id}");
    let holder = format!("revoke:{}", uuid::Uuid::new_v4().simple());
    if !store.try_lease(&scope, &lease, &holder, std::time::Duration::from_secs(60)).await?.acquired() {
        return Err(AppError::new(ErrorKind::RateLimited, format!("invitation {id} is being used right now"))
            .with_hint("try again in a minute; if its page was connected meanwhile, there is nothing to withdraw")
            .retry_after(60));
    }
    let still = list(store, access, tenant).await.map(|l| l.into_iter().any(|i| i.id == id && i.state == "open"));
    if !matches!(still, Ok(true)) {
        let _ = store.release_lease(&scope, &lease, &holder).await;
        still?;
        return Err(AppError::bad_request(format!(
            "invitation {id} was used or withdrawn meanwhile: nothing to withdraw"
        )));
    }
    let e = Event {
        action: "revoked".into(),
        practice: inv.practice.clone(),
        by: by.to_owned(),
        expires_at: None,
        secret_sha256: None,
        page: None,
    };
    let written = store.append_state(&scope, &[event(id, &e)]).await;
    let _ = store.release_lease(&scope, &lease, &holder).await;
    written?;
    Ok(Invitation { state: "revoked".into(), ..inv })
}
