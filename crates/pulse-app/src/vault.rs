//! The token vault: page access tokens kept in the store, sealed with AES-256-GCM (ring) under the key `[vault] key`
//! names, never in plaintext on disk, in the store, in a log or in an error.
//!
//! Each page's token is one event in the tenant's `vault` state stream (both stores keep state streams, through
//! the one conformance suite): the latest event for a page is its token now. The sealed bytes are bound to the
//! tenant, the page and the key (the AEAD's associated data), so an entry copied to another page or tenant does not
//! open. A rotation (`pulse vault rotate`) seals every page's latest token again under the current key; the keys in
//! `previous_keys` open what was sealed before it, and can be dropped once it has run. Superseded events stay in
//! the stream sealed under their old key: once that key is gone they cannot be opened by anyone.
//!
//! The ingester takes a page's token from the vault first and from the config's secret reference second, so tokens
//! in config files keep working; `pulse vault import` moves them in.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use pulse_config::{Access, Config, Secret, TenantScope};
use pulse_domain::StateEvent;
use pulse_store::Store;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

use crate::error::{AppError, AppResult, ErrorKind};

/// The state stream holding each tenant's sealed tokens.
pub const STREAM: &str = "vault";

/// Bytes in a vault key.
pub const KEY_BYTES: usize = 32;

/// One key: its id (a digest, safe to show and store) and the AES-256-GCM key itself.
struct Key {
    id: String,
    key: LessSafeKey,
}

/// The keys from `[vault]`: the current one seals; every one opens.
pub struct Vault {
    current: Key,
    previous: Vec<Key>,
    rng: SystemRandom,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let previous: Vec<&str> = self.previous.iter().map(|k| k.id.as_str()).collect();
        f.debug_struct("Vault").field("key", &self.current.id).field("previous", &previous).finish()
    }
}

/// A page's latest vault entry: what it says in the open, and the sealed token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub page: String,
    pub practice: String,
    /// The key it is sealed under (its id).
    pub key_id: String,
    /// The 96-bit nonce, hex.
    pub nonce: String,
    /// The sealed token with its tag, hex.
    pub sealed: String,
    /// Who put it there: `invitation <id> (<who connected>)`, `import from config`, `rotation`.
    pub by: String,
    /// When the token was first obtained (a rotation keeps it).
    pub obtained_at: DateTime<Utc>,
    /// `true` when the page was disconnected: no token.
    #[serde(default)]
    pub removed: bool,
    /// `official` or `claimed`, as the practice manager said when connecting a page the config does not list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

fn key_id(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    h.update(b"pulse-vault-key-id\0");
    h.update(bytes);
    hex::encode(&h.finalize()[..8])
}

fn bad_key(name: &str, why: &str) -> AppError {
    AppError::bad_request(format!("{name}: {why}"))
        .with_hint("a vault key is 32 random bytes written as 64 hex digits; `pulse vault new-key` prints one")
}

impl Key {
    fn parse(name: &str, secret: &Secret) -> AppResult<Key> {
        let text = secret.expose().trim();
        let bytes = hex::decode(text).map_err(|_| bad_key(name, "is not hex"))?;
        if bytes.len() != KEY_BYTES {
            return Err(bad_key(name, &format!("is {} bytes, not {KEY_BYTES}", bytes.len())));
        }
        let id = key_id(&bytes);
        let unbound = UnboundKey::new(&AES_256_GCM, &bytes).map_err(|_| bad_key(name, "was refused by the cipher"))?;
        Ok(Key { id, key: LessSafeKey::new(unbound) })
    }
}

/// What the sealed bytes are bound to: the tenant, the page and the key.
fn aad(tenant: &str, page: &str, key_id: &str) -> Vec<u8> {
    format!("pulse-vault/v1\0{tenant}\0{page}\0{key_id}").into_bytes()
}

