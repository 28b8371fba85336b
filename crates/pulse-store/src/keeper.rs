//! Leases in a coordination service (ZooKeeper, or ClickHouse Keeper, which speaks its protocol): where a deployment
//! has one, a lease is an ephemeral node rather than rows settled by waiting.
//!
//! A lease `name` of a tenant is the node `/practice-pulse/<database>/leases/<tenant>/<name>`, created ephemeral
//! by the holder's session and holding the holder, when it was taken and until when (JSON). **The node existing is
//! the lease being held**: ZooKeeper deletes it when the holder's session ends, so nothing else ever judges a holder
//! dead (no process ids, no clocks), and nothing deletes another holder's node. Every decision is one of
//! ZooKeeper's atomic operations, so it is made once:
//! - taking a free lease is `create` (of rivals creating at once exactly one succeeds, the others read who);
//! - renewing is `set_data` at the version read, by the session that created the node;
//! - releasing is `delete` at the version read, only by the holder.
//!
//! A renewal never re-creates a lease: once this process has taken a lease, a later call for the same holder that
//! finds the node gone, or made by another session (ours ended meanwhile), answers that the lease was lost, so the
//! holder stops instead of carrying on beside whoever held it in between. A holder whose process dies loses the
//! lease when its session ends: at once on a clean exit, within the session timeout ([`SESSION_TIMEOUT`] asked; the
//! server may grant less) when killed or cut off, instead of at the lease's expiry. The other side of that: a
//! holder stops acting on its lease once it cannot confirm it within two thirds of the granted session timeout
//! ([`Keeper::trust`]), since the server may end its session soon after.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use pulse_domain::Lease;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use zookeeper_client as zk;

use crate::lease::LeaseOutcome;
use crate::{Result, StoreError};

/// The session timeout asked of the server (it may grant another within its min/max, which is then used).
pub const SESSION_TIMEOUT: Duration = Duration::from_secs(10);

/// How long one operation waits for the server before the call fails.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(10);

/// The root of Practice Pulse's nodes.
const ROOT: &str = "/practice-pulse";

/// A connection to a coordination service for leases; cheap to clone (one session per [`Keeper::new`]).
#[derive(Clone)]
pub struct Keeper {
    servers: String,
    /// `/practice-pulse/<database>/leases`.
    base: String,
    /// The session in use; replaced by a new one when it has ended (expired or closed).
    client: Arc<Mutex<Option<zk::Client>>>,
    /// The session timeout the server granted (milliseconds; 0 before the first session).
    granted_ms: Arc<AtomicU64>,
    /// The leases this process has taken and not released, by (tenant, name, holder): the session that took each.
    /// A call for one of them is a renewal, which never re-creates the node.
    taken: Arc<std::sync::Mutex<HashMap<LeaseKey, i64>>>,
}

impl std::fmt::Debug for Keeper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keeper").field("servers", &self.servers).field("base", &self.base).finish()
    }
}

/// A lease taken by this process: (tenant, name, holder).
type LeaseKey = (String, String, String);

/// What a lease node holds.
#[derive(Serialize, Deserialize)]
struct Held {
    holder: String,
    acquired_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
}

impl Keeper {
    /// Leases of `database` in the service at `servers` (`host:port`, comma-separated for an ensemble). Connects on
    /// first use.
    pub fn new(servers: &str, database: &str) -> Self {
        Self {
            servers: servers.trim().to_owned(),
            base: format!("{ROOT}/{}/leases", escape(database)),
            client: Arc::new(Mutex::new(None)),
            granted_ms: Arc::new(AtomicU64::new(0)),
            taken: Arc::new(std::sync::Mutex::new(HashMap::new())),
        }
    }

    /// Where the leases are, for messages.
    pub fn describe(&self) -> String {
        format!("ZooKeeper {} ({})", self.servers, self.base)
    }

    /// How often a holder confirms its lease, and for how long after a confirmation it may act on it: a third and
    /// two thirds of the session timeout the server granted (asked for, before the first session; `ttl` when that is
    /// shorter).
    pub fn trust(&self, ttl: Duration) -> (Duration, Duration) {
        let granted = match self.granted_ms.load(Ordering::SeqCst) {
            0 => SESSION_TIMEOUT,
            ms => Duration::from_millis(ms).min(SESSION_TIMEOUT),
        };
        let span = ttl.min(granted);
        (span / 3, span * 2 / 3)
    }

    fn unavailable(&self, reason: impl std::fmt::Display) -> StoreError {
        StoreError::Coordination { servers: self.servers.clone(), reason: reason.to_string() }
    }

