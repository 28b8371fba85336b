//! The Graph API client: typed requests, the token in the `Authorization` header (never in a URL, a log line or an
//! error), `appsecret_proof` when an app secret is configured, usage headers parsed, errors classified.

use std::time::Duration;

use pulse_config::Secret;
use pulse_domain::ApiVersion;
use pulse_graph::wire::{GraphErrorBody, PageObject, PostsResponse};
use pulse_graph::{ErrorClass, GraphError, Usage, classify};
use serde::de::DeserializeOwned;

/// What a call got back.
#[derive(Debug, Clone)]
pub struct Fetched<T> {
    pub body: T,
    pub usage: Usage,
    pub bytes: usize,
}

/// Why a call failed. Messages never contain the token.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    #[error("Graph API error {} ({}): {}", .error.code, class_word(*.class), .error.message)]
    Graph { class: ErrorClass, error: Box<GraphError>, usage: Usage },
    #[error("cannot reach the Graph API at {host}: {reason}")]
    Network { host: String, reason: String },
    /// A body that is not what Meta documents. `retryable` when it looks cut short (a truncated transfer), not when
    /// it is whole but of the wrong shape: asking again would get the same answer.
    #[error("malformed response (HTTP {status}, {bytes} bytes): {reason}")]
    Malformed { status: u16, bytes: usize, reason: String, retryable: bool },
    #[error("the run stopped before this call")]
    Stopped,
}

fn class_word(c: ErrorClass) -> &'static str {
    match c {
        ErrorClass::Transient => "transient",
        ErrorClass::Throttled => "throttled",
        ErrorClass::TokenDead => "token rejected",
        ErrorClass::Permission => "permission",
        ErrorClass::InvalidMetric => "invalid metric",
        ErrorClass::BadRequest => "bad request",
    }
}

impl CallError {
    /// Whether retrying the same call can succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            CallError::Graph { class, .. } => class.is_retryable(),
            CallError::Network { .. } => true,
            CallError::Malformed { retryable, .. } => *retryable,
            CallError::Stopped => false,
        }
    }

    pub fn class(&self) -> Option<ErrorClass> {
        match self {
            CallError::Graph { class, .. } => Some(*class),
            _ => None,
        }
    }

    pub fn usage(&self) -> Option<&Usage> {
        match self {
            CallError::Graph { usage, .. } => Some(usage),
            _ => None,
        }
    }
}

#[derive(Clone)]
pub struct GraphClient {
    http: reqwest::Client,
    base_url: String,
    version: ApiVersion,
    app_secret: Option<Secret>,
}

impl std::fmt::Debug for GraphClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GraphClient").field("base_url", &self.base_url).field("version", &self.version).finish()
    }
}

/// The innermost cause of a transport error, without the URL (which could carry a paging cursor, never a token).
fn cause(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        text = s.to_string();
        source = s.source();
    }
    text
}

/// A body that does not parse: retryable when it is not JSON at all or ends early (a cut transfer, a proxy's error
/// page), not when it is valid JSON of the wrong shape, which comes back the same every time.
fn malformed(status: u16, bytes: usize, e: &serde_json::Error, scrub: impl Fn(String) -> String) -> CallError {
    let retryable = !matches!(e.classify(), serde_json::error::Category::Data);
    CallError::Malformed { status, bytes, reason: scrub(e.to_string()), retryable }
}

/// Decodes a 200 body (owned, or borrowing from `body` such as [`pulse_graph::wire::InsightsView`]); a body of the
/// wrong shape is [`CallError::Malformed`], with the token scrubbed from the reason.
pub fn decode<'a, T: serde::Deserialize<'a>>(token: &Secret, body: &'a [u8]) -> Result<T, CallError> {
    serde_json::from_slice(body).map_err(|e| malformed(200, body.len(), &e, |s| s.replace(token.expose(), "***")))
}

/// `appsecret_proof` for a page token (see [`pulse_graph::appsecret_proof`]).
pub fn appsecret_proof(secret: &Secret, token: &Secret) -> String {
    pulse_graph::appsecret_proof(secret.expose(), token.expose())
}