impl Vault {
    /// The vault `[vault]` describes, or `None` when the config has none. Each key reference must resolve.
    pub fn from_config(config: &Config) -> AppResult<Option<Vault>> {
        let Some(v) = &config.vault else { return Ok(None) };
        let resolve = |name: &str, r: &pulse_config::SecretRef| -> AppResult<Key> {
            let secret = config.resolve(r).map_err(|e| {
                AppError::bad_request(format!("{name} ({}): {e}", r.describe()))
                    .with_hint("set the vault key where [vault] says it is")
            })?;
            Key::parse(name, &secret)
        };
        let current = resolve("vault.key", &v.key)?;
        let mut previous = Vec::new();
        for (i, r) in v.previous_keys.iter().enumerate() {
            previous.push(resolve(&format!("vault.previous_keys[{i}]"), r)?);
        }
        Ok(Some(Vault { current, previous, rng: SystemRandom::new() }))
    }

    /// A vault over raw keys (tests, and `pulse vault new-key`'s check).
    pub fn from_keys(current: &Secret, previous: &[Secret]) -> AppResult<Vault> {
        Ok(Vault {
            current: Key::parse("key", current)?,
            previous: previous.iter().map(|k| Key::parse("previous key", k)).collect::<AppResult<_>>()?,
            rng: SystemRandom::new(),
        })
    }

    /// A fresh random key, as 64 hex digits.
    pub fn new_key() -> AppResult<String> {
        let mut bytes = [0u8; KEY_BYTES];
        SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| AppError::new(ErrorKind::Internal, "the system's random source failed"))?;
        Ok(hex::encode(bytes))
    }

    /// The current key's id.
    pub fn key_id(&self) -> &str {
        &self.current.id
    }

    /// Seals `token` for `page` of `tenant` under the current key.
    pub fn seal(&self, tenant: &str, page: &str, token: &Secret) -> AppResult<(String, String)> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng
            .fill(&mut nonce)
            .map_err(|_| AppError::new(ErrorKind::Internal, "the system's random source failed"))?;
        let mut bytes = token.expose().as_bytes().to_vec();
        self.current
            .key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad(tenant, page, &self.current.id)),
                &mut bytes,
            )
            .map_err(|_| AppError::new(ErrorKind::Internal, "sealing a token failed"))?;
        Ok((hex::encode(nonce), hex::encode(bytes)))
    }

    /// Opens `entry` (of `tenant`). Fails, without saying anything of the token, when its key is not among this
    /// vault's keys or the sealed bytes were altered or moved to another page or tenant.
    pub fn open(&self, tenant: &str, entry: &Entry) -> AppResult<Secret> {
        let unusable = |why: &str| {
            AppError::new(ErrorKind::BadRequest, format!("the vault's token for page {} cannot be opened: {why}", entry.page))
                .with_hint("connect the page again through an invitation (`pulse pages invite`), or restore the vault key it was sealed under to [vault] previous_keys")
        };
        let key = std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|k| k.id == entry.key_id)
            .ok_or_else(|| unusable(&format!("it is sealed under key {}, which is not configured", entry.key_id)))?;
        let nonce: [u8; NONCE_LEN] = hex::decode(&entry.nonce)
            .ok()
            .and_then(|n| n.try_into().ok())
            .ok_or_else(|| unusable("its nonce is malformed"))?;
        let mut bytes = hex::decode(&entry.sealed).map_err(|_| unusable("it is malformed"))?;
        let plain = key
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad(tenant, &entry.page, &key.id)),
                &mut bytes,
            )
            .map_err(|_| unusable("it fails authentication (altered, or not this page's)"))?;
        let text = std::str::from_utf8(plain).map_err(|_| unusable("it is not text"))?;
        Ok(Secret::new(text))
    }
}

/// Every page's latest entry in `scope`'s vault (removed pages included, marked).
pub async fn entries<S: Store>(store: &S, scope: &TenantScope) -> AppResult<BTreeMap<String, Entry>> {
    let mut out = BTreeMap::new();
    for e in store.read_state(scope, STREAM).await? {
        match serde_json::from_str::<Entry>(&e.body) {
            Ok(entry) => {
                out.insert(e.key.clone(), entry);
            }
            // One unreadable entry must not stop every other page: that page has no token until it is connected
            // again, and the operator's log says which entry.
            Err(err) => {
                // The page's earlier entries are superseded all the same: it has no token until connected again.
                out.remove(&e.key);
                tracing::warn!(tenant = %scope, entry = %e.id, page = %e.key, "an unreadable vault entry was skipped: {err}");
            }
        }
    }
    Ok(out)
}

