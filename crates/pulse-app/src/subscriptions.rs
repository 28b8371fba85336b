//! Digest lists: who receives which tenant's weekly digest. A list starts as its `[[subscription]]` in the config;
//! recipients added or removed through the API, and people who unsubscribe from the link in a digest, are events in
//! the tenant's journal (stream `subscription`), so every change is kept with who made it and when.

use std::collections::BTreeMap;

use chrono::Utc;
use hmac::{KeyInit, Mac};
use pulse_config::{Access, WriteScope};
use pulse_config::{Config, SubscriptionConfig};
use pulse_domain::StateEvent;
use pulse_store::Store;
use serde::{Deserialize, Serialize};

use crate::error::{AppError, AppResult};

pub const STREAM: &str = "subscription";

/// A change to a list's membership.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Change {
    /// `add`, `remove` or `unsubscribe`.
    pub action: String,
    /// Who: `operator`, `key <id>`, or `recipient` (the unsubscribe link).
    pub by: String,
}

/// One list with its current recipients.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct List {
    pub name: String,
    pub tenant: String,
    pub recipients: Vec<String>,
    /// People who unsubscribed themselves (not sent to, even if in the config).
    pub unsubscribed: Vec<String>,
}

/// The configured list `name`, or a not-found error listing the lists there are.
pub fn configured<'c>(config: &'c Config, name: &str) -> AppResult<&'c SubscriptionConfig> {
    config.subscriptions.iter().find(|s| s.name == name).ok_or_else(|| {
        let names: Vec<&str> = config.subscriptions.iter().map(|s| s.name.as_str()).collect();
        AppError::not_found(format!("no digest list `{name}`")).at("list").with_hint(if names.is_empty() {
            "declare one with [[subscription]] in the config".to_owned()
        } else {
            format!("the lists are: {}", names.join(", "))
        })
    })
}

fn key(list: &str, recipient: &str) -> String {
    format!("{list}|{}", recipient.to_ascii_lowercase())
}

/// The list's membership now: the config's recipients, then the journal's changes in order.
pub async fn list<S: Store>(store: &S, config: &Config, name: &str) -> AppResult<List> {
    let sub = configured(config, name)?;
    let access = config.operator_access();
    let scope = access.scope(sub.tenant.as_str())?;
    // address (lower case) -> (shown address, state)
    let mut members: BTreeMap<String, (String, &'static str)> =
        sub.recipients.iter().map(|r| (r.to_ascii_lowercase(), (r.clone(), "member"))).collect();
    let prefix = format!("{name}|");
    for e in store.read_state(&scope, STREAM).await? {
        let Some(address) = e.key.strip_prefix(&prefix) else { continue };
        let Ok(change) = serde_json::from_str::<Change>(&e.body) else { continue };
        let state = match change.action.as_str() {
            "add" => "member",
            "remove" => "removed",
            "unsubscribe" => "unsubscribed",
            _ => continue,
        };
        let shown = members.get(address).map_or_else(|| address.to_owned(), |m| m.0.clone());
        members.insert(address.to_owned(), (shown, state));
    }
    let pick = |state: &str| members.values().filter(|m| m.1 == state).map(|m| m.0.clone()).collect();
    Ok(List {
        name: name.to_owned(),
        tenant: sub.tenant.to_string(),
        recipients: pick("member"),
        unsubscribed: pick("unsubscribed"),
    })
}

/// Every configured list the access may see, with current members.
pub async fn lists<S: Store>(store: &S, config: &Config, access: &Access) -> AppResult<Vec<List>> {
    let mut out = Vec::new();
    for sub in &config.subscriptions {
        if access.scope(sub.tenant.as_str()).is_ok() {
            out.push(list(store, config, &sub.name).await?);
        }
    }
    Ok(out)
}

/// Records a change to `name` made by `by`, whose access must cover the list's tenant; the surface decides who may
/// change lists (admin keys, the operator).
pub async fn change<S: Store>(
    store: &S,
    config: &Config,
    access: &Access,
    name: &str,
    recipient: &str,
    action: &str,
    by: &str,
) -> AppResult<List> {
    let sub = configured(config, name)?;
    // The caller must hold the list's tenant (the surface checks the right to change lists: admin keys, the
    // operator); the change itself is written as the application, which owns the journal.
    access.scope(sub.tenant.as_str())?;
    let scope: WriteScope = config.operator_access().write_scope(sub.tenant.as_str())?;
    if !pulse_config::plausible_email(recipient) {
        return Err(AppError::bad_request(format!("`{recipient}` is not an email address"))
            .at("email")
            .with_hint("write it as name@organisation.nhs.uk"));
    }
    let event = StateEvent {
        id: uuid::Uuid::new_v4().to_string(),
        stream: STREAM.into(),
        key: key(name, recipient),
        at: Utc::now(),
        body: serde_json::to_string(&Change { action: action.into(), by: by.into() }).unwrap_or_default(),
    };
    store.append_state(&scope, &[event]).await?;
    list(store, config, name).await
}

/// The signed token in a recipient's unsubscribe link (HMAC-SHA256 under `[digest] link_secret`, 128 bits hex).
pub fn token(config: &Config, list: &str, recipient: &str) -> AppResult<String> {
    let secret = config.digest.link_secret.as_ref().ok_or_else(|| {
        AppError::bad_request("digests need `[digest] link_secret` to sign their unsubscribe links")
            .with_hint("add link_secret = { env = \"PULSE_DIGEST_LINK_SECRET\" } (or a secrets file) to [digest]")
    })?;
    let secret = config.resolve(secret).map_err(|e| {
        AppError::bad_request(format!("digest.link_secret ({}): {e}", secret.describe()))
            .with_hint("set the environment variable or secrets file it names")
    })?;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.expose().as_bytes())
        .map_err(|e| AppError::bad_request(format!("digest.link_secret: {e}")))?;
    mac.update(key(list, recipient).as_bytes());
    Ok(hex::encode(&mac.finalize().into_bytes()[..16]))
}

/// The recipient's unsubscribe link.
pub fn unsubscribe_link(config: &Config, list: &str, recipient: &str) -> AppResult<String> {
    let token = token(config, list, recipient)?;
    let q = form_urlencoded::Serializer::new(String::new())
        .append_pair("list", list)
        .append_pair("email", recipient)
        .append_pair("token", &token)
        .finish();
    Ok(format!("{}/unsubscribe?{q}", config.digest.dashboard_url.trim_end_matches('/')))
}

/// Takes `recipient` off `list` when `token` is the one their digest carried. Idempotent.
pub async fn unsubscribe<S: Store>(
    store: &S,
    config: &Config,
    list: &str,
    recipient: &str,
    token: &str,
) -> AppResult<()> {
    let expected = self::token(config, list, recipient)?;
    // Constant-time comparison: the token is a capability.
    let same = expected.len() == token.len()
        && expected.bytes().zip(token.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0;
    if !same {
        return Err(AppError::forbidden("this unsubscribe link is not valid")
            .with_hint("use the link in your most recent digest, or ask your analytics team to remove you"));
    }
    let access = config.operator_access();
    change(store, config, &access, list, recipient, "unsubscribe", "recipient").await?;
    Ok(())
}