impl GraphClient {
    pub fn new(
        base_url: &str,
        version: ApiVersion,
        app_secret: Option<Secret>,
        timeout: Duration,
    ) -> Result<Self, CallError> {
        // reqwest is built without a bundled TLS provider; ring serves https://graph.facebook.com.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .pool_max_idle_per_host(64)
            .user_agent(concat!("practice-pulse/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| CallError::Network { host: base_url.to_owned(), reason: cause(e) })?;
        Ok(Self { http, base_url: base_url.trim_end_matches('/').to_owned(), version, app_secret })
    }

    /// The Graph API's host (scheme, host and port; no path or query), for messages.
    pub fn host(&self) -> String {
        reqwest::Url::parse(&self.base_url)
            .map(|u| format!("{}://{}", u.scheme(), u.authority()))
            .unwrap_or_else(|_| self.base_url.clone())
    }

    pub fn version(&self) -> ApiVersion {
        self.version
    }

    fn url(&self, path: &str) -> String {
        format!("{}/{}/{}", self.base_url, self.version, path.trim_start_matches('/'))
    }

    /// GETs `path` with `params`; the token goes in the Authorization header.
    pub async fn get<T: DeserializeOwned>(
        &self,
        token: &Secret,
        path: &str,
        params: &[(&str, String)],
    ) -> Result<Fetched<T>, CallError> {
        self.send(token, self.request(token, path, params)).await
    }

    /// A GET of `path` with `params`, `appsecret_proof` when configured, and the token in the Authorization header.
    fn request(&self, token: &Secret, path: &str, params: &[(&str, String)]) -> reqwest::RequestBuilder {
        let mut query: Vec<(&str, String)> = params.to_vec();
        if let Some(secret) = &self.app_secret {
            query.push(("appsecret_proof", appsecret_proof(secret, token)));
        }
        self.http.get(self.url(path)).query(&query).bearer_auth(token.expose())
    }

    /// Follows a paging link Meta returned. Meta echoes `access_token` in paging links when a token was passed in
    /// the query; it is stripped here so a token never travels in a URL we send or log.
    pub async fn follow<T: DeserializeOwned>(&self, token: &Secret, link: &str) -> Result<Fetched<T>, CallError> {
        let mut url = reqwest::Url::parse(link).map_err(|e| CallError::Malformed {
            status: 200,
            bytes: 0,
            reason: format!("paging link: {e}"),
            retryable: false,
        })?;
        let kept: Vec<(String, String)> = url
            .query_pairs()
            .filter(|(k, _)| k != "access_token" && k != "appsecret_proof")
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        url.query_pairs_mut().clear().extend_pairs(kept);
        if let Some(secret) = &self.app_secret {
            url.query_pairs_mut().append_pair("appsecret_proof", &appsecret_proof(secret, token));
        }
        let request = self.http.get(url).bearer_auth(token.expose());
        self.send(token, request).await
    }

    async fn send<T: DeserializeOwned>(
        &self,
        token: &Secret,
        request: reqwest::RequestBuilder,
    ) -> Result<Fetched<T>, CallError> {
        let Fetched { body, usage, bytes } = self.send_raw(token, request).await?;
        Ok(Fetched { body: decode(token, &body)?, usage, bytes })
    }

    /// Sends a request and returns a 200's body undecoded (a Graph error body becomes its [`CallError`]).
    async fn send_raw(&self, token: &Secret, request: reqwest::RequestBuilder) -> Result<Fetched<Vec<u8>>, CallError> {
        let scrub = |s: String| s.replace(token.expose(), "***");
        let network = |e: reqwest::Error| CallError::Network { host: self.host(), reason: scrub(cause(e)) };
        let response = request.send().await.map_err(network)?;
        let status = response.status().as_u16();
        let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let usage = Usage::parse(header("x-app-usage").as_deref(), header("x-business-use-case-usage").as_deref());
        let bytes = response.bytes().await.map_err(network)?;
        if status != 200 {
            return match serde_json::from_slice::<GraphErrorBody>(&bytes) {
                Ok(body) => {
                    let mut error = body.error;
                    error.message = scrub(error.message);
                    Err(CallError::Graph { class: classify(&error), error: Box::new(error), usage })
                }
                Err(e) => Err(malformed(status, bytes.len(), &e, scrub)),
            };
        }
        Ok(Fetched { bytes: bytes.len(), body: Vec::from(bytes), usage })
    }

    /// `debug_token` for each of `inputs`, with the app's token (`app_id|app_secret`), in batches of 50: every
    /// token goes in a POST body, never in a URL. One answer per input, in order: what Meta says of it, or why
    /// that one could not be checked.
    pub async fn debug_tokens(
        &self,
        app_token: &Secret,
        inputs: &[Secret],
    ) -> Result<Vec<Result<pulse_graph::wire::DebugTokenData, String>>, CallError> {
        use pulse_graph::wire::{BatchRequest, BatchResponse, DebugTokenResponse};
        let mut out = Vec::with_capacity(inputs.len());
        for chunk in inputs.chunks(50) {
            let batch: Vec<BatchRequest> = chunk
                .iter()
                .map(|t| BatchRequest {
                    method: "GET".into(),
                    relative_url: format!(
                        "{}/debug_token?{}",
                        self.version,
                        form_urlencoded::Serializer::new(String::new()).append_pair("input_token", t.expose()).finish()
                    ),
                })
                .collect();
            let body = serde_json::to_string(&batch).expect("serialisable");
            let proof = self.app_secret.as_ref().map(|secret| appsecret_proof(secret, app_token));
            let mut form =
                vec![("access_token", app_token.expose()), ("batch", body.as_str()), ("include_headers", "false")];
            if let Some(p) = &proof {
                form.push(("appsecret_proof", p.as_str()));
            }
            let request = self.http.post(format!("{}/", self.base_url)).form(&form);
            // Whatever comes back is scrubbed of every token in the batch, not only the app's.
            let scrub = |s: String| {
                chunk.iter().fold(s.replace(app_token.expose(), "***"), |s, t| s.replace(t.expose(), "***"))
            };
            let raw = self.send_raw(app_token, request).await.map_err(|e| match e {
                CallError::Malformed { status, bytes, reason, retryable } => {
                    CallError::Malformed { status, bytes, reason: scrub(reason), retryable }
                }
                CallError::Graph { class, mut error, usage } => {
                    error.message = scrub(error.message);
                    CallError::Graph { class, error, usage }
                }
                CallError::Network { host, reason } => CallError::Network { host, reason: scrub(reason) },
                other => other,
            })?;
            let answers: Vec<BatchResponse> = decode(app_token, &raw.body)?;
            for a in answers.into_iter().take(chunk.len()) {
                out.push(if a.code == 200 {
                    serde_json::from_str::<DebugTokenResponse>(&a.body)
                        .map(|r| r.data)
                        .map_err(|e| scrub(format!("debug_token answered something unexpected: {e}")))
                } else {
                    match serde_json::from_str::<GraphErrorBody>(&a.body) {
                        Ok(b) => {
                            Err(scrub(format!("debug_token refused (code {}): {}", b.error.code, b.error.message)))
                        }
                        Err(_) => Err(format!("debug_token answered HTTP {}", a.code)),
                    }
                });
            }
        }
        while out.len() < inputs.len() {
            out.push(Err("Meta gave no answer for this token".into()));
        }
        Ok(out)
    }

    /// `/{object}/insights` for `metrics` (every period each has when `period` is `None`), undecoded: decode it with
    /// [`decode`], into [`pulse_graph::wire::InsightsView`] to borrow from the body.
    pub async fn insights(
        &self,
        token: &Secret,
        object: &str,
        metrics: &[&str],
        period: Option<&str>,
        since: Option<i64>,
        until: Option<i64>,
    ) -> Result<Fetched<Vec<u8>>, CallError> {
        let mut params = vec![("metric", metrics.join(","))];
        if let Some(p) = period {
            params.push(("period", p.to_owned()));
        }
        if let Some(s) = since {
            params.push(("since", s.to_string()));
        }
        if let Some(u) = until {
            params.push(("until", u.to_string()));
        }
        self.send_raw(token, self.request(token, &format!("{object}/insights"), &params)).await
    }

    pub async fn published_posts(
        &self,
        token: &Secret,
        page: &str,
        fields: &str,
        since: i64,
        until: i64,
        limit: u32,
    ) -> Result<Fetched<PostsResponse>, CallError> {
        let params = vec![
            ("fields", fields.to_owned()),
            ("since", since.to_string()),
            ("until", until.to_string()),
            ("limit", limit.to_string()),
        ];
        self.get(token, &format!("{page}/published_posts"), &params).await
    }

    pub async fn page(&self, token: &Secret, page: &str, fields: &str) -> Result<Fetched<PageObject>, CallError> {
        self.get(token, page, &[("fields", fields.to_owned())]).await
    }
}