/// The pages of `scope` with a token in the vault, and those tokens. An entry that does not open is returned as
/// the reason, by page.
pub async fn tokens<S: Store>(
    store: &S,
    vault: &Vault,
    scope: &TenantScope,
) -> AppResult<BTreeMap<String, Result<Secret, String>>> {
    let mut out = BTreeMap::new();
    for (page, entry) in entries(store, scope).await? {
        if entry.removed {
            continue;
        }
        out.insert(page, vault.open(scope.as_str(), &entry).map_err(|e| e.message));
    }
    Ok(out)
}

/// As [`put`], recording the page's kind (`official` or `claimed`) when the config does not say it.
#[allow(clippy::too_many_arguments)]
pub async fn put_with_kind<S: Store>(
    store: &S,
    config: &Config,
    vault: &Vault,
    tenant: &str,
    practice: &str,
    page: &str,
    token: &Secret,
    by: &str,
    kind: Option<&str>,
) -> AppResult<Entry> {
    put_entry(store, config, vault, tenant, practice, page, token, by, Utc::now(), kind.map(str::to_owned)).await
}

/// Puts `token` in `tenant`'s vault as `page`'s (of `practice`), replacing any token it had. Written as the
/// application: the surface decides who may (an invitation's callback, the operator).
#[allow(clippy::too_many_arguments)]
pub async fn put<S: Store>(
    store: &S,
    config: &Config,
    vault: &Vault,
    tenant: &str,
    practice: &str,
    page: &str,
    token: &Secret,
    by: &str,
    obtained_at: DateTime<Utc>,
) -> AppResult<Entry> {
    put_entry(store, config, vault, tenant, practice, page, token, by, obtained_at, None).await
}

#[allow(clippy::too_many_arguments)]
async fn put_entry<S: Store>(
    store: &S,
    config: &Config,
    vault: &Vault,
    tenant: &str,
    practice: &str,
    page: &str,
    token: &Secret,
    by: &str,
    obtained_at: DateTime<Utc>,
    kind: Option<String>,
) -> AppResult<Entry> {
    let scope = config.operator_access().write_scope(tenant)?;
    let (nonce, sealed) = vault.seal(tenant, page, token)?;
    let entry = Entry {
        page: page.to_owned(),
        practice: practice.to_owned(),
        key_id: vault.key_id().to_owned(),
        nonce,
        sealed,
        by: by.to_owned(),
        obtained_at,
        removed: false,
        kind,
    };
    append(store, &scope, entry).await
}

/// Appends `entry` as its page's latest in the tenant's vault stream.
async fn append<S: Store>(store: &S, scope: &pulse_config::WriteScope, entry: Entry) -> AppResult<Entry> {
    let event = StateEvent {
        id: uuid::Uuid::new_v4().to_string(),
        stream: STREAM.into(),
        key: entry.page.clone(),
        at: Utc::now(),
        body: serde_json::to_string(&entry)
            .map_err(|e| AppError::new(ErrorKind::Internal, format!("vault entry: {e}")))?,
    };
    store.append_state(scope, &[event]).await?;
    Ok(entry)
}

/// Why `page` cannot be connected for `practice` of `tenant`, if it cannot: another tenant lists it in the config or
/// holds a token for it, or another practice of the same tenant does. Which other tenant is not said.
pub async fn claimed_elsewhere<S: Store>(
    store: &S,
    config: &Config,
    page: &str,
    tenant: &str,
    practice: &str,
) -> AppResult<Option<String>> {
    for t in &config.tenants {
        for p in &t.practices {
            let listed = p.pages.iter().any(|pg| pg.id.as_str() == page);
            if listed && t.id.as_str() != tenant {
                return Ok(Some("it is another organisation's page".into()));
            }
            if listed && p.code.as_str() != practice {
                return Ok(Some(format!("it is practice {}'s page in this organisation's records", p.code)));
            }
        }
    }
    for scope in config.operator_access().scopes() {
        let Some(e) = entries(store, &scope).await?.remove(page).filter(|e| !e.removed) else { continue };
        // An entry for a practice the config no longer lists is not read by anyone: it does not hold the page.
        let listed =
            config.tenant(scope.tenant()).is_some_and(|t| t.practices.iter().any(|p| p.code.as_str() == e.practice));
        if !listed {
            continue;
        }
        if scope.as_str() != tenant {
            return Ok(Some("it is already connected by another organisation".into()));
        }
        if e.practice != practice {
            return Ok(Some(format!("it is already connected for practice {}", e.practice)));
        }
    }
    Ok(None)
}

