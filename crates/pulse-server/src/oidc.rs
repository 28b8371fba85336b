//! Sign-in with the organisation's identity provider: OpenID Connect's authorisation code flow with PKCE (RFC 7636)
//! against the issuer in `[server.oidc]` (for NHS organisations, NHSmail's Microsoft Entra ID). The dashboard sends
//! the browser to the provider with a `state` bound to that browser (a cookie), a `nonce` and a PKCE challenge; the
//! callback checks all three, exchanges the code for an ID token at the token endpoint, verifies the token's
//! signature against the provider's published keys (JWKS) and its issuer, audience, expiry and nonce, and maps its
//! claims to tenants and scopes through `[[server.oidc.grant]]`. A person no grant matches is refused. API keys stay
//! the way into the API; a signed-in person gets a dashboard session like a key's.
//!
//! Nothing the provider returns is logged or kept but the session: the code, tokens and claims are dropped after the
//! callback, and the access log names the person by a pseudonymous id (a digest of issuer and subject).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{Query as QueryString, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use jsonwebtoken::jwk::JwkSet;
use pulse_app::error::{AppError, AppResult, ErrorKind};
use pulse_app::keys::sha256_hex;
use pulse_app::keys::{Caller, KeyScope};
use pulse_config::{Config, OidcConfig, Secret};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::auth::{SESSION_COOKIE, cookie, random_token};
use crate::pages::{cookie_header, error_page_saying as error_page, safe_next};
use crate::{Shared, log_request};

/// The cookie binding a sign-in in progress to the browser that started it.
pub const BINDING_COOKIE: &str = "pulse_oidc";

/// How long a started sign-in may take at the provider.
pub const PENDING_FOR: Duration = Duration::from_secs(600);

/// Sign-ins in progress at once (a flood of starts is refused beyond this, never grows memory).
pub const MAX_PENDING: usize = 10_000;

/// Signature algorithms accepted on ID tokens: asymmetric only (never `none`, never a shared-secret HMAC).
const ALGORITHMS: [jsonwebtoken::Algorithm; 6] = [
    jsonwebtoken::Algorithm::RS256,
    jsonwebtoken::Algorithm::RS384,
    jsonwebtoken::Algorithm::RS512,
    jsonwebtoken::Algorithm::PS256,
    jsonwebtoken::Algorithm::ES256,
    jsonwebtoken::Algorithm::ES384,
];

/// The provider as its discovery document describes it, with its signing keys.
#[derive(Debug, Clone)]
struct Provider {
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
    jwks: JwkSet,
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
    #[serde(default)]
    code_challenge_methods_supported: Option<Vec<String>>,
}

/// A sign-in started and not yet finished.
struct Pending {
    nonce: String,
    verifier: String,
    next: String,
    /// SHA-256 of the binding cookie's value.
    browser: String,
    started: Instant,
}

/// The OpenID Connect client: configuration, the provider (discovered on first use), sign-ins in progress.
pub struct Oidc {
    config: OidcConfig,
    client_secret: Option<Secret>,
    http: reqwest::Client,
    provider: tokio::sync::Mutex<Option<Provider>>,
    pending: Mutex<HashMap<String, Pending>>,
}

impl std::fmt::Debug for Oidc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Oidc").field("issuer", &self.config.issuer).field("client_id", &self.config.client_id).finish()
    }
}

/// Base64url without padding (RFC 7636's encoding of the PKCE challenge).
fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// The PKCE S256 challenge of a verifier.
pub fn pkce_challenge(verifier: &str) -> String {
    use sha2::Digest as _;
    base64url(&sha2::Sha256::digest(verifier.as_bytes()))
}

fn unavailable(what: impl Into<String>) -> AppError {
    AppError::new(ErrorKind::Unavailable, what).with_hint(
        "the identity provider could not be reached or answered something unexpected; try again shortly, or sign in \
         with an API key",
    )
}

fn refused(what: impl Into<String>, hint: &str) -> AppError {
    AppError::new(ErrorKind::Forbidden, what).with_hint(hint.to_owned())
}