    /// The live session, connecting (again, after an ended session) when there is none.
    async fn session(&self) -> Result<zk::Client> {
        let mut slot = self.client.lock().await;
        if let Some(client) = slot.as_ref()
            && !client.state().is_terminated()
        {
            return Ok(client.clone());
        }
        let connect =
            zk::Client::connector().with_session_timeout(SESSION_TIMEOUT).with_fail_eagerly().connect(&self.servers);
        let client = match tokio::time::timeout(OPERATION_TIMEOUT, connect).await {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => return Err(self.unavailable(e)),
            Err(_) => return Err(self.unavailable(format!("no session within {}s", OPERATION_TIMEOUT.as_secs()))),
        };
        tracing::debug!(servers = %self.servers, session = ?client.session_id(), "connected to ZooKeeper");
        self.granted_ms.store(client.session_timeout().as_millis().max(1) as u64, Ordering::SeqCst);
        *slot = Some(client.clone());
        Ok(client)
    }

    async fn call<T>(
        &self,
        what: &str,
        op: impl std::future::Future<Output = std::result::Result<T, zk::Error>>,
    ) -> Result<std::result::Result<T, zk::Error>> {
        match tokio::time::timeout(OPERATION_TIMEOUT, op).await {
            Ok(Err(e @ (zk::Error::ConnectionLoss | zk::Error::SessionExpired | zk::Error::ClientClosed))) => {
                Err(self.unavailable(format!("{what}: {e}")))
            }
            Ok(r) => Ok(r),
            Err(_) => Err(self.unavailable(format!("{what}: no answer within {}s", OPERATION_TIMEOUT.as_secs()))),
        }
    }

    fn path(&self, tenant: &str, name: &str) -> (String, String) {
        let dir = format!("{}/{}", self.base, escape(tenant));
        let path = format!("{dir}/{}", escape(name));
        (dir, path)
    }

    /// Takes or renews `holder`'s lease `name` of `tenant` for `ttl` (see the module's rules).
    pub async fn try_lease(&self, tenant: &str, name: &str, holder: &str, ttl: Duration) -> Result<LeaseOutcome> {
        let client = self.session().await?;
        let session = client.session_id().0;
        let key = (tenant.to_owned(), name.to_owned(), holder.to_owned());
        let taken_by = self.taken.lock().map_or(None, |t| t.get(&key).copied());
        let (dir, path) = self.path(tenant, name);
        let ttl = chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX);
        let ephemeral = zk::CreateMode::Ephemeral.with_acls(zk::Acls::anyone_all());
        let lost = |why: &str| {
            let now = Utc::now();
            LeaseOutcome::HeldBy(Lease {
                name: name.to_owned(),
                holder: format!("nobody: this holder's lease {why}"),
                acquired_at: now,
                expires_at: now,
            })
        };
        for _ in 0..5 {
            let now = Utc::now();
            let mine =
                Lease { name: name.to_owned(), holder: holder.to_owned(), acquired_at: now, expires_at: now + ttl };
            match self.call("reading the lease", client.get_data(&path)).await? {
                Err(zk::Error::NoNode) if taken_by.is_some() => {
                    self.forget(&key);
                    return Ok(lost("ended with its ZooKeeper session"));
                }
                Err(zk::Error::NoNode) => {
                    match self.call("creating the lease", client.create(&path, &encode(&mine), &ephemeral)).await? {
                        Ok(_) => {
                            if let Ok(mut t) = self.taken.lock() {
                                t.insert(key, session);
                            }
                            return Ok(LeaseOutcome::Acquired(mine));
                        }
                        Err(zk::Error::NoNode) => {
                            let persistent = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
                            self.call("creating the lease's parent", client.mkdir(&dir, &persistent))
                                .await?
                                .map_err(|e| self.unavailable(format!("creating {dir}: {e}")))?;
                        }
                        // A rival created it between our read and our create: read who.
                        Err(zk::Error::NodeExists) => {}
                        Err(e) => return Err(self.unavailable(format!("creating {path}: {e}"))),
                    }
                }
                Ok((bytes, stat)) => {
                    let held = decode(name, &bytes);
                    if held.holder == holder && stat.ephemeral_owner == session && taken_by == Some(session) {
                        // Renewal, by the session that created the node.
                        let renewed = Lease { acquired_at: held.acquired_at, ..mine };
                        let write = client.set_data(&path, &encode(&renewed), Some(stat.version));
                        match self.call("renewing the lease", write).await? {
                            Ok(_) => return Ok(LeaseOutcome::Acquired(renewed)),
                            // Only this session can change or delete its node: read again what happened.
                            Err(zk::Error::NoNode | zk::Error::BadVersion) => continue,
                            Err(e) => return Err(self.unavailable(format!("renewing {path}: {e}"))),
                        }
                    }
                    if taken_by.is_some() {
                        self.forget(&key);
                        return Ok(lost("ended with its ZooKeeper session and was taken by another"));
                    }
                    // Held by another session (or by an earlier session of this holder that has not ended yet):
                    // it binds until that session ends. Its data's expiry is reported no earlier than a session
                    // timeout from now, so a waiting daemon does not spin on a stale figure.
                    let floor = now + chrono::Duration::from_std(SESSION_TIMEOUT).unwrap_or_default();
                    return Ok(LeaseOutcome::HeldBy(Lease { expires_at: held.expires_at.max(floor), ..held }));
                }
                Err(e) => return Err(self.unavailable(format!("reading {path}: {e}"))),
            }
        }
        Err(self.unavailable(format!("lease `{name}` changed on every try; try again")))
    }

    fn forget(&self, key: &LeaseKey) {
        if let Ok(mut t) = self.taken.lock() {
            t.remove(key);
        }
    }

    /// Ends `holder`'s lease `name` of `tenant` (nothing when another holds it or it is gone).
    pub async fn release_lease(&self, tenant: &str, name: &str, holder: &str) -> Result<()> {
        // Forgotten first: whatever happens below, the next call for this holder is a new acquisition.
        self.forget(&(tenant.to_owned(), name.to_owned(), holder.to_owned()));
        let client = self.session().await?;
        let (_, path) = self.path(tenant, name);
        match self.call("reading the lease", client.get_data(&path)).await? {
            Ok((bytes, stat))
                if decode(name, &bytes).holder == holder && stat.ephemeral_owner == client.session_id().0 =>
            {
                match self.call("releasing the lease", client.delete(&path, Some(stat.version))).await? {
                    Ok(()) | Err(zk::Error::NoNode | zk::Error::BadVersion) => Ok(()),
                    Err(e) => Err(self.unavailable(format!("deleting {path}: {e}"))),
                }
            }
            Ok(_) | Err(zk::Error::NoNode) => Ok(()),
            Err(e) => Err(self.unavailable(format!("reading {path}: {e}"))),
        }
    }

    /// The lease in force, if any (for status: a holder on another host is alive while its node exists).
    pub async fn holder(&self, tenant: &str, name: &str) -> Result<Option<Lease>> {
        let client = self.session().await?;
        let (_, path) = self.path(tenant, name);
        match self.call("reading the lease", client.get_data(&path)).await? {
            Ok((bytes, _)) => Ok(Some(decode(name, &bytes))),
            Err(zk::Error::NoNode) => Ok(None),
            Err(e) => Err(self.unavailable(format!("reading {path}: {e}"))),
        }
    }
}