/// Disconnects `page` of `tenant`: its token is no longer used (the ingester falls back to the config's reference,
/// if any) and the page can be connected again, by any practice. The sealed token stays in the journal, unread.
pub async fn disconnect<S: Store>(store: &S, config: &Config, tenant: &str, page: &str, by: &str) -> AppResult<Entry> {
    let scope = config.operator_access().write_scope(tenant)?;
    let Some(last) = entries(store, scope.read()).await?.remove(page).filter(|e| !e.removed) else {
        return Err(AppError::not_found(format!("tenant {tenant} has no connected page {page}"))
            .with_hint("`pulse vault status` lists the pages with a token in the vault"));
    };
    let entry = Entry { removed: true, nonce: String::new(), sealed: String::new(), by: by.to_owned(), ..last };
    append(store, &scope, entry).await
}

/// What a rotation or an import did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Moved {
    /// Pages sealed (again) under the current key.
    pub sealed: usize,
    /// Pages already as wanted.
    pub unchanged: usize,
    /// Pages left as they are on purpose, with why (an import never replaces a token connected since).
    pub kept: Vec<String>,
    /// Pages that could not be done, with why (never a token).
    pub failed: Vec<String>,
}

/// Seals every page's latest token again under the current key, in every tenant `access` may write.
pub async fn rotate<S: Store>(store: &S, config: &Config, vault: &Vault, access: &Access) -> AppResult<Moved> {
    let mut out = Moved::default();
    for scope in access.write_scopes() {
        let tenant = scope.as_str().to_owned();
        for (page, entry) in entries(store, scope.read()).await? {
            if entry.removed || entry.key_id == vault.key_id() {
                out.unchanged += 1;
                continue;
            }
            match vault.open(&tenant, &entry) {
                Ok(token) => {
                    // A page connected again since this entry was read keeps its new token.
                    if entries(store, scope.read()).await?.get(&page) != Some(&entry) {
                        out.unchanged += 1;
                        continue;
                    }
                    put_entry(
                        store,
                        config,
                        vault,
                        &tenant,
                        &entry.practice,
                        &page,
                        &token,
                        // Who connected the page stays said; the key id shows the rotation.
                        &entry.by,
                        entry.obtained_at,
                        entry.kind.clone(),
                    )
                    .await?;
                    out.sealed += 1;
                }
                Err(e) => out.failed.push(format!("tenant {tenant} page {page}: {}", e.message)),
            }
        }
    }
    Ok(out)
}