impl Oidc {
    /// The client for `config`'s `[server.oidc]`, or `None` when sign-in is not configured.
    pub fn from_config(config: &Config) -> AppResult<Option<Oidc>> {
        let Some(oidc) = config.server.oidc.clone() else { return Ok(None) };
        let client_secret = match &oidc.client_secret {
            Some(r) => Some(config.resolve(r).map_err(|e| {
                AppError::new(ErrorKind::BadRequest, format!("server.oidc.client_secret: {e}"))
                    .with_hint("set the client secret where [server.oidc] client_secret says it is")
            })?),
            None => None,
        };
        // reqwest is built without a bundled TLS provider; ring serves the provider's https endpoints.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            // The provider's endpoints answer themselves; a redirect would send the code or secret elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("practice-pulse/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| unavailable(format!("cannot build the HTTP client for sign-in: {e}")))?;
        Ok(Some(Oidc {
            config: oidc,
            client_secret,
            http,
            provider: tokio::sync::Mutex::new(None),
            pending: Mutex::new(HashMap::new()),
        }))
    }

    pub fn label(&self) -> &str {
        &self.config.label
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str, what: &str) -> AppResult<T> {
        let resp = self.http.get(url).send().await.map_err(|e| unavailable(format!("{what}: {}", reason(&e))))?;
        if !resp.status().is_success() {
            return Err(unavailable(format!("{what}: the provider answered HTTP {}", resp.status().as_u16())));
        }
        resp.json::<T>().await.map_err(|e| unavailable(format!("{what}: not the JSON expected ({})", reason(&e))))
    }

    /// The provider, discovered on first use (and again with fresh keys when `refresh`).
    async fn provider(&self, refresh: bool) -> AppResult<Provider> {
        let mut slot = self.provider.lock().await;
        if let Some(p) = slot.as_ref().filter(|_| !refresh) {
            return Ok(p.clone());
        }
        let url = format!("{}/.well-known/openid-configuration", self.config.issuer.trim_end_matches('/'));
        let d: Discovery = self.get_json(&url, "reading the provider's discovery document").await?;
        if d.issuer != self.config.issuer {
            return Err(unavailable(format!(
                "the provider's discovery document names issuer `{}`, not the configured `{}`",
                d.issuer, self.config.issuer
            )));
        }
        if let Some(methods) = &d.code_challenge_methods_supported
            && !methods.iter().any(|m| m == "S256")
        {
            return Err(unavailable("the provider does not support PKCE with S256"));
        }
        for (name, url) in [
            ("authorization_endpoint", &d.authorization_endpoint),
            ("token_endpoint", &d.token_endpoint),
            ("jwks_uri", &d.jwks_uri),
        ] {
            if !pulse_config::oidc_url_allowed(url) {
                return Err(unavailable(format!("the provider's {name} `{url}` is not https")));
            }
        }
        let jwks: JwkSet = self.get_json(&d.jwks_uri, "reading the provider's signing keys").await?;
        let p = Provider {
            authorization_endpoint: d.authorization_endpoint,
            token_endpoint: d.token_endpoint,
            jwks_uri: d.jwks_uri,
            jwks,
        };
        *slot = Some(p.clone());
        Ok(p)
    }

    /// Starts a sign-in: where to send the browser, and the binding cookie's value.
    async fn start(&self, next: String) -> AppResult<(String, String)> {
        let provider = self.provider(false).await?;
        let (state, nonce, verifier, binding) = (random_token(), random_token(), random_token(), random_token());
        {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            pending.retain(|_, p| p.started.elapsed() < PENDING_FOR);
            if pending.len() >= MAX_PENDING {
                return Err(AppError::new(ErrorKind::RateLimited, "too many sign-ins are in progress")
                    .with_hint("try again in a few minutes")
                    .retry_after(60));
            }
            let p = Pending {
                nonce: nonce.clone(),
                verifier: verifier.clone(),
                next,
                browser: sha256_hex(&binding),
                started: Instant::now(),
            };
            pending.insert(state.clone(), p);
        }
        let params = [
            ("response_type", "code"),
            ("client_id", self.config.client_id.as_str()),
            ("redirect_uri", self.config.redirect_url.as_str()),
            ("scope", &self.config.scopes.join(" ")),
            ("state", &state),
            ("nonce", &nonce),
            ("code_challenge", &pkce_challenge(&verifier)),
            ("code_challenge_method", "S256"),
        ];
        let query: String = form_urlencoded::Serializer::new(String::new()).extend_pairs(params).finish();
        let sep = if provider.authorization_endpoint.contains('?') { '&' } else { '?' };
        Ok((format!("{}{sep}{query}", provider.authorization_endpoint), binding))
    }

