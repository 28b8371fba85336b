//! API keys: per tenant (or several, for a regional admin), with scopes, stored hashed in a JSON file beside the
//! config (`[server] keys_file`, default `pulse-keys.json`, mode 0600). The secret is shown once, at creation, and
//! never stored: the file keeps its SHA-256 (the secret is 256 random bits, so a plain hash cannot be searched).
//!
//! A key reads `pulse_<id>_<secret>`: the id is public (it appears in logs and `pulse keys list`), the secret is
//! not. Every process that changes the file (the CLI creating or revoking, the server recording last use) holds an
//! exclusive lock on it while it reads, changes and atomically replaces it, so neither loses the other's change.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use pulse_config::Access;
use pulse_config::Config;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{AppError, AppResult, ErrorKind};

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum KeyScope {
    /// Query the API, read and download reports, use the dashboard.
    Read,
    /// Request research exports.
    Export,
    /// Read several tenants (a region), and list or revoke their keys through the API.
    Admin,
}

impl KeyScope {
    pub const ALL: [KeyScope; 3] = [KeyScope::Read, KeyScope::Export, KeyScope::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            KeyScope::Read => "read",
            KeyScope::Export => "export",
            KeyScope::Admin => "admin",
        }
    }
}

impl std::str::FromStr for KeyScope {
    type Err = AppError;
    fn from_str(s: &str) -> AppResult<Self> {
        KeyScope::ALL.into_iter().find(|k| k.as_str() == s).ok_or_else(|| {
            AppError::bad_request(format!("no key scope `{s}`")).with_hint("the scopes are read, export and admin")
        })
    }
}

/// One key as stored: everything but the secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyRecord {
    pub id: String,
    pub name: String,
    pub tenants: Vec<String>,
    pub scopes: Vec<KeyScope>,
    /// SHA-256 of the whole key text, hex.
    pub hash: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
}

impl KeyRecord {
    /// `active`, `revoked` or `expired` at `now`.
    pub fn state(&self, now: DateTime<Utc>) -> &'static str {
        if self.revoked_at.is_some() {
            "revoked"
        } else if self.expires_at.is_some_and(|e| e <= now) {
            "expired"
        } else {
            "active"
        }
    }

    pub fn has(&self, scope: KeyScope) -> bool {
        self.scopes.contains(&scope)
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct KeyFile {
    version: u32,
    keys: Vec<KeyRecord>,
}

/// A key that checked out: who it is and what it may read.
#[derive(Debug, Clone)]
pub struct Caller {
    pub key_id: String,
    pub key_name: String,
    pub scopes: Vec<KeyScope>,
    /// Narrowed from the operator's access: the key's tenant (analyst) or tenants (admin).
    pub access: Access,
    pub tenants: Vec<String>,
}

impl Caller {
    pub fn require(&self, scope: KeyScope) -> AppResult<()> {
        if self.scopes.contains(&scope) {
            return Ok(());
        }
        Err(AppError::forbidden(format!("key {} does not hold the `{}` scope", self.key_id, scope.as_str()))
            .with_hint(format!("create a key with `pulse keys create --scope {}`", scope.as_str())))
    }
}

/// What `create` returns: the record, and the key text, which is shown once and never again.
#[derive(Debug)]
pub struct NewKey {
    pub record: KeyRecord,
    pub secret: String,
}

/// The keys file.
#[derive(Debug, Clone)]
pub struct Keys {
    path: PathBuf,
}

/// Where a config keeps its keys.
pub fn keys_path(config: &Config) -> PathBuf {
    config.server.keys_file.clone()
}

/// `bytes` random bytes from the system, as hex.
pub fn random_hex(bytes: usize) -> AppResult<String> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(|e| AppError::new(ErrorKind::Internal, format!("no system randomness: {e}")))?;
    Ok(hex::encode(buf))
}

