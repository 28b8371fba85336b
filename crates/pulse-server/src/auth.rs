//! Who is asking: an API key (`Authorization: Bearer pulse_<id>_<secret>`) or a dashboard session cookie; the
//! session's CSRF token; per-key rate limits. Keys are checked by the application layer ([`pulse_app::keys`]); this
//! module only carries them over HTTP.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Instant;

use axum::http::HeaderMap;
use chrono::{DateTime, Utc};
use pulse_app::error::{AppError, AppResult, ErrorKind};
use pulse_app::keys::{Caller, KeyRing};
use pulse_config::Config;

pub const SESSION_COOKIE: &str = "pulse_session";
pub const LOGIN_CSRF_COOKIE: &str = "pulse_login_csrf";

pub fn random_token() -> String {
    let mut buf = [0u8; 32];
    // The system's randomness failing is not survivable for a server that issues credentials.
    getrandom::fill(&mut buf).expect("system randomness is unavailable");
    hex::encode(buf)
}

/// A dashboard session: which key logged in (by id; the secret is not kept), its CSRF token, when it ends.
#[derive(Debug, Clone)]
pub struct Session {
    pub key_id: String,
    /// A person signed in with the identity provider: what their claims granted (fixed for the session's life).
    /// `None` for a key's session, which is re-checked against the key on every request.
    pub signed_in: Option<Caller>,
    pub csrf: String,
    pub expires: DateTime<Utc>,
}

/// Token buckets per key: `per_minute` requests, refilled evenly.
#[derive(Debug)]
pub struct RateLimiter {
    per_minute: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    pub fn new(per_minute: u32) -> Self {
        Self { per_minute: f64::from(per_minute.max(1)), buckets: Mutex::new(HashMap::new()) }
    }

    /// Takes `amount` from `key`'s bucket, as far as it goes (down to empty, never below: a request is charged after
    /// it ran, and the next is refused while the bucket is empty).
    pub fn charge(&self, key: &str, amount: f64) {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let (tokens, last) = buckets.entry(key.to_owned()).or_insert((self.per_minute, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * self.per_minute / 60.0).min(self.per_minute);
        *last = now;
        *tokens = (*tokens - amount).max(0.0);
    }

    /// When `key`'s bucket is empty, how many seconds until one is back (takes nothing).
    pub fn empty_for(&self, key: &str) -> Option<u64> {
        let buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let (tokens, last) = buckets.get(key)?;
        let tokens = (tokens + last.elapsed().as_secs_f64() * self.per_minute / 60.0).min(self.per_minute);
        (tokens < 1.0).then(|| ((1.0 - tokens) * 60.0 / self.per_minute).ceil().max(1.0) as u64)
    }

    /// Takes one request from `key`'s bucket; when it is empty, how many seconds until one is back.
    pub fn take(&self, key: &str) -> Result<(), u64> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let (tokens, last) = buckets.entry(key.to_owned()).or_insert((self.per_minute, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * self.per_minute / 60.0).min(self.per_minute);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - *tokens) * 60.0 / self.per_minute).ceil().max(1.0) as u64)
        }
    }
}

/// The server's view of credentials: the key ring, the sessions, the limiter, and when each key was last used.
#[derive(Debug)]
pub struct Gate {
    pub ring: Mutex<KeyRing>,
    pub sessions: Mutex<HashMap<String, Session>>,
    pub limiter: RateLimiter,
    /// Each key's budget of the server's work (milliseconds a minute), charged after each request by its time.
    pub work: RateLimiter,
    /// Failed logins per client address: a guesser is slowed to this many tries a minute.
    pub login_failures: RateLimiter,
    /// Sign-ins started per client address (each holds a pending entry for 10 minutes).
    pub sign_in_starts: RateLimiter,
    pub used: Mutex<BTreeMap<String, DateTime<Utc>>>,
    pub session_hours: u32,
}

/// Failed dashboard logins allowed per client address per minute (then 429 until the bucket refills).
pub const LOGIN_FAILURES_PER_MINUTE: u32 = 10;

/// Sign-ins with the identity provider a client address may start per minute.
pub const SIGN_IN_STARTS_PER_MINUTE: u32 = 20;

/// The value of cookie `name` in the request.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

impl Gate {
    pub fn new(ring: KeyRing, per_minute: u32, session_hours: u32) -> Self {
        Self::with_work_budget(ring, per_minute, session_hours, 30_000)
    }

    pub fn with_work_budget(ring: KeyRing, per_minute: u32, session_hours: u32, work_ms_per_minute: u32) -> Self {
        Self {
            ring: Mutex::new(ring),
            sessions: Mutex::new(HashMap::new()),
            limiter: RateLimiter::new(per_minute),
            work: RateLimiter::new(work_ms_per_minute),
            login_failures: RateLimiter::new(LOGIN_FAILURES_PER_MINUTE),
            sign_in_starts: RateLimiter::new(SIGN_IN_STARTS_PER_MINUTE),
            used: Mutex::new(BTreeMap::new()),
            session_hours,
        }
    }