/// Moves the tokens the config's secret references hold into the vault (pages whose vault token is the same are
/// left as they are). The references keep working; remove them from the config once the import has run.
pub async fn import<S: Store>(store: &S, config: &Config, vault: &Vault, access: &Access) -> AppResult<Moved> {
    let mut out = Moved::default();
    for scope in access.write_scopes() {
        let tenant = config.tenant(scope.tenant()).ok_or_else(|| AppError::not_found("tenant vanished"))?;
        let have = tokens(store, vault, scope.read()).await?;
        let entries = entries(store, scope.read()).await?;
        for practice in &tenant.practices {
            for page in &practice.pages {
                let Some(r) = &page.token else { continue };
                let page_id = page.id.to_string();
                let token = match config.resolve(r) {
                    Ok(t) => t,
                    Err(e) => {
                        out.failed.push(format!("tenant {} page {page_id}: {e} ({})", tenant.id, r.describe()));
                        continue;
                    }
                };
                if matches!(have.get(&page_id), Some(Ok(t)) if t == &token) {
                    out.unchanged += 1;
                    continue;
                }
                // A token the page's manager gave through an invitation is newer than any in a config file: an
                // import never replaces it (only an earlier import).
                if let Some(e) = entries.get(&page_id).filter(|e| !e.removed && !e.by.starts_with("import from config"))
                {
                    out.kept.push(format!(
                        "tenant {} page {page_id}: kept the vault's token ({}, {}); remove the config's reference",
                        tenant.id,
                        e.by,
                        e.obtained_at.format("%Y-%m-%d")
                    ));
                    continue;
                }
                put(
                    store,
                    config,
                    vault,
                    tenant.id.as_str(),
                    practice.code.as_str(),
                    &page_id,
                    &token,
                    &format!("import from config ({})", r.describe()),
                    Utc::now(),
                )
                .await?;
                out.sealed += 1;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> Secret {
        Secret::new(hex::encode([byte; KEY_BYTES]))
    }

    fn entry(vault: &Vault, tenant: &str, page: &str, token: &str) -> Entry {
        let (nonce, sealed) = vault.seal(tenant, page, &Secret::new(token)).unwrap();
        Entry {
            page: page.into(),
            practice: "M83001".into(),
            key_id: vault.key_id().into(),
            nonce,
            sealed,
            by: "test".into(),
            obtained_at: Utc::now(),
            removed: false,
            kind: None,
        }
    }

    #[test]
    fn a_sealed_token_opens_only_for_its_tenant_and_page_under_a_configured_key() {
        let vault = Vault::from_keys(&key(1), &[]).unwrap();
        let token = "EAAGm0PX4ZCpsBAKZC-a-page-token-that-must-not-leak";
        let e = entry(&vault, "north", "1001", token);
        assert!(!e.sealed.contains(&hex::encode(token)), "the token is not in the sealed bytes in the clear");
        assert_eq!(vault.open("north", &e).unwrap().expose(), token);
        // Bound to tenant and page: moved anywhere else, it does not open.
        assert!(vault.open("south", &e).is_err());
        assert!(vault.open("north", &Entry { page: "1002".into(), ..e.clone() }).is_err());
        // Altered: one bit flipped anywhere fails authentication.
        let mut bytes = hex::decode(&e.sealed).unwrap();
        for i in 0..bytes.len() {
            bytes[i] ^= 1;
            let altered = Entry { sealed: hex::encode(&bytes), ..e.clone() };
            assert!(vault.open("north", &altered).is_err(), "bit flip at byte {i} opened");
            bytes[i] ^= 1;
        }
        // Another key cannot open it, and its error names neither the token nor the key.
        let other = Vault::from_keys(&key(2), &[]).unwrap();
        let err = other.open("north", &e).unwrap_err();
        assert!(!format!("{err:?}").contains(token) && !format!("{err:?}").contains(&hex::encode([1u8; 32])));
        // Nonces are fresh: the same token sealed twice gives different bytes.
        assert_ne!(entry(&vault, "north", "1001", token).sealed, e.sealed);
    }

    #[test]
    fn after_a_rotation_previous_keys_still_open_and_debug_shows_only_key_ids() {
        let old = Vault::from_keys(&key(1), &[]).unwrap();
        let e = entry(&old, "north", "1001", "tok");
        let new = Vault::from_keys(&key(2), &[key(1)]).unwrap();
        assert_eq!(new.open("north", &e).unwrap().expose(), "tok");
        assert_ne!(new.key_id(), old.key_id());
        let shown = format!("{new:?}");
        assert!(shown.contains(old.key_id()) && !shown.contains(&hex::encode([2u8; 32])), "{shown}");
    }

    #[test]
    fn keys_of_the_wrong_shape_are_refused_with_how_to_make_one() {
        for bad in ["", "zz", &hex::encode([0u8; 16])] {
            let e = Vault::from_keys(&Secret::new(bad), &[]).unwrap_err();
            assert!(e.hint.unwrap().contains("pulse vault new-key"));
        }
        let k = Vault::new_key().unwrap();
        assert_eq!(k.len(), 64);
        assert!(Vault::from_keys(&Secret::new(k), &[]).is_ok());
    }
}