/// SHA-256 of `text`, hex.
pub fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// Compares two equal-length strings in time independent of where they differ.
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Keys {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    pub fn for_config(config: &Config) -> Self {
        Self::new(keys_path(config))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io(&self, what: &str, e: std::io::Error) -> AppError {
        AppError::new(ErrorKind::Unavailable, format!("{what} {}: {e}", self.path.display()))
            .with_hint("check the directory exists and is writable by this user")
    }

    fn read_file(&self) -> AppResult<KeyFile> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                AppError::new(ErrorKind::Internal, format!("keys file {} is not valid: {e}", self.path.display()))
                    .with_hint("restore it from backup, or move it aside and create keys again")
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(KeyFile { version: 1, keys: Vec::new() }),
            Err(e) => Err(self.io("reading keys file", e)),
        }
    }

    /// Runs `change` on the file's contents under an exclusive lock and replaces the file atomically.
    fn update<T>(&self, change: impl FnOnce(&mut KeyFile) -> AppResult<T>) -> AppResult<T> {
        let dir = self.path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| self.io("creating the directory of", e))?;
        let lock_path = self.path.with_extension("lock");
        let lock = File::create(&lock_path).map_err(|e| self.io("locking", e))?;
        lock.lock().map_err(|e| self.io("locking", e))?;
        let mut file = self.read_file()?;
        let out = change(&mut file)?;
        file.version = 1;
        let text = serde_json::to_vec_pretty(&file).map_err(|e| AppError::new(ErrorKind::Internal, e.to_string()))?;
        let tmp = self.path.with_extension("json.tmp");
        {
            use std::io::Write;
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create(true).truncate(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                options.mode(0o600);
            }
            let mut f = options.open(&tmp).map_err(|e| self.io("writing", e))?;
            f.write_all(&text).and_then(|_| f.sync_all()).map_err(|e| self.io("writing", e))?;
        }
        std::fs::rename(&tmp, &self.path).map_err(|e| self.io("replacing", e))?;
        drop(lock);
        Ok(out)
    }

    /// Creates a key for `tenants` (each must be configured) with `scopes`. More than one tenant needs `admin`.
    pub fn create(
        &self,
        config: &Config,
        name: &str,
        tenants: &[String],
        scopes: &[KeyScope],
        expires_in_days: Option<u32>,
    ) -> AppResult<NewKey> {
        if tenants.is_empty() {
            return Err(
                AppError::bad_request("a key needs a tenant").with_hint("pass --tenant (repeat it for a region)")
            );
        }
        if scopes.is_empty() {
            return Err(AppError::bad_request("a key needs at least one scope").with_hint("pass --scope read"));
        }
        if tenants.len() > 1 && !scopes.contains(&KeyScope::Admin) {
            return Err(AppError::bad_request(format!(
                "a key for {} tenants is a regional admin key and needs the admin scope",
                tenants.len()
            ))
            .with_hint("add --scope admin, or create one key per tenant"));
        }
        let operator = config.operator_access();
        for t in tenants {
            operator.scope(t)?;
        }
        let id = random_hex(4)?;
        let secret = format!("pulse_{id}_{}", random_hex(32)?);
        let mut scopes = scopes.to_vec();
        scopes.sort();
        scopes.dedup();
        let now = Utc::now();
        let record = KeyRecord {
            id: id.clone(),
            name: name.to_owned(),
            tenants: tenants.to_vec(),
            scopes,
            hash: sha256_hex(&secret),
            created_at: now,
            expires_at: expires_in_days.map(|d| now + chrono::Duration::days(d.into())),
            revoked_at: None,
            last_used_at: None,
        };
        let stored = record.clone();
        self.update(move |f| {
            f.keys.push(stored);
            Ok(())
        })?;
        Ok(NewKey { record, secret })
    }

    pub fn list(&self) -> AppResult<Vec<KeyRecord>> {
        Ok(self.read_file()?.keys)
    }

    /// Revokes key `id`; revoking twice is fine.
    pub fn revoke(&self, id: &str) -> AppResult<KeyRecord> {
        self.update(|f| {
            let key = f.keys.iter_mut().find(|k| k.id == id).ok_or_else(|| {
                AppError::not_found(format!("no key `{id}`")).with_hint("`pulse keys list` shows the keys")
            })?;
            if key.revoked_at.is_none() {
                key.revoked_at = Some(Utc::now());
            }
            Ok(key.clone())
        })
    }

    /// Records when keys were last used (the server calls this every minute and at shutdown).
    pub fn record_use(&self, used: &BTreeMap<String, DateTime<Utc>>) -> AppResult<()> {
        if used.is_empty() {
            return Ok(());
        }
        self.update(|f| {
            for k in &mut f.keys {
                if let Some(t) = used.get(&k.id) {
                    k.last_used_at = Some(k.last_used_at.map_or(*t, |old| old.max(*t)));
                }
            }
            Ok(())
        })
    }
}

/// The keys as the server holds them: reloaded when the file changes, checked without touching the disk otherwise.
#[derive(Debug)]
pub struct KeyRing {
    keys: Keys,
    loaded: Option<std::time::SystemTime>,
    records: Vec<KeyRecord>,
}