    fn admit(&self, caller: Caller) -> AppResult<Caller> {
        if let Some(wait) = self.work.empty_for(&caller.key_id) {
            return Err(AppError::new(
                ErrorKind::RateLimited,
                format!("key {} has used its budget of the server's work for now", caller.key_id),
            )
            .with_hint(format!(
                "retry in {wait} s; ask for less at a time (shorter ranges, fewer dimensions); the budget is set by \
                 [server] work_ms_per_minute"
            ))
            .retry_after(wait));
        }
        if let Err(wait) = self.limiter.take(&caller.key_id) {
            return Err(AppError::new(ErrorKind::RateLimited, format!("key {} is over its rate limit", caller.key_id))
                .with_hint(format!("retry in {wait} s; the limit is set by [server] rate_limit_per_minute"))
                .retry_after(wait));
        }
        self.used.lock().unwrap_or_else(|e| e.into_inner()).insert(caller.key_id.clone(), Utc::now());
        crate::telemetry::record_caller(&caller.key_id, &caller.tenants.join(","));
        Ok(caller)
    }

    /// An API caller: the bearer key. Keys are never accepted in the URL.
    pub fn api_caller(&self, config: &Config, headers: &HeaderMap) -> AppResult<Caller> {
        let header = headers.get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        // The scheme is case-insensitive (RFC 9110 §11.1): `bearer` and `BEARER` are `Bearer`.
        let key = header.and_then(|h| h.split_once(' ')).filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"));
        let Some((_, key)) = key.map(|(s, k)| (s, k.trim())) else {
            return Err(AppError::unauthenticated("no API key")
                .with_hint("send `Authorization: Bearer <key>` with a key from `pulse keys create`"));
        };
        let caller = self.ring.lock().unwrap_or_else(|e| e.into_inner()).authenticate(config, key, Utc::now())?;
        self.admit(caller)
    }

    /// Logs a key in for the dashboard: checks it and opens a session. Returns the session id.
    pub fn login(&self, config: &Config, key: &str, client: &str) -> AppResult<(String, Caller)> {
        // A client whose recent tries all failed waits before it may try again (a correct key too: it cannot be
        // told apart from a guess until checked, and checking is what is being limited).
        if let Some(wait) = self.login_failures.empty_for(client) {
            return Err(AppError::new(ErrorKind::RateLimited, "too many failed logins from this address")
                .with_hint(format!("try again in {wait} s"))
                .retry_after(wait));
        }
        let caller = match self.ring.lock().unwrap_or_else(|e| e.into_inner()).authenticate(config, key, Utc::now()) {
            Ok(c) => c,
            Err(e) => {
                let _ = self.login_failures.take(client);
                return Err(e);
            }
        };
        let caller = self.admit(caller)?;
        let id = random_token();
        let session = Session {
            key_id: caller.key_id.clone(),
            signed_in: None,
            csrf: random_token(),
            expires: Utc::now() + chrono::Duration::hours(i64::from(self.session_hours)),
        };
        self.insert_session(&id, session);
        Ok((id, caller))
    }

    /// Opens a dashboard session for a person the identity provider signed in (see [`crate::oidc`]).
    pub fn open_session(&self, caller: Caller) -> AppResult<(String, Caller)> {
        let caller = self.admit(caller)?;
        let id = random_token();
        let session = Session {
            key_id: caller.key_id.clone(),
            signed_in: Some(caller.clone()),
            csrf: random_token(),
            expires: Utc::now() + chrono::Duration::hours(i64::from(self.session_hours)),
        };
        self.insert_session(&id, session);
        Ok((id, caller))
    }

    fn insert_session(&self, id: &str, session: Session) {
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let now = Utc::now();
        sessions.retain(|_, s| s.expires > now);
        sessions.insert(id.to_owned(), session);
    }

    /// A dashboard caller: the session cookie, re-checked against the key (a revoked key ends its sessions).
    pub fn session_caller(&self, config: &Config, headers: &HeaderMap) -> AppResult<(Caller, Session)> {
        let not_in = || AppError::unauthenticated("not logged in").with_hint("log in with an API key at /login");
        let id = cookie(headers, SESSION_COOKIE).ok_or_else(not_in)?;
        let session = {
            let sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
            sessions.get(&id).cloned().ok_or_else(not_in)?
        };
        if session.expires <= Utc::now() {
            self.logout(&id);
            return Err(AppError::unauthenticated("the session has ended").with_hint("log in again at /login"));
        }
        if let Some(caller) = &session.signed_in {
            return Ok((self.admit(caller.clone())?, session));
        }
        let caller =
            self.ring.lock().unwrap_or_else(|e| e.into_inner()).caller_for(config, &session.key_id, Utc::now());
        let caller = match caller {
            Ok(c) => c,
            Err(e) => {
                self.logout(&id);
                return Err(e);
            }
        };
        Ok((self.admit(caller)?, session))
    }

    pub fn logout(&self, session_id: &str) {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner()).remove(session_id);
    }

    /// Takes the keys' last-use times recorded since the last call.
    pub fn take_used(&self) -> BTreeMap<String, DateTime<Utc>> {
        std::mem::take(&mut *self.used.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_says_how_long_to_wait() {
        let l = RateLimiter::new(3);
        assert!(l.take("a").is_ok() && l.take("a").is_ok() && l.take("a").is_ok());
        let wait = l.take("a").unwrap_err();
        assert!((1..=20).contains(&wait), "{wait}");
        assert!(l.take("b").is_ok(), "keys have their own buckets");
    }

    #[test]
    fn cookies_are_found_among_several() {
        let mut h = HeaderMap::new();
        h.insert(axum::http::header::COOKIE, "a=1; pulse_session=abc; b=2".parse().unwrap());
        assert_eq!(cookie(&h, SESSION_COOKIE).as_deref(), Some("abc"));
        assert_eq!(cookie(&h, "c"), None);
    }
}