    /// Finishes a sign-in: the caller its ID token's claims grant, and where to go next.
    async fn finish(
        &self,
        config: &Config,
        params: &HashMap<String, String>,
        binding: Option<&str>,
    ) -> AppResult<(Caller, String)> {
        let start_again = "start again from the login page";
        let state = params.get("state").map(String::as_str).unwrap_or_default();
        let pending = {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            // Single use: a state is taken out whatever happens next.
            pending.remove(state)
        };
        let Some(pending) = pending.filter(|p| p.started.elapsed() < PENDING_FOR) else {
            return Err(AppError::bad_request(
                "this sign-in was not started here, was already used, or took longer than 10 minutes",
            )
            .with_hint(start_again));
        };
        if binding.map(sha256_hex).as_deref() != Some(pending.browser.as_str()) {
            return Err(refused(
                "this sign-in was started in another browser",
                "start again from the login page in this browser",
            ));
        }
        if let Some(error) = params.get("error") {
            // The provider's own words (access_denied, consent_required, ...); they carry no secret.
            let detail = params.get("error_description").map(|d| format!(": {d}")).unwrap_or_default();
            return Err(refused(
                format!("the identity provider did not sign you in ({error}{detail})"),
                "start again, or ask your organisation's administrator",
            ));
        }
        // RFC 9207: a provider that names itself must be ours (a mix-up with another provider otherwise).
        if let Some(iss) = params.get("iss")
            && *iss != self.config.issuer
        {
            return Err(refused(format!("the answer came from another issuer ({iss})"), start_again));
        }
        let Some(code) = params.get("code").filter(|c| !c.is_empty()) else {
            return Err(AppError::bad_request("the provider's answer has no authorisation code").with_hint(start_again));
        };
        let id_token = self.exchange(code, &pending.verifier).await?;
        let claims = self.verify(&id_token, &pending.nonce).await?;
        let caller = caller_of(config, &self.config, &claims)?;
        Ok((caller, pending.next))
    }