impl KeyRing {
    pub fn new(keys: Keys) -> Self {
        Self { keys, loaded: None, records: Vec::new() }
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// Re-reads the file if it changed since it was last read (a revocation takes effect on the next request).
    pub fn refresh(&mut self) -> AppResult<()> {
        let modified = std::fs::metadata(self.keys.path()).and_then(|m| m.modified()).ok();
        if modified != self.loaded || self.loaded.is_none() {
            self.records = self.keys.list()?;
            self.loaded = modified;
        }
        Ok(())
    }

    /// Checks a presented key: known, not revoked, not expired; returns who it is with its access narrowed from the
    /// operator's. The secret is never part of any message.
    pub fn authenticate(&mut self, config: &Config, presented: &str, now: DateTime<Utc>) -> AppResult<Caller> {
        self.refresh()?;
        let presented = presented.trim();
        let id = presented
            .strip_prefix("pulse_")
            .and_then(|rest| rest.split_once('_'))
            .map(|(id, _)| id)
            .filter(|id| id.len() == 8 && id.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| {
                AppError::unauthenticated("the API key is not in the form pulse_<id>_<secret>")
                    .with_hint("send the whole key printed by `pulse keys create` as `Authorization: Bearer <key>`")
            })?;
        let unknown = || {
            AppError::unauthenticated(format!("API key {id} is not known"))
                .with_hint("ask the operator for a key (`pulse keys create`)")
        };
        let record = self.records.iter().find(|k| k.id == id).ok_or_else(unknown)?;
        if !same(&record.hash, &sha256_hex(presented)) {
            return Err(unknown());
        }
        self.caller_for(config, id, now)
    }

    /// The caller for key `id` as it stands now (a dashboard session re-checks its key on every request, so
    /// revoking a key ends its sessions). Does not check a secret: only for ids already authenticated.
    pub fn caller_for(&mut self, config: &Config, id: &str, now: DateTime<Utc>) -> AppResult<Caller> {
        self.refresh()?;
        let record = self
            .records
            .iter()
            .find(|k| k.id == id)
            .ok_or_else(|| AppError::unauthenticated(format!("API key {id} is no longer known")))?;
        match record.state(now) {
            "revoked" => {
                return Err(AppError::unauthenticated(format!("API key {id} was revoked"))
                    .with_hint("ask the operator for a new key"));
            }
            "expired" => {
                return Err(AppError::unauthenticated(format!(
                    "API key {id} expired at {}",
                    record.expires_at.map(|t| t.to_rfc3339()).unwrap_or_default()
                ))
                .with_hint("ask the operator for a new key"));
            }
            _ => {}
        }
        let operator = config.operator_access();
        let access = if record.tenants.len() == 1 && !record.has(KeyScope::Admin) {
            operator.analyst(&record.tenants[0])?
        } else {
            operator.admin(record.tenants.iter().map(String::as_str))?
        };
        Ok(Caller {
            key_id: record.id.clone(),
            key_name: record.name.clone(),
            scopes: record.scopes.clone(),
            access,
            tenants: record.tenants.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path) -> Config {
        let text = "[[tenant]]\nid = \"alpha\"\nname = \"A\"\n[[tenant.practice]]\ncode = \"M83001\"\nname = \"P\"\n\
                    [[tenant]]\nid = \"beta\"\nname = \"B\"\n[[tenant.practice]]\ncode = \"M84001\"\nname = \"Q\"\n";
        let path = dir.join("pulse.toml");
        std::fs::write(&path, text).unwrap();
        pulse_config::load(&path).unwrap()
    }

    #[test]
    fn a_key_is_stored_hashed_works_once_created_and_stops_when_revoked() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path());
        let keys = Keys::for_config(&config);
        let new = keys.create(&config, "analyst", &["alpha".into()], &[KeyScope::Read], Some(30)).unwrap();
        let file = std::fs::read_to_string(keys.path()).unwrap();
        assert!(!file.contains(&new.secret), "the secret must not be stored");
        assert!(!file.contains(new.secret.rsplit('_').next().unwrap()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(keys.path()).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let mut ring = KeyRing::new(keys.clone());
        let caller = ring.authenticate(&config, &new.secret, Utc::now()).unwrap();
        assert_eq!(caller.tenants, vec!["alpha".to_owned()]);
        assert!(caller.access.scope("beta").is_err());
        assert!(caller.require(KeyScope::Export).is_err());

        // A wrong secret with the right id, and a malformed key, are refused without echoing the key.
        let forged = format!("pulse_{}_{}", new.record.id, "0".repeat(64));
        let e = ring.authenticate(&config, &forged, Utc::now()).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Unauthenticated);
        assert!(!e.to_string().contains(&"0".repeat(64)));
        assert!(ring.authenticate(&config, "hunter2", Utc::now()).is_err());

        // Expiry, then revocation (seen by the ring on its next check without a restart).
        let later = Utc::now() + chrono::Duration::days(31);
        assert!(ring.authenticate(&config, &new.secret, later).unwrap_err().message.contains("expired"));
        std::thread::sleep(std::time::Duration::from_millis(20));
        keys.revoke(&new.record.id).unwrap();
        let e = ring.authenticate(&config, &new.secret, Utc::now()).unwrap_err();
        assert!(e.message.contains("revoked"), "{e}");
    }

    #[test]
    fn a_regional_key_needs_admin_and_reads_only_its_tenants() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path());
        let keys = Keys::for_config(&config);
        let e = keys.create(&config, "r", &["alpha".into(), "beta".into()], &[KeyScope::Read], None).unwrap_err();
        assert!(e.message.contains("admin"));
        assert!(keys.create(&config, "x", &["gamma".into()], &[KeyScope::Read], None).is_err());
        let new = keys.create(&config, "r", &["alpha".into(), "beta".into()], &[KeyScope::Read, KeyScope::Admin], None);
        let new = new.unwrap();
        let mut ring = KeyRing::new(keys.clone());
        let caller = ring.authenticate(&config, &new.secret, Utc::now()).unwrap();
        assert_eq!(caller.access.scopes().len(), 2);
        let mut used = BTreeMap::new();
        used.insert(new.record.id.clone(), Utc::now());
        keys.record_use(&used).unwrap();
        assert!(keys.list().unwrap()[0].last_used_at.is_some());
    }
}