fn encode(lease: &Lease) -> Vec<u8> {
    serde_json::to_vec(&Held {
        holder: lease.holder.clone(),
        acquired_at: lease.acquired_at,
        expires_at: lease.expires_at,
    })
    .unwrap_or_default()
}

/// A node that does not parse (written by something else) reads as held by an unknown holder.
fn decode(name: &str, bytes: &[u8]) -> Lease {
    match serde_json::from_slice::<Held>(bytes) {
        Ok(h) => {
            Lease { name: name.to_owned(), holder: h.holder, acquired_at: h.acquired_at, expires_at: h.expires_at }
        }
        Err(_) => Lease {
            name: name.to_owned(),
            holder: "(unreadable lease node)".into(),
            acquired_at: DateTime::<Utc>::UNIX_EPOCH,
            expires_at: DateTime::<Utc>::UNIX_EPOCH,
        },
    }
}

/// A node name for any text: letters, digits, `-`, `_` and `.` as they are, everything else (`/` above all) as
/// `%XX`; `.` and `..` alone are escaped too.
fn escape(text: &str) -> String {
    if text == "." || text == ".." || text.is_empty() {
        return text.bytes().map(|b| format!("%{b:02X}")).collect::<String>() + "%";
    }
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_single_nodes() {
        assert_eq!(escape("digest:weekly/north"), "digest:weekly%2Fnorth");
        assert_eq!(escape("a b"), "a%20b");
        assert_eq!(escape(".."), "%2E%2E%");
        assert_eq!(escape(""), "%");
        assert_ne!(escape("%2F"), escape("/"));
    }

    #[test]
    fn lease_data_round_trips() {
        assert_eq!(decode("x", b"not json").holder, "(unreadable lease node)");
        let now = Utc::now();
        let held = Lease { name: "x".into(), holder: "h:1:a".into(), acquired_at: now, expires_at: now };
        assert_eq!(decode("x", &encode(&held)), held);
    }

    #[test]
    fn a_holder_trusts_its_lease_for_two_thirds_of_the_session() {
        let k = Keeper::new("127.0.0.1:1", "pulse");
        assert_eq!(k.trust(Duration::from_secs(600)), (SESSION_TIMEOUT / 3, SESSION_TIMEOUT * 2 / 3));
        assert_eq!(k.trust(Duration::from_secs(3)), (Duration::from_secs(1), Duration::from_secs(2)));
        // The server granted less than was asked: that is what counts.
        k.granted_ms.store(6_000, Ordering::SeqCst);
        assert_eq!(k.trust(Duration::from_secs(600)), (Duration::from_secs(2), Duration::from_secs(4)));
    }
}