    /// The code for an ID token at the token endpoint, with the PKCE verifier.
    async fn exchange(&self, code: &str, verifier: &str) -> AppResult<String> {
        let provider = self.provider(false).await?;
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", self.config.redirect_url.as_str()),
            ("code_verifier", verifier),
        ];
        let mut request = self.http.post(&provider.token_endpoint);
        match &self.client_secret {
            // RFC 6749 §2.3.1: both parts form-encoded, then Basic.
            Some(secret) => {
                let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
                request = request.basic_auth(enc(&self.config.client_id), Some(enc(secret.expose())));
            }
            None => form.push(("client_id", self.config.client_id.as_str())),
        }
        let resp = request
            .form(&form)
            .send()
            .await
            .map_err(|e| unavailable(format!("exchanging the authorisation code: {}", reason(&e))))?;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            // Only the error's name and description: the body could echo what was sent.
            let error = body.get("error").and_then(Value::as_str).unwrap_or("no error named");
            let description = body.get("error_description").and_then(Value::as_str).unwrap_or("");
            return Err(refused(
                format!(
                    "the identity provider refused the sign-in code (HTTP {}, {error} {description})",
                    status.as_u16()
                ),
                "start again from the login page; if it repeats, the client id, secret or redirect URL in [server.oidc] \
                 may not match the provider's registration",
            ));
        }
        body.get("id_token").and_then(Value::as_str).map(str::to_owned).ok_or_else(|| {
            unavailable("the token endpoint answered without an id_token (is `openid` among [server.oidc] scopes?)")
        })
    }

    /// The ID token's claims, after its signature, issuer, audience, expiry and nonce are checked.
    async fn verify(&self, token: &str, nonce: &str) -> AppResult<Map<String, Value>> {
        let invalid = |why: String| {
            refused(format!("the identity provider's ID token is not valid: {why}"), "start again from the login page")
        };
        let header = jsonwebtoken::decode_header(token).map_err(|e| invalid(e.to_string()))?;
        if !ALGORITHMS.contains(&header.alg) {
            return Err(invalid(format!("it is signed with {:?}, which is not accepted", header.alg)));
        }
        let mut provider = self.provider(false).await?;
        let find = |p: &Provider| match &header.kid {
            Some(kid) => p.jwks.find(kid).cloned(),
            None if p.jwks.keys.len() == 1 => p.jwks.keys.first().cloned(),
            None => None,
        };
        let jwk = match find(&provider) {
            Some(k) => k,
            // Providers rotate keys: read them again once before refusing.
            None => {
                provider = self.provider(true).await?;
                find(&provider).ok_or_else(|| {
                    invalid(format!("no key {:?} among the provider's keys at {}", header.kid, provider.jwks_uri))
                })?
            }
        };
        let key = jsonwebtoken::DecodingKey::from_jwk(&jwk).map_err(|e| invalid(e.to_string()))?;
        let mut validation = jsonwebtoken::Validation::new(header.alg);
        validation.set_issuer(&[self.config.issuer.as_str()]);
        validation.set_audience(&[self.config.client_id.as_str()]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = 60;
        let data =
            jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation).map_err(|e| invalid(e.to_string()))?;
        let claims = data.claims;
        if claims.get("nonce").and_then(Value::as_str) != Some(nonce) {
            return Err(invalid("its nonce is not the one this sign-in sent (a replayed token?)".into()));
        }
        // OpenID Connect Core §3.1.3.7: with several audiences, the authorised party must be this client.
        let several = claims.get("aud").and_then(Value::as_array).is_some_and(|a| a.len() > 1);
        match claims.get("azp").and_then(Value::as_str) {
            Some(azp) if azp != self.config.client_id => {
                return Err(invalid(format!("it was issued to another client ({azp})")));
            }
            None if several => return Err(invalid("it has several audiences and no authorised party".into())),
            _ => {}
        }
        Ok(claims)
    }
}

fn reason(e: &reqwest::Error) -> String {
    // reqwest's messages name the URL; the URLs here carry no secret (codes go in bodies), but say only the kind.
    if e.is_timeout() {
        "no answer within 10 s".into()
    } else if e.is_connect() {
        "cannot connect".into()
    } else if e.is_decode() {
        "an unreadable answer".into()
    } else {
        "the request failed".into()
    }
}

/// The values of claim `name` as text: a string, or each string of a list. `email_domain` is the part of `email`
/// after `@`, lowercased, and only when the provider vouches for the address: `email_verified` is `true`, or Microsoft
/// Entra's optional claim `xms_edov` (the email domain's owner verified it) is `true`. Entra sends no `email_verified`
/// and lets some accounts set their own `email`, so without `xms_edov` an Entra address grants nothing by domain.
pub fn claim_values(claims: &Map<String, Value>, name: &str) -> Vec<String> {
    if name == "email_domain" {
        let vouched = |c: &str| claims.get(c).and_then(Value::as_bool) == Some(true);
        if !vouched("email_verified") && !vouched("xms_edov") {
            return Vec::new();
        }
        return claim_values(claims, "email")
            .into_iter()
            .filter_map(|e| e.rsplit_once('@').map(|(_, d)| d.to_owned()))
            // Non-ASCII domains are refused outright: Unicode lowercasing folds look-alikes (the Kelvin sign to `k`).
            .filter(|d| d.is_ascii())
            .map(|d| d.to_ascii_lowercase())
            .collect();
    }
    match claims.get(name) {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
        _ => Vec::new(),
    }
}

/// The caller a person's claims make, from the grants that match. A scope holds only if it is granted for every
/// tenant the person gets (a grant's `export` does not reach another grant's tenants); several tenants need `admin`
/// over all of them, as a key for several tenants does: two one-tenant grants that both match are refused rather
/// than merged into a regional view nobody granted. Analyst access for one tenant without `admin`, admin access
/// over the tenants otherwise. Refused when nothing matches.
pub fn caller_of(config: &Config, oidc: &OidcConfig, claims: &Map<String, Value>) -> AppResult<Caller> {
    let matching: Vec<&pulse_config::OidcGrant> = oidc
        .grants
        .iter()
        .filter(|g| {
            let values = claim_values(claims, &g.claim);
            if g.claim == "email_domain" {
                values.iter().any(|v| *v == g.value.to_ascii_lowercase())
            } else {
                values.contains(&g.value)
            }
        })
        .collect();
    let mut tenants: Vec<String> = matching.iter().flat_map(|g| g.tenants.iter().cloned()).collect();
    tenants.sort();
    tenants.dedup();
    // A scope every tenant is granted it with.
    let scopes: Vec<KeyScope> = KeyScope::ALL
        .into_iter()
        .filter(|s| {
            tenants
                .iter()
                .all(|t| matching.iter().any(|g| g.tenants.contains(t) && g.scopes.iter().any(|x| x == s.as_str())))
        })
        .collect();
    let issuer = oidc.issuer.as_str();
    let subject = claims.get("sub").and_then(Value::as_str).unwrap_or_default();
    let who = ["email", "preferred_username", "name"]
        .iter()
        .find_map(|c| claims.get(*c).and_then(Value::as_str))
        .unwrap_or("this account")
        .to_owned();
    if tenants.is_empty() || !scopes.contains(&KeyScope::Read) {
        return Err(refused(
            format!("{who} signed in, but no [[server.oidc.grant]] gives it a tenant to read"),
            "ask the operator to add a grant for your group, role or email domain",
        ));
    }
    if tenants.len() > 1 && !scopes.contains(&KeyScope::Admin) {
        return Err(refused(
            format!(
                "{who} signed in, and separate grants open tenants {} to it, but none gives `admin` over all of them",
                tenants.join(", ")
            ),
            "ask the operator for one grant with scopes [\"read\", \"admin\"] over these tenants, or to narrow your groups",
        ));
    }
    let operator = config.operator_access();
    let access = if tenants.len() == 1 && !scopes.contains(&KeyScope::Admin) {
        operator.analyst(&tenants[0])
    } else {
        operator.admin(tenants.iter().map(String::as_str))
    }
    .map_err(|e| AppError::new(ErrorKind::Forbidden, e.to_string()))?;
    Ok(Caller {
        // A pseudonym for logs and limits: stable per person, not their address.
        key_id: format!("oidc-{}", &sha256_hex(&format!("{issuer}\n{subject}"))[..16]),
        key_name: who,
        scopes,
        access,
        tenants,
    })
}

/// `GET /auth/oidc/start?next=/path`: to the identity provider.
pub async fn start(
    State(state): State<Shared>,
    extensions: axum::http::Extensions,
    QueryString(params): QueryString<HashMap<String, String>>,
) -> Response {
    let started = Instant::now();
    let Some(oidc) = state.oidc.as_ref() else {
        return error_page(
            &AppError::not_found("sign-in with an identity provider is not configured here")
                .with_hint("log in with an API key at /login"),
        );
    };
    let client = extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map_or_else(|| "unknown".to_owned(), |c| c.0.ip().to_string());
    if let Err(wait) = state.gate.sign_in_starts.take(&client) {
        log_request("-", "-", "GET /auth/oidc/start", 0, 429, started);
        let e = AppError::new(ErrorKind::RateLimited, "too many sign-ins started from this address")
            .with_hint(format!("try again in {wait} s"))
            .retry_after(wait);
        let mut resp = error_page(&e);
        resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(wait));
        return resp;
    }
    match oidc.start(safe_next(params.get("next"))).await {
        Ok((url, binding)) => {
            log_request("-", "-", "GET /auth/oidc/start", 0, 303, started);
            let mut resp = Redirect::to(&url).into_response();
            resp.headers_mut().append(header::SET_COOKIE, cookie_header(&state, BINDING_COOKIE, &binding, 600));
            resp
        }
        Err(e) => {
            log_request("-", "-", "GET /auth/oidc/start", 0, e.status(), started);
            error_page(&e)
        }
    }
}

/// `GET /auth/oidc/callback?code=&state=`: back from the identity provider, into a dashboard session.
pub async fn callback(
    State(state): State<Shared>,
    headers: HeaderMap,
    QueryString(params): QueryString<HashMap<String, String>>,
) -> Response {
    let started = Instant::now();
    let Some(oidc) = state.oidc.as_ref() else {
        return error_page(&AppError::not_found("sign-in with an identity provider is not configured here"));
    };
    let binding = cookie(&headers, BINDING_COOKIE);
    let outcome = oidc.finish(&state.config, &params, binding.as_deref()).await;
    let clear = cookie_header(&state, BINDING_COOKIE, "", 0);
    let mut resp = match outcome.and_then(|(caller, next)| state.gate.open_session(caller).map(|(s, c)| (s, c, next))) {
        Ok((session, caller, next)) => {
            log_request(&caller.key_id, &caller.tenants.join(","), "GET /auth/oidc/callback", 0, 303, started);
            let mut resp = Redirect::to(&next).into_response();
            let max_age = i64::from(state.config.server.session_hours) * 3600;
            resp.headers_mut().append(header::SET_COOKIE, cookie_header(&state, SESSION_COOKIE, &session, max_age));
            resp
        }
        Err(e) => {
            log_request("-", "-", "GET /auth/oidc/callback", 0, e.status(), started);
            let mut resp = error_page(&e);
            if e.status() == 403 || e.status() == 400 {
                *resp.status_mut() = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::FORBIDDEN);
            }
            resp
        }
    };
    resp.headers_mut().append(header::SET_COOKIE, clear);
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
    use serde_json::json;

    const ISSUER: &str = "https://id.example.org";
    const CLIENT: &str = "pulse-dashboard";

    fn oidc_config(grants: &str) -> Config {
        let text = format!(
            "[server]\nsecure_cookies = true\n[server.oidc]\nissuer = \"{ISSUER}\"\nclient_id = \"{CLIENT}\"\n\
             redirect_url = \"https://pulse.example.org/auth/oidc/callback\"\n{grants}\n\
             [[tenant]]\nid = \"a\"\nname = \"A\"\n[[tenant]]\nid = \"b\"\nname = \"B\"\n\
             [[tenant]]\nid = \"c\"\nname = \"C\"\n"
        );
        pulse_config::parse(&text, std::path::Path::new("pulse.toml")).unwrap_or_else(|e| panic!("{e}"))
    }

    /// A provider with one P-256 signing key, and a way to sign tokens with it.
    struct Signer {
        key: EcdsaKeyPair,
        rng: ring::rand::SystemRandom,
    }

    impl Signer {
        fn new() -> Self {
            let rng = ring::rand::SystemRandom::new();
            let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
            let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap();
            Signer { key, rng }
        }

        fn jwks(&self) -> JwkSet {
            let point = self.key.public_key().as_ref();
            let (x, y) = (&point[1..33], &point[33..65]);
            serde_json::from_value(json!({"keys": [{"kty": "EC", "crv": "P-256", "x": base64url(x), "y": base64url(y),
                "kid": "k1", "use": "sig", "alg": "ES256"}]}))
            .unwrap()
        }

        fn token(&self, header: Value, claims: Value) -> String {
            let head = base64url(header.to_string().as_bytes());
            let body = base64url(claims.to_string().as_bytes());
            let input = format!("{head}.{body}");
            let sig = self.key.sign(&self.rng, input.as_bytes()).unwrap();
            format!("{input}.{}", base64url(sig.as_ref()))
        }
    }

    fn client(config: &Config, signer: &Signer) -> Oidc {
        let oidc = Oidc::from_config(config).unwrap().unwrap();
        let provider = Provider {
            authorization_endpoint: format!("{ISSUER}/auth"),
            token_endpoint: format!("{ISSUER}/token"),
            // Unreachable: a key id not among these fails after one try to read them again.
            jwks_uri: "http://127.0.0.1:1/jwks".into(),
            jwks: signer.jwks(),
        };
        *oidc.provider.try_lock().unwrap() = Some(provider);
        oidc
    }

    fn good_claims() -> Value {
        let now = chrono::Utc::now().timestamp();
        json!({"iss": ISSUER, "aud": CLIENT, "sub": "ann", "exp": now + 300, "iat": now, "nonce": "n-1",
               "email": "ann@example.org"})
    }

    #[tokio::test]
    async fn an_id_token_is_accepted_only_when_every_check_holds() {
        let config = oidc_config("[[server.oidc.grant]]\nclaim = \"groups\"\nvalue = \"g\"\ntenants = [\"a\"]\n");
        let signer = Signer::new();
        let oidc = client(&config, &signer);
        let es256 = json!({"alg": "ES256", "kid": "k1", "typ": "JWT"});
        let claims = oidc.verify(&signer.token(es256.clone(), good_claims()), "n-1").await.unwrap();
        assert_eq!(claims["sub"], "ann");
        let with = |k: &str, v: Value| {
            let mut c = good_claims();
            c[k] = v;
            c
        };
        let now = chrono::Utc::now().timestamp();
        let cases: Vec<(&str, String, &str)> = vec![
            ("another audience", signer.token(es256.clone(), with("aud", json!("other-app"))), "n-1"),
            ("another issuer", signer.token(es256.clone(), with("iss", json!("https://evil.example"))), "n-1"),
            ("expired", signer.token(es256.clone(), with("exp", json!(now - 3600))), "n-1"),
            ("another nonce", signer.token(es256.clone(), good_claims()), "n-2"),
            ("no nonce", signer.token(es256.clone(), with("nonce", Value::Null)), "n-1"),
            ("another authorised party", signer.token(es256.clone(), with("azp", json!("other-app"))), "n-1"),
            (
                "several audiences, no azp",
                signer.token(es256.clone(), with("aud", json!([CLIENT, "other-app"]))),
                "n-1",
            ),
            ("HS256", signer.token(json!({"alg": "HS256", "kid": "k1"}), good_claims()), "n-1"),
            (
                "alg none",
                format!("{}.{}.", base64url(br#"{"alg":"none"}"#), base64url(good_claims().to_string().as_bytes())),
                "n-1",
            ),
            ("an unknown key", signer.token(json!({"alg": "ES256", "kid": "k9"}), good_claims()), "n-1"),
            ("another key", Signer::new().token(es256.clone(), good_claims()), "n-1"),
        ];
        for (what, token, nonce) in cases {
            assert!(oidc.verify(&token, nonce).await.is_err(), "{what} was accepted");
        }
        // A tampered body fails its signature.
        let token = signer.token(es256.clone(), good_claims());
        let parts: Vec<&str> = token.split('.').collect();
        let forged =
            format!("{}.{}.{}", parts[0], base64url(with("sub", json!("bob")).to_string().as_bytes()), parts[2]);
        assert!(oidc.verify(&forged, "n-1").await.is_err(), "a tampered token was accepted");
        // Several audiences with this client as the authorised party: accepted.
        let mut several = with("aud", json!([CLIENT, "other-app"]));
        several["azp"] = json!(CLIENT);
        assert!(oidc.verify(&signer.token(es256, several), "n-1").await.is_ok());
    }

    #[test]
    fn grants_give_scopes_only_over_tenants_they_cover_and_vouched_domains_only() {
        let config = oidc_config(
            "[[server.oidc.grant]]\nclaim = \"groups\"\nvalue = \"g-a\"\ntenants = [\"a\"]\n\
             [[server.oidc.grant]]\nclaim = \"groups\"\nvalue = \"g-b\"\ntenants = [\"b\"]\nscopes = [\"read\", \"export\"]\n\
             [[server.oidc.grant]]\nclaim = \"roles\"\nvalue = \"lead\"\ntenants = [\"a\", \"b\"]\nscopes = [\"read\", \"admin\"]\n\
             [[server.oidc.grant]]\nclaim = \"email_domain\"\nvalue = \"Example.NHS.uk\"\ntenants = [\"c\"]\n",
        );
        let oidc = config.server.oidc.clone().unwrap();
        let caller = |claims: Value| {
            let Value::Object(map) = claims else { unreachable!() };
            caller_of(&config, &oidc, &map)
        };
        let names = |c: &Caller| c.scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(",");
        let a = caller(json!({"sub": "1", "groups": ["g-a"]})).unwrap();
        assert_eq!((a.tenants.clone(), names(&a)), (vec!["a".to_owned()], "read".to_owned()));
        let b = caller(json!({"sub": "1", "groups": "g-b"})).unwrap();
        assert_eq!(names(&b), "read,export");
        let both = caller(json!({"sub": "1", "groups": ["g-a", "g-b"]})).unwrap_err();
        assert!(both.message.contains("none gives `admin`"), "{}", both.message);
        let lead = caller(json!({"sub": "1", "roles": ["lead"], "groups": ["g-b"]})).unwrap();
        assert_eq!(lead.tenants, ["a", "b"]);
        assert_eq!(names(&lead), "read,admin", "export only where a grant gives it: not over a");
        let vouched = caller(json!({"sub": "1", "email": "ann@example.nhs.UK", "email_verified": true})).unwrap();
        assert_eq!(vouched.tenants, ["c"]);
        let entra = caller(json!({"sub": "1", "email": "ann@example.nhs.uk", "xms_edov": true})).unwrap();
        assert_eq!(entra.tenants, ["c"]);
        for unvouched in [
            json!({"sub": "1", "email": "ann@example.nhs.uk"}),
            json!({"sub": "1", "email": "ann@example.nhs.uk", "email_verified": "true"}),
            json!({"sub": "1", "email": "ann@example.nhs.uk", "email_verified": false, "xms_edov": false}),
            json!({"sub": "1", "email": "ann@example.nhs.uk.evil.example", "email_verified": true}),
            json!({"sub": "1", "email": "ann@\u{212A}example.nhs.uk", "email_verified": true}),
            json!({"sub": "1", "groups": ["staff"]}),
        ] {
            assert!(caller(unvouched.clone()).is_err(), "{unvouched} was let in");
        }
        assert!(a.key_id.starts_with("oidc-") && a.key_id.len() == 21, "a pseudonym: {}", a.key_id);
        assert_ne!(a.key_id, caller(json!({"sub": "2", "groups": ["g-a"]})).unwrap().key_id, "one per person");
    }

    #[test]
    fn the_pkce_challenge_is_rfc_7636s() {
        // RFC 7636 appendix B.
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        assert_eq!(base64url(b"f"), "Zg");
        assert_eq!(base64url(b"fo"), "Zm8");
        assert_eq!(base64url(b"foo"), "Zm9v");
    }

    #[test]
    fn claims_match_by_value_list_item_or_verified_email_domain() {
        let claims: Map<String, Value> = serde_json::from_str(
            r#"{"sub":"1","email":"Ann.Lee@NHS.net","email_verified":true,"groups":["g1","g2"],"roles":"Pulse.Analyst"}"#,
        )
        .unwrap();
        assert_eq!(claim_values(&claims, "groups"), ["g1", "g2"]);
        assert_eq!(claim_values(&claims, "roles"), ["Pulse.Analyst"]);
        assert_eq!(claim_values(&claims, "email_domain"), ["nhs.net"]);
        assert!(claim_values(&claims, "missing").is_empty());
        let unverified: Map<String, Value> =
            serde_json::from_str(r#"{"email":"x@nhs.net","email_verified":false}"#).unwrap();
        assert!(claim_values(&unverified, "email_domain").is_empty(), "an unverified address grants nothing");
    }
}
