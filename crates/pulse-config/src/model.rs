//! The config file's shape (every field documented: the comments are the user documentation) and its validation.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use crate::Access;
use pulse_domain::{ApiVersion, PageId, PageKind, PracticeCode, TenantId};
use serde::Deserialize;
use toml::Spanned;

use crate::secret::{Secret, SecretError, SecretRef};
use crate::{ConfigError, Issue, line_col, practices_csv};

/// The whole `pulse.toml`, validated. Relative paths are already resolved against the file's directory.
#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    pub store: StoreConfig,
    pub graph: GraphConfig,
    pub tenants: Vec<TenantConfig>,
    /// Campaigns to measure (`pulse jobs run` computes their uplift).
    pub campaigns: Vec<CampaignConfig>,
    /// Topic dictionaries for the posting analyses (`[[topic]]`), added to the defaults (see `topics::for_tenant`).
    pub topics: Vec<crate::TopicConfig>,
    /// NHS Digital's "Patients Registered at a GP Practice" CSV (practice level), resolved path.
    pub registered_patients_csv: Option<PathBuf>,
    /// The analyst service (`pulse serve`).
    pub server: ServerConfig,
    /// Research export projects: each pseudonymises with its own key.
    pub export_projects: Vec<ExportProjectConfig>,
    /// The daemon's schedules (`pulse run`).
    pub scheduler: SchedulerConfig,
    /// The mail server digests are sent through.
    pub smtp: Option<SmtpConfig>,
    /// Digest settings shared by every list.
    pub digest: DigestConfig,
    /// Digest lists: who gets which tenant's weekly digest.
    pub subscriptions: Vec<SubscriptionConfig>,
    /// The token vault: page tokens kept in the store, encrypted (`None`: tokens only from secret references).
    pub vault: Option<VaultConfig>,
    /// Connecting practices' pages through invitations and Facebook Login.
    pub onboarding: Option<OnboardingConfig>,
}

/// `[vault]`: page access tokens kept in the store, sealed with AES-256-GCM under `key` (32 bytes, written as 64 hex
/// digits: `pulse vault new-key` makes one). `previous_keys` still open what was sealed before a rotation, until
/// `pulse vault rotate` has sealed everything again under `key`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaultConfig {
    pub key: SecretRef,
    #[serde(default)]
    pub previous_keys: Vec<SecretRef>,
}

/// `[onboarding]`: invitations a tenant's admin sends to practice managers, who connect their page through Facebook
/// Login. Needs `[graph] app_id` and `app_secret` (the Meta app) and a `[vault]` for the tokens.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnboardingConfig {
    /// Where invitation links point: this service's public address, such as `https://pulse.example.nhs.uk`.
    pub public_url: String,
    /// Facebook Login's dialog host. Default `https://www.facebook.com`; the simulator's address in tests.
    #[serde(default = "default_dialog_url")]
    pub dialog_url: String,
    /// Days an invitation stays valid. Default 14.
    #[serde(default = "default_invitation_days")]
    pub invitation_days: u32,
}

fn default_dialog_url() -> String {
    "https://www.facebook.com".into()
}

fn default_invitation_days() -> u32 {
    14
}

impl OnboardingConfig {
    /// The callback Facebook Login returns to (register it as a valid OAuth redirect URI in the Meta app).
    pub fn redirect_url(&self) -> String {
        format!("{}/connect/callback", self.public_url.trim_end_matches('/'))
    }
}

/// `[scheduler]`: what `pulse run` does and when. Cron expressions have five fields (minute hour day-of-month month
/// day-of-week, `MON`..`SUN` or 0-7) and are read in `timezone`; an empty expression turns that job off.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchedulerConfig {
    /// IANA time zone the expressions are read in. Default `Europe/London` (GMT in winter, BST in summer).
    #[serde(default = "default_timezone")]
    pub timezone: String,
    /// Incremental ingest of every tenant, then its pipelines. Default daily at 09:30 (after Meta closes the
    /// previous Pacific day: 08:00 London most of the year).
    #[serde(default = "default_ingest_cron")]
    pub ingest: String,
    /// Weekly digests for the week just ended (Monday to Sunday). Default Monday 08:00.
    #[serde(default = "default_digest_cron")]
    pub digest: String,
    /// A run missed while the daemon was down is run once when it starts (not once per missed tick). Default true.
    #[serde(default = "default_true")]
    pub catch_up: bool,
    /// A job's lease lasts this long and is renewed while it runs; a crashed daemon's lease lapses after it. Default 10.
    #[serde(default = "default_lease_minutes")]
    pub lease_minutes: u32,
}

fn default_timezone() -> String {
    "Europe/London".into()
}

fn default_ingest_cron() -> String {
    "30 9 * * *".into()
}

fn default_digest_cron() -> String {
    "0 8 * * MON".into()
}

fn default_true() -> bool {
    true
}

fn default_lease_minutes() -> u32 {
    10
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            timezone: default_timezone(),
            ingest: default_ingest_cron(),
            digest: default_digest_cron(),
            catch_up: true,
            lease_minutes: default_lease_minutes(),
        }
    }
}

impl SchedulerConfig {
    /// The time zone, parsed (validated when the config is read).
    pub fn tz(&self) -> chrono_tz::Tz {
        self.timezone.parse().unwrap_or(chrono_tz::Europe::London)
    }
}

/// How to talk to the mail server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpSecurity {
    /// Plain connection upgraded with STARTTLS (port 587); refused if the server does not offer it.
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No encryption: only to a server on this machine (a local relay or a test sink).
    None,
}

/// `[smtp]`: the mail server digests go through.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    pub host: String,
    /// Default 587 (starttls), 465 (tls), 25 (none).
    pub port: Option<u16>,
    #[serde(default = "default_security")]
    pub security: SmtpSecurity,
    /// Login name; with it, `password` as a secret reference.
    pub user: Option<String>,
    pub password: Option<SecretRef>,
    /// The From address, such as `Practice Pulse <digests@example.nhs.uk>`.
    pub from: String,
    /// Seconds to wait for the server on each step. Default 30.
    #[serde(default = "default_smtp_timeout")]
    pub timeout_secs: u64,
    /// Allow `security = "none"` to a host that is not this machine (a sink on a private network, such as
    /// docker-compose's mailpit). Never for a real mail server. Default false.
    #[serde(default)]
    pub allow_unencrypted: bool,
}

fn default_security() -> SmtpSecurity {
    SmtpSecurity::Starttls
}

fn default_smtp_timeout() -> u64 {
    30
}

impl SmtpConfig {
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(match self.security {
            SmtpSecurity::Starttls => 587,
            SmtpSecurity::Tls => 465,
            SmtpSecurity::None => 25,
        })
    }
}

/// `[digest]`: settings shared by every digest list.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DigestConfig {
    /// The dashboard's public address, for links and the unsubscribe link. Default `http://127.0.0.1:8080`.
    #[serde(default = "default_dashboard_url")]
    pub dashboard_url: String,
    /// Signs unsubscribe links (a secret reference). Without it, digests carry no unsubscribe link and are refused.
    pub link_secret: Option<SecretRef>,
    /// A recipient the mail server defers ("try later") is tried again, with backoff, until the list's next weekly
    /// digest is due; set this to give up sooner, after this many attempts. Default: unset.
    #[serde(default)]
    pub max_attempts: Option<u32>,
    /// First retry after this many minutes, doubling each time. Default 5.
    #[serde(default = "default_backoff")]
    pub retry_after_minutes: u32,
}

fn default_dashboard_url() -> String {
    "http://127.0.0.1:8080".into()
}

fn default_backoff() -> u32 {
    5
}

impl Default for DigestConfig {
    fn default() -> Self {
        Self {
            dashboard_url: default_dashboard_url(),
            link_secret: None,
            max_attempts: None,
            retry_after_minutes: default_backoff(),
        }
    }
}

/// `[[subscription]]`: a digest list: one tenant's weekly digest to these people. Recipients can also be added and
/// removed through the API (`/api/v1/subscriptions`); people unsubscribe themselves from the link in each digest.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionConfig {
    /// Short name: letters, digits, `-` and `_`.
    pub name: String,
    pub tenant: TenantId,
    #[serde(default)]
    pub recipients: Vec<String>,
}

/// Whether `address` looks like a mailbox (`local@domain.tld`, no spaces or angle brackets).
pub fn plausible_email(address: &str) -> bool {
    let Some((local, domain)) = address.split_once('@') else { return false };
    !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && address.chars().all(|c| c.is_ascii_graphic() && !"<>()[],;:\\\"".contains(c))
        && !domain.contains('@')
}

/// `[[export_project]]`: a research project exports are made for. Its key pseudonymises identifiers (HMAC-SHA256):
/// the same key gives the same pseudonyms across its exports; different projects' cannot be linked.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportProjectConfig {
    /// Short name, used on the command line (`pulse export --project NAME`).
    pub name: String,
    /// Where the project's pseudonymisation key is kept (never in the package or the config file itself).
    pub key: SecretRef,
    /// The licence or data-sharing terms written into the package.
    #[serde(default = "default_licence")]
    pub licence: String,
    /// Replace practice codes with pseudonyms too (they are public; page and post ids always are).
    #[serde(default)]
    pub pseudonymise_practices: bool,
    /// The tenants the project's data-sharing agreement covers; an export for any other tenant is refused. Empty:
    /// any tenant the caller may read (`pulse config check` warns).
    #[serde(default)]
    pub tenants: Vec<String>,
}

fn default_licence() -> String {
    "Data-sharing agreement: use only as the agreement named in the package's purpose allows; no onward sharing".into()
}

/// `[server]`: the analyst service's HTTP API and dashboard.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on. Default `127.0.0.1:8080`; put a TLS-terminating proxy in front to serve beyond loopback.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// The API keys file (hashed keys, written by `pulse keys`), relative to this file. Default `pulse-keys.json`.
    #[serde(default = "default_keys_file")]
    pub keys_file: PathBuf,
    /// Requests per minute allowed per key (a burst of this many, refilled evenly). Default 600.
    #[serde(default = "default_rate_limit")]
    pub rate_limit_per_minute: u32,
    /// Milliseconds of the server's work per minute allowed per key, beside the request rate: requests that cost
    /// more (large uncached queries) use it up faster. Default 30000 (half a core).
    #[serde(default = "default_work_ms")]
    pub work_ms_per_minute: u32,
    /// Query answers kept in memory (keyed by tenant, query and data watermark). Default 1000.
    #[serde(default = "default_cache_entries")]
    pub cache_entries: usize,
    /// Megabytes of report slices kept in memory (each tenant's report as of its last jobs run), so a question not
    /// asked before is answered without reading the store. 0: none kept (ClickHouse then adds up weekly reach
    /// itself for each question). Default 256.
    #[serde(default = "default_report_cache_mb")]
    pub report_cache_mb: usize,
    /// Dashboard sessions last this many hours. Default 12.
    #[serde(default = "default_session_hours")]
    pub session_hours: u32,
    /// Set the cookie's `Secure` flag (when served over HTTPS through a proxy). Default false.
    #[serde(default)]
    pub secure_cookies: bool,
    /// Sign-in to the dashboard with the organisation's identity provider (OpenID Connect). Keys stay for the API.
    #[serde(default)]
    pub oidc: Option<OidcConfig>,
}

/// `[server.oidc]`: OpenID Connect sign-in (authorisation code flow with PKCE) against one issuer, such as NHSmail's
/// Microsoft Entra ID tenant (`https://login.microsoftonline.com/<directory id>/v2.0`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// The issuer: its `/.well-known/openid-configuration` is read, and ID tokens must name it as `iss`. https, or
    /// http on loopback only (a provider run locally for tests).
    pub issuer: String,
    /// The client (application) id registered with the provider.
    pub client_id: String,
    /// The client secret, for a confidential client (sent with HTTP Basic to the token endpoint). None: a public
    /// client, PKCE only.
    pub client_secret: Option<SecretRef>,
    /// This dashboard's callback as registered with the provider: `https://<host>/auth/oidc/callback`.
    pub redirect_url: String,
    /// Scopes asked for. Default `openid email profile`.
    #[serde(default = "default_oidc_scopes")]
    pub scopes: Vec<String>,
    /// What the sign-in button says: "Sign in with <label>". Default `your organisation`.
    #[serde(default = "default_oidc_label")]
    pub label: String,
    /// Who gets what: each grant whose claim matches gives its tenants and scopes; a person matching none is refused.
    #[serde(default, rename = "grant")]
    pub grants: Vec<OidcGrant>,
}

/// One rule from an ID token's claims to tenants and scopes: `claim = "groups", value = "<group id>"`,
/// `claim = "roles", value = "Pulse.Analyst"`, or `claim = "email_domain", value = "nhs.net"` (the part of a
/// verified `email` after `@`).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct OidcGrant {
    /// The claim's name; a claim holding a list matches when any item equals `value`. `email_domain` is derived.
    pub claim: String,
    pub value: String,
    /// Tenant ids this grant opens.
    pub tenants: Vec<String>,
    /// `read` (the dashboard), `export`, `admin` (several tenants). Default `read`.
    #[serde(default = "default_grant_scopes")]
    pub scopes: Vec<String>,
}

fn default_oidc_scopes() -> Vec<String> {
    ["openid", "email", "profile"].map(String::from).to_vec()
}

fn default_oidc_label() -> String {
    "your organisation".into()
}

fn default_grant_scopes() -> Vec<String> {
    vec!["read".into()]
}

/// Whether `url` may be an OpenID issuer or redirect: https, or http on a loopback host.
pub fn oidc_url_allowed(url: &str) -> bool {
    if url.starts_with("https://") {
        return true;
    }
    let Some(rest) = url.strip_prefix("http://") else { return false };
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = host.rsplit_once(':').map_or(host, |(h, port)| if port.parse::<u16>().is_ok() { h } else { host });
    is_loopback(host.trim_start_matches('[').trim_end_matches(']'))
}

fn default_listen() -> String {
    "127.0.0.1:8080".into()
}

fn default_keys_file() -> PathBuf {
    PathBuf::from("pulse-keys.json")
}

fn default_rate_limit() -> u32 {
    600
}

fn default_work_ms() -> u32 {
    30_000
}

fn default_cache_entries() -> usize {
    1000
}

fn default_report_cache_mb() -> usize {
    256
}

fn default_session_hours() -> u32 {
    12
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            keys_file: default_keys_file(),
            rate_limit_per_minute: default_rate_limit(),
            work_ms_per_minute: default_work_ms(),
            cache_entries: default_cache_entries(),
            report_cache_mb: default_report_cache_mb(),
            session_hours: default_session_hours(),
            secure_cookies: false,
            oidc: None,
        }
    }
}

/// `campaign.start`: a real calendar day, written YYYY-MM-DD; anything else is refused with the field named.
fn campaign_start<'de, D: serde::Deserializer<'de>>(d: D) -> Result<chrono::NaiveDate, D::Error> {
    let text = String::deserialize(d)?;
    real_date("start", &text).map_err(serde::de::Error::custom)
}

/// Parses `text` as a YYYY-MM-DD day, saying which field and why when it is not one.
pub fn real_date(field: &str, text: &str) -> Result<chrono::NaiveDate, String> {
    // ISO 8601 calendar dates only: four-digit year, two-digit month and day (chrono alone reads "18-03-01" as
    // the year 18).
    let b = text.as_bytes();
    let shaped = b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter().enumerate().all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
    if !shaped {
        return Err(format!("{field} `{text}` is not a date written YYYY-MM-DD (ISO 8601)"));
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(d);
    }
    let parts: Vec<&str> = text.split('-').collect();
    if let [y, m, day] = parts[..]
        && let (Ok(y), Ok(m), Ok(_)) = (y.parse::<i32>(), m.parse::<u32>(), day.parse::<u32>())
    {
        let why = match chrono::NaiveDate::from_ymd_opt(y, m, 1) {
            None => format!("there is no month {m}"),
            Some(first) => {
                let next = first.checked_add_months(chrono::Months::new(1)).unwrap_or(first);
                format!("{} {y} has {} days", first.format("%B"), (next - first).num_days())
            }
        };
        return Err(format!(
            "`{field}` = \"{text}\" is not a real date ({why}); write a day that exists, as YYYY-MM-DD"
        ));
    }
    Err(format!("`{field}` = \"{text}\" is not a date; write it as YYYY-MM-DD, e.g. 2018-03-10"))
}

/// A campaign: how its posts are recognised, and its window. Declared as `[[campaign]]` in the config, or registered
/// through the API and dashboard (kept in the tenant's journal, so it is also written).
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CampaignConfig {
    /// Name shown in reports.
    pub name: String,
    /// First day of the campaign window (Pacific time).
    #[serde(deserialize_with = "campaign_start")]
    pub start: chrono::NaiveDate,
    /// Length of the window in days (a weekend is 2).
    pub days: u32,
    /// Posts containing this hashtag (case-insensitive).
    pub hashtag: Option<String>,
    /// Posts containing or linking to this URL.
    pub link: Option<String>,
    /// Posts containing this text (case-insensitive).
    pub text: Option<String>,
    /// These post ids.
    #[serde(default)]
    pub posts: Vec<String>,
    /// Only posts of this type: video, photo, link or status.
    pub post_type: Option<String>,
    /// Only these tenants (default: every tenant).
    #[serde(default)]
    pub tenants: Vec<TenantId>,
}

impl CampaignConfig {
    /// What is wrong with the campaign on its own (its tenants are checked against a config elsewhere), each with
    /// the field at fault: exactly one way of matching posts, a window of at least a day, a known post type.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        let matchers = [self.hashtag.is_some(), self.link.is_some(), self.text.is_some(), !self.posts.is_empty()]
            .iter()
            .filter(|x| **x)
            .count();
        if matchers != 1 {
            out.push(("hashtag", "give exactly one of hashtag, link, text or posts".to_owned()));
        }
        if [&self.hashtag, &self.link, &self.text].iter().any(|m| m.as_ref().is_some_and(|m| m.trim().is_empty())) {
            out.push(("hashtag", "a hashtag, link or text to match must not be empty".to_owned()));
        }
        if self.days == 0 {
            out.push(("days", "days must be at least 1".to_owned()));
        }
        if let Some(t) = &self.post_type
            && !["video", "photo", "link", "status"].contains(&t.as_str())
        {
            out.push(("post_type", format!("post_type `{t}` is not one of video, photo, link or status")));
        }
        out
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreBackend {
    /// Parquet datasets in a local directory: nothing to install.
    #[default]
    Lake,
    /// A ClickHouse server, for real deployments and scale.
    Clickhouse,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// `lake` (default) or `clickhouse`.
    #[serde(default)]
    pub backend: StoreBackend,
    /// Directory of the embedded Parquet lake, relative to this file. Default `pulse-data`.
    #[serde(default = "default_lake_dir")]
    pub lake_dir: PathBuf,
    /// ClickHouse connection, required when `backend = "clickhouse"`.
    pub clickhouse: Option<ClickHouseConfig>,
}

fn default_lake_dir() -> PathBuf {
    PathBuf::from("pulse-data")
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self { backend: StoreBackend::Lake, lake_dir: default_lake_dir(), clickhouse: None }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClickHouseConfig {
    /// HTTP interface, such as `http://127.0.0.1:8123`. Credentials do not belong in the URL: use `user`/`password`.
    pub url: String,
    /// Database holding Practice Pulse's tables; `pulse migrate` creates it.
    #[serde(default = "default_database")]
    pub database: String,
    /// ClickHouse user. Default `default`.
    #[serde(default = "default_user")]
    pub user: String,
    /// Where the password is kept, if the user has one.
    pub password: Option<SecretRef>,
    /// Render the DDL for this cluster (`ON CLUSTER`, Replicated and Distributed engines). Empty: a single server.
    #[serde(default)]
    pub cluster: Option<String>,
    /// On a cluster, each tenant's rows are read and written on the replicas of its shard, over HTTP. A replica's
    /// HTTP address is its host (from `system.clusters`) with the scheme and port of `url`, unless listed here by
    /// its `host:tcp_port` as the cluster definition names it: `"10.0.0.5:9000" = "https://ch-5.internal:8443"`.
    #[serde(default)]
    pub replica_urls: std::collections::BTreeMap<String, String>,
    /// A coordination service for the scheduler's and senders' leases: ZooKeeper or ClickHouse Keeper,
    /// `host:port` (comma-separated for an ensemble), typically the one the cluster already uses. With it a lease is
    /// an ephemeral node, decided at once and freed when its holder's process dies; without it, leases are rows in
    /// ClickHouse settled by waiting. Every process of a deployment must use the same setting.
    #[serde(default)]
    pub zookeeper: Option<String>,
}

fn default_database() -> String {
    "pulse".into()
}

fn default_user() -> String {
    "default".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GraphConfig {
    /// Base URL of the Graph API, or of `pulse sim`. Default `https://graph.facebook.com`.
    #[serde(default = "default_base_url")]
    pub base_url: String,
    /// API version to call, such as `v25.0`. Decides which metric names the catalogue asks for.
    #[serde(default = "default_version")]
    pub version: ApiVersion,
    /// Where the app secret is kept, when the app requires `appsecret_proof` (and for Facebook Login and
    /// `debug_token`).
    pub app_secret: Option<SecretRef>,
    /// The Meta app's id (Facebook Login and `debug_token` need it).
    #[serde(default)]
    pub app_id: Option<String>,
}

fn default_base_url() -> String {
    "https://graph.facebook.com".into()
}

fn default_version() -> ApiVersion {
    ApiVersion::new(25, 0)
}

impl Default for GraphConfig {
    fn default() -> Self {
        Self { base_url: default_base_url(), version: default_version(), app_secret: None, app_id: None }
    }
}

/// A tenant: an organisation whose analysts see only their own practices.
#[derive(Debug, Clone)]
pub struct TenantConfig {
    pub id: TenantId,
    pub name: String,
    pub practices: Vec<PracticeConfig>,
    /// The tenant takes part in peer benchmarks: its practices' rates join the national deciles (never as rows
    /// another tenant can see), and its analysts see their practices against them. Off unless set.
    pub benchmark: bool,
    /// The tenant takes part in the national donor pool: its pages' daily figures join other tenants' campaign
    /// counterfactuals as sums over whole tenants only (at least 10 pages each, 3 tenants on any day), and its own
    /// campaigns may use the pool in turn. Off unless set.
    pub donor_pool: bool,
}

#[derive(Debug, Clone)]
pub struct PracticeConfig {
    pub code: PracticeCode,
    pub name: String,
    /// Registered patients, when known.
    pub list_size: Option<u32>,
    pub pages: Vec<PageConfig>,
}

#[derive(Debug, Clone)]
pub struct PageConfig {
    pub id: PageId,
    pub kind: PageKind,
    /// Where the page access token is kept; `None` means the page cannot be ingested yet.
    pub token: Option<SecretRef>,
    /// Where this page was declared (for messages).
    pub declared_at: String,
}

impl Config {
    /// The directory relative paths were resolved against.
    pub fn base_dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }

    /// The operator's access to this deployment's tenants (whoever holds the config file). Analyst and admin
    /// access are narrowed from it ([`Access::analyst`], [`Access::admin`]).
    pub fn operator_access(&self) -> Access {
        Access::operator(self.tenants.iter().map(|t| t.id.clone()))
    }

    pub fn tenant(&self, id: &TenantId) -> Option<&TenantConfig> {
        self.tenants.iter().find(|t| &t.id == id)
    }

    /// Resolves a secret reference from this config.
    pub fn resolve(&self, secret: &SecretRef) -> Result<Secret, SecretError> {
        secret.resolve(self.base_dir())
    }
}

// ----- raw file shape -------------------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    /// Where facts and reports are kept.
    #[serde(default)]
    store: StoreConfig,
    /// The Graph API (or simulator) to ingest from.
    #[serde(default)]
    graph: GraphConfig,
    /// The tenants, each with its practices.
    #[serde(default)]
    tenant: Vec<RawTenant>,
    /// Campaigns to measure.
    #[serde(default)]
    campaign: Vec<Spanned<CampaignConfig>>,
    /// Topic dictionaries.
    #[serde(default)]
    topic: Vec<Spanned<crate::TopicConfig>>,
    /// NHS Digital's practice-level registered-patients CSV, relative to this file.
    registered_patients_csv: Option<PathBuf>,
    /// The analyst service.
    #[serde(default)]
    server: ServerConfig,
    /// Research export projects.
    #[serde(default)]
    export_project: Vec<ExportProjectConfig>,
    /// The daemon's schedules.
    #[serde(default)]
    scheduler: SchedulerConfig,
    /// The mail server for digests.
    smtp: Option<SmtpConfig>,
    /// Digest settings.
    #[serde(default)]
    digest: DigestConfig,
    /// Digest lists.
    #[serde(default)]
    subscription: Vec<SubscriptionConfig>,
    /// The token vault.
    vault: Option<VaultConfig>,
    /// Invitations and Facebook Login.
    onboarding: Option<OnboardingConfig>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTenant {
    /// Slug used in paths and queries, such as `north-staffs`.
    id: Spanned<String>,
    /// Display name, such as `North Staffordshire CCG`.
    name: String,
    /// A CSV of practices (and optionally their pages), relative to this file.
    practices_csv: Option<Spanned<PathBuf>>,
    /// Practices declared inline.
    #[serde(default)]
    practice: Vec<RawPractice>,
    /// Opts the tenant in to peer benchmarks.
    #[serde(default)]
    benchmark: bool,
    /// Opts the tenant in to the national donor pool.
    #[serde(default)]
    donor_pool: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPractice {
    /// ODS code: one letter and five digits.
    code: Spanned<String>,
    name: String,
    /// Registered patients.
    list_size: Option<u32>,
    #[serde(default)]
    page: Vec<RawPage>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPage {
    /// The Facebook page id.
    id: Spanned<String>,
    /// `official` (default) or `claimed`.
    #[serde(default)]
    kind: PageKind,
    /// Where the page access token is kept.
    token: Option<Spanned<SecretRef>>,
}

pub(crate) fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
    let raw: RawConfig = toml::from_str(text).map_err(|e| {
        let (line, column) = e.span().map_or((0, 0), |s| line_col(text, s.start));
        ConfigError::Invalid(vec![Issue {
            path: path.to_owned(),
            line,
            column,
            message: e.message().trim().to_owned(),
        }])
    })?;
    let mut p = Problems { text, path, issues: Vec::new() };
    let base = path.parent().unwrap_or(Path::new(".")).to_owned();
    let mut store = raw.store;
    store.lake_dir = base.join(&store.lake_dir);
    let mut server = raw.server;
    server.keys_file = base.join(&server.keys_file);
    check_store_and_server(&store, &server, &mut p);
    let tenants = tenants_of(raw.tenant, &base, &mut p);
    if let Some(oidc) = &server.oidc {
        check_oidc(oidc, server.secure_cookies, &tenants, &mut p);
    }
    let campaigns = campaigns_of(raw.campaign, &tenants, &mut p);
    let topics = topics_of(raw.topic, &tenants, &mut p);
    let scheduler = raw.scheduler;
    check_schedules_and_mail(&scheduler, raw.smtp.as_ref(), &raw.digest, &raw.subscription, &tenants, &mut p);
    if !p.issues.is_empty() {
        return Err(ConfigError::Invalid(p.issues));
    }
    check_vault_and_onboarding(raw.vault.as_ref(), raw.onboarding.as_ref(), &raw.graph, &mut p);
    if !p.issues.is_empty() {
        return Err(ConfigError::Invalid(p.issues));
    }
    let registered_patients_csv = raw.registered_patients_csv.map(|p| base.join(p));
    Ok(Config {
        path: path.to_owned(),
        store,
        graph: raw.graph,
        tenants,
        campaigns,
        topics,
        registered_patients_csv,
        server,
        export_projects: raw.export_project,
        scheduler,
        smtp: raw.smtp,
        digest: raw.digest,
        subscriptions: raw.subscription,
        vault: raw.vault,
        onboarding: raw.onboarding,
    })
}

/// The vault's key references are well formed; onboarding has the app, a vault and an address browsers can reach.
fn check_vault_and_onboarding(
    vault: Option<&VaultConfig>,
    onboarding: Option<&OnboardingConfig>,
    graph: &GraphConfig,
    p: &mut Problems<'_>,
) {
    if let Some(v) = vault {
        for (i, r) in std::iter::once(&v.key).chain(&v.previous_keys).enumerate() {
            if let Some(problem) = r.shape_problem() {
                let name = if i == 0 { "vault.key".to_owned() } else { format!("vault.previous_keys[{}]", i - 1) };
                p.whole(format!("{name}: {problem}"));
            }
        }
    }
    let Some(o) = onboarding else { return };
    if vault.is_none() {
        p.whole("[onboarding] needs a [vault] to keep the page tokens it receives: add `[vault] key = { env = \"PULSE_VAULT_KEY\" }` (`pulse vault new-key` makes a key)".into());
    }
    if graph.app_id.as_deref().is_none_or(|id| id.trim().is_empty()) || graph.app_secret.is_none() {
        p.whole("[onboarding] needs the Meta app: set [graph] app_id and app_secret (App settings > Basic in the Meta app dashboard)".into());
    }
    for (name, url) in [("public_url", &o.public_url), ("dialog_url", &o.dialog_url)] {
        if !oidc_url_allowed(url) || url.contains('@') {
            p.whole(format!(
                "onboarding.{name} `{url}` must be an https URL without credentials (http only on 127.0.0.1 or localhost, for tests)"
            ));
        }
    }
    if o.invitation_days == 0 || o.invitation_days > 90 {
        p.whole(format!("onboarding.invitation_days is {}: give 1 to 90 days", o.invitation_days));
    }
}

/// The problems found in one config file, each at its place.
struct Problems<'a> {
    text: &'a str,
    path: &'a Path,
    issues: Vec<Issue>,
}

impl Problems<'_> {
    /// A problem at a place in the file.
    fn at(&mut self, span: std::ops::Range<usize>, message: String) {
        let (line, column) = line_col(self.text, span.start);
        self.issues.push(Issue { path: self.path.to_owned(), line, column, message });
    }

    /// A problem with the file as a whole (or a setting without a place of its own).
    fn whole(&mut self, message: String) {
        self.issues.push(Issue { path: self.path.to_owned(), line: 0, column: 0, message });
    }
}

/// OpenID Connect sign-in: URLs a browser and the server can trust, and grants naming real tenants and scopes.
fn check_oidc(oidc: &OidcConfig, secure_cookies: bool, tenants: &[TenantConfig], p: &mut Problems<'_>) {
    if oidc.redirect_url.starts_with("https://") && !secure_cookies {
        p.whole(
            "server.oidc.redirect_url is https, so the dashboard is served over https: set server.secure_cookies = true \
             (session and sign-in cookies must not travel over plain http)"
                .into(),
        );
    }
    for (name, url) in [("issuer", &oidc.issuer), ("redirect_url", &oidc.redirect_url)] {
        if !oidc_url_allowed(url) || url.contains('@') {
            p.whole(format!(
                "server.oidc.{name} `{url}` must be an https URL without credentials (http only on 127.0.0.1 or \
                 localhost, for a provider run locally)"
            ));
        }
    }
    if !oidc.redirect_url.ends_with("/auth/oidc/callback") {
        p.whole(format!(
            "server.oidc.redirect_url `{}` must end with /auth/oidc/callback (the dashboard's callback; register the \
             same URL with the provider)",
            oidc.redirect_url
        ));
    }
    if oidc.client_id.trim().is_empty() {
        p.whole("server.oidc.client_id is empty: give the client (application) id registered with the provider".into());
    }
    if let Some(problem) = oidc.client_secret.as_ref().and_then(SecretRef::shape_problem) {
        p.whole(format!("server.oidc.client_secret: {problem}"));
    }
    if !oidc.scopes.iter().any(|s| s == "openid") {
        p.whole("server.oidc.scopes must include `openid`".into());
    }
    if oidc.grants.is_empty() {
        p.whole(
            "server.oidc has no [[server.oidc.grant]]: nobody could sign in; add a grant from a claim (groups, roles, \
             email_domain) to tenants"
                .into(),
        );
    }
    for (i, g) in oidc.grants.iter().enumerate() {
        if g.claim.is_empty() || g.value.is_empty() {
            p.whole(format!("server.oidc.grant[{i}] needs a `claim` and a `value`"));
        }
        if g.tenants.is_empty() {
            p.whole(format!("server.oidc.grant[{i}] opens no tenant: list them in `tenants`"));
        }
        for t in g.tenants.iter().filter(|t| !tenants.iter().any(|x| x.id.as_str() == t.as_str())) {
            p.whole(format!("server.oidc.grant[{i}] names tenant `{t}`, which is not configured"));
        }
        for s in g.scopes.iter().filter(|s| !["read", "export", "admin"].contains(&s.as_str())) {
            p.whole(format!("server.oidc.grant[{i}] scope `{s}` is not one of read, export, admin"));
        }
        if !g.scopes.iter().any(|s| s == "read") {
            p.whole(format!("server.oidc.grant[{i}] needs the `read` scope to open the dashboard"));
        }
        if g.tenants.len() > 1 && !g.scopes.iter().any(|s| s == "admin") {
            p.whole(format!(
                "server.oidc.grant[{i}] opens several tenants: add the `admin` scope (as a key for several tenants \
                 has), or make one grant per tenant"
            ));
        }
        if g.claim == "email_domain" && !g.value.is_ascii() {
            p.whole(format!("server.oidc.grant[{i}] email_domain `{}` must be ASCII (punycode)", g.value));
        }
    }
}

/// The store's and the analyst service's settings.
fn check_store_and_server(store: &StoreConfig, server: &ServerConfig, p: &mut Problems<'_>) {
    if server.rate_limit_per_minute == 0 {
        p.whole("server.rate_limit_per_minute must be at least 1".into());
    }
    if store.backend == StoreBackend::Clickhouse && store.clickhouse.is_none() {
        p.whole("store.backend is `clickhouse` but there is no [store.clickhouse] section with a url".into());
    }
    if let Some(ch) = &store.clickhouse {
        if ch.url.contains('@') {
            p.whole(
                "store.clickhouse.url must not carry credentials; use `user` and `password = { env = ... }`".into(),
            );
        }
        if !ch.database.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') || ch.database.is_empty() {
            p.whole(format!("store.clickhouse.database `{}` must be letters, digits and `_`", ch.database));
        }
        let cluster = ch.cluster.as_deref().filter(|c| !c.is_empty());
        if let Some(c) = cluster
            && !c.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            p.whole(format!(
                "store.clickhouse.cluster `{c}` must be a cluster name from the servers' <remote_servers> \
                     (letters, digits, `_`, `-`)"
            ));
        }
        for (address, url) in &ch.replica_urls {
            let message = if cluster.is_none() {
                "store.clickhouse.replica_urls is only used with `cluster`; remove it or name the cluster".to_owned()
            } else if !address.contains(':') {
                format!("store.clickhouse.replica_urls key `{address}` must be host:port as system.clusters names it")
            } else if !(url.starts_with("http://") || url.starts_with("https://")) || url.contains('@') {
                format!(
                    "store.clickhouse.replica_urls `{address}` = `{url}` must be an http(s) URL without credentials"
                )
            } else {
                continue;
            };
            p.whole(message);
        }
        if let Some(servers) = &ch.zookeeper {
            let bad: Vec<&str> = servers
                .split(',')
                .map(str::trim)
                .filter(|s| {
                    let Some((host, port)) = s.rsplit_once(':') else { return true };
                    host.is_empty() || host.contains('/') || host.contains('@') || port.parse::<u16>().is_err()
                })
                .collect();
            if servers.trim().is_empty() || !bad.is_empty() {
                p.whole(format!(
                    "store.clickhouse.zookeeper `{servers}` must be host:port, comma-separated for an ensemble \
                         (such as \"zk-1:2181,zk-2:2181\"), without a path or credentials"
                ));
            }
        }
    }
}

/// The tenants with their practices and pages (from the file and each tenant's practices CSV): ids valid, none
/// declared twice, every page's token a reference of the right shape.
fn tenants_of(raw: Vec<RawTenant>, base: &Path, p: &mut Problems<'_>) -> Vec<TenantConfig> {
    let mut tenants = Vec::new();
    let mut seen_tenants: HashMap<String, usize> = HashMap::new();
    let mut seen_practices: HashMap<PracticeCode, String> = HashMap::new();
    let mut seen_pages: HashMap<PageId, String> = HashMap::new();

    for raw_tenant in raw {
        let span = raw_tenant.id.span();
        let id = match TenantId::new(raw_tenant.id.get_ref().clone()) {
            Ok(id) => id,
            Err(e) => {
                p.at(span, e.to_string());
                continue;
            }
        };
        let (line, _) = line_col(p.text, span.start);
        if let Some(first) = seen_tenants.insert(id.to_string(), line) {
            p.at(span, format!("tenant `{id}` is declared twice (first at line {first})"));
        }
        let mut practices = Vec::new();
        for rp in raw_tenant.practice {
            let code_span = rp.code.span();
            let code = match PracticeCode::new(rp.code.get_ref().clone()) {
                Ok(c) => c,
                Err(e) => {
                    p.at(code_span, e.to_string());
                    continue;
                }
            };
            let mut pages = Vec::new();
            for page in rp.page {
                let page_span = page.id.span();
                let page_id = match PageId::new(page.id.get_ref().clone()) {
                    Ok(p) => p,
                    Err(e) => {
                        p.at(page_span, e.to_string());
                        continue;
                    }
                };
                let token = match page.token {
                    Some(t) => {
                        if let Some(problem) = t.get_ref().shape_problem() {
                            p.at(t.span(), format!("page {page_id} token: {problem}"));
                        }
                        Some(t.into_inner())
                    }
                    None => None,
                };
                let (line, _) = line_col(p.text, page_span.start);
                pages.push(PageConfig {
                    id: page_id,
                    kind: page.kind,
                    token,
                    declared_at: format!("{}:{line}", p.path.display()),
                });
            }
            let (line, _) = line_col(p.text, code_span.start);
            practices.push((
                PracticeConfig { code, name: rp.name, list_size: rp.list_size, pages },
                format!("{}:{line}", p.path.display()),
            ));
        }
        if let Some(csv) = raw_tenant.practices_csv {
            let csv_path = base.join(csv.get_ref());
            match practices_csv::read(&csv_path) {
                Ok((rows, mut csv_issues)) => {
                    p.issues.append(&mut csv_issues);
                    practices.extend(rows);
                }
                Err(e) => p.at(csv.span(), format!("practices_csv `{}`: {e}", csv_path.display())),
            }
        }
        for (practice, declared_at) in &practices {
            if let Some(first) = seen_practices.insert(practice.code.clone(), declared_at.clone()) {
                p.whole(format!(
                    "practice {} is declared at {declared_at} and at {first}; a practice belongs to one tenant",
                    practice.code
                ));
            }
            for page in &practice.pages {
                if let Some(first) = seen_pages.insert(page.id.clone(), page.declared_at.clone()) {
                    p.whole(format!("page {} is declared at {} and at {first}", page.id, page.declared_at));
                }
            }
        }
        tenants.push(TenantConfig {
            id,
            name: raw_tenant.name,
            practices: practices.into_iter().map(|(p, _)| p).collect(),
            benchmark: raw_tenant.benchmark,
            donor_pool: raw_tenant.donor_pool,
        });
    }
    tenants
}

/// The campaigns: one way of matching posts each, at least a day long, for configured tenants.
fn campaigns_of(
    raw: Vec<Spanned<CampaignConfig>>,
    tenants: &[TenantConfig],
    p: &mut Problems<'_>,
) -> Vec<CampaignConfig> {
    let mut campaigns = Vec::new();
    for c in raw {
        let span = c.span();
        let c = c.into_inner();
        for (_, problem) in c.problems() {
            p.at(span.clone(), format!("campaign `{}`: {problem}", c.name));
        }
        if let Some(unknown) = c.tenants.iter().find(|t| !tenants.iter().any(|x: &TenantConfig| &x.id == *t)) {
            p.at(span, format!("campaign `{}`: unknown tenant `{unknown}`", c.name));
        }
        campaigns.push(c);
    }
    campaigns
}

/// The topic dictionaries: each well formed, for configured tenants, names unique among a tenant's topics.
fn topics_of(
    raw: Vec<Spanned<crate::TopicConfig>>,
    tenants: &[TenantConfig],
    p: &mut Problems<'_>,
) -> Vec<crate::TopicConfig> {
    if raw.len() > crate::topics::MAX_TOPICS {
        p.whole(format!("{} [[topic]] tables: at most {} are allowed", raw.len(), crate::topics::MAX_TOPICS));
    }
    let mut topics: Vec<crate::TopicConfig> = Vec::new();
    for t in raw {
        let span = t.span();
        let t = t.into_inner();
        for (field, problem) in t.problems() {
            p.at(span.clone(), format!("topic `{}`: {field}: {problem}", t.name));
        }
        if let Some(unknown) = t.tenants.iter().find(|x| !tenants.iter().any(|c: &TenantConfig| &c.id == *x)) {
            p.at(span.clone(), format!("topic `{}`: unknown tenant `{unknown}`", t.name));
        }
        let overlaps = |a: &crate::TopicConfig| {
            a.tenants.is_empty() || t.tenants.is_empty() || a.tenants.iter().any(|x| t.tenants.contains(x))
        };
        if topics.iter().any(|a| a.name.eq_ignore_ascii_case(&t.name) && overlaps(a)) {
            p.at(span, format!("topic `{}` is declared twice for a tenant: give each topic its own name", t.name));
        }
        topics.push(t);
    }
    topics
}

/// The daemon's schedules, the mail server, the digests' link secret and the subscription lists.
fn check_schedules_and_mail(
    scheduler: &SchedulerConfig,
    smtp: Option<&SmtpConfig>,
    digest: &DigestConfig,
    subscriptions: &[SubscriptionConfig],
    tenants: &[TenantConfig],
    p: &mut Problems<'_>,
) {
    if scheduler.timezone.parse::<chrono_tz::Tz>().is_err() {
        p.whole(format!(
            "scheduler.timezone `{}` is not an IANA time zone; write one such as `Europe/London`",
            scheduler.timezone
        ));
    }
    for (field, expr) in [("ingest", &scheduler.ingest), ("digest", &scheduler.digest)] {
        if !expr.trim().is_empty()
            && let Err(e) = crate::schedule::parse(expr)
        {
            p.whole(format!("scheduler.{field} = \"{expr}\": {e}"));
        }
    }
    if scheduler.lease_minutes == 0 {
        p.whole("scheduler.lease_minutes must be at least 1".into());
    }
    if let Some(smtp) = smtp {
        if smtp.security == SmtpSecurity::None && !is_loopback(&smtp.host) && !smtp.allow_unencrypted {
            p.whole(format!(
                "smtp.security = \"none\" sends mail unencrypted; it is allowed only to this machine, not `{}`: use \"starttls\" or \"tls\" (or, for a sink on a private network, allow_unencrypted = true)",
                smtp.host
            ));
        }
        if smtp.user.is_some() != smtp.password.is_some() {
            p.whole("smtp: give `user` and `password` together, or neither".into());
        }
        if let Some(problem) = smtp.password.as_ref().and_then(SecretRef::shape_problem) {
            p.whole(format!("smtp.password: {problem}"));
        }
        if !smtp.from.contains('@') {
            p.whole(format!("smtp.from `{}` is not an address", smtp.from));
        }
    }
    if let Some(problem) = digest.link_secret.as_ref().and_then(SecretRef::shape_problem) {
        p.whole(format!("digest.link_secret: {problem}"));
    }
    let mut lists = std::collections::HashSet::new();
    for sub in subscriptions {
        if sub.name.is_empty() || !sub.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            p.whole(format!("subscription `{}`: a name is letters, digits, `-` and `_`", sub.name));
        }
        if !lists.insert(sub.name.clone()) {
            p.whole(format!("subscription `{}` is declared twice", sub.name));
        }
        if !tenants.iter().any(|t| t.id == sub.tenant) {
            p.whole(format!("subscription `{}`: unknown tenant `{}`", sub.name, sub.tenant));
        }
        for r in sub.recipients.iter().filter(|r| !plausible_email(r)) {
            p.whole(format!("subscription `{}`: `{r}` is not an email address", sub.name));
        }
    }
}

/// Whether a host name is this machine (`localhost`, `127.x`, `::1`).
pub fn is_loopback(host: &str) -> bool {
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// What `pulse config check` prints: counts, and pages that cannot be ingested, with no secret in it.
#[derive(Debug, Clone)]
pub struct Summary {
    pub tenants: Vec<TenantSummary>,
    pub store: String,
    pub graph: String,
    /// Each export project: (name, what `config check` says of it, whether that is a refusal).
    pub export_projects: Vec<(String, String, bool)>,
    /// Mail, digest schedule and lists, and the dashboard's sign-in, a line each.
    pub digests: Vec<String>,
    /// What looks wrong but does not make the config invalid.
    pub warnings: Vec<String>,
}

/// The shortest export project key accepted: an HMAC-SHA256 key of fewer than 32 bytes can be brute-forced, and
/// with it every pseudonym reversed against the public list of practice codes.
pub const MIN_PROJECT_KEY_BYTES: usize = 32;

#[derive(Debug, Clone)]
pub struct TenantSummary {
    pub id: String,
    pub name: String,
    pub practices: usize,
    pub practices_without_pages: usize,
    pub pages: usize,
    pub claimed_pages: usize,
    /// (page id, practice code, why the token is unavailable)
    pub pages_without_tokens: Vec<(String, String, String)>,
}

impl Summary {
    /// What `config check --strict` refuses: a config with nothing to ingest (no tenant, a tenant without practices,
    /// pages without a usable token), each with what to do.
    pub fn strict_problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.tenants.is_empty() {
            out.push(
                "no tenant is configured: add a [[tenant]] table with its practices (config/pulse.example.toml shows one)"
                    .to_owned(),
            );
        }
        for t in &self.tenants {
            if t.practices == 0 {
                out.push(format!(
                    "tenant {} has no practices: add [[tenant.practice]] tables or a practices_csv file",
                    t.id
                ));
            }
            for (page, practice, why) in &t.pages_without_tokens {
                out.push(format!("tenant {} practice {practice} page {page}: no usable token ({why})", t.id));
            }
        }
        out
    }
}

impl Config {
    /// Summarises the config and checks that every token reference resolves (reading, never printing, secrets).
    pub fn summary(&self) -> Summary {
        let tenants = self
            .tenants
            .iter()
            .map(|t| {
                let mut pages_without_tokens = Vec::new();
                let mut kinds: BTreeMap<PageKind, usize> = BTreeMap::new();
                for p in &t.practices {
                    for page in &p.pages {
                        *kinds.entry(page.kind).or_default() += 1;
                        let why = match &page.token {
                            None => Some("no token reference".to_owned()),
                            Some(r) => self.resolve(r).err().map(|e| format!("{} ({})", e, r.describe())),
                        };
                        if let Some(why) = why {
                            pages_without_tokens.push((page.id.to_string(), p.code.to_string(), why));
                        }
                    }
                }
                TenantSummary {
                    id: t.id.to_string(),
                    name: t.name.clone(),
                    practices: t.practices.len(),
                    practices_without_pages: t.practices.iter().filter(|p| p.pages.is_empty()).count(),
                    pages: kinds.values().sum(),
                    claimed_pages: kinds.get(&PageKind::Claimed).copied().unwrap_or(0),
                    pages_without_tokens,
                }
            })
            .collect();
        let store = match self.store.backend {
            StoreBackend::Lake => format!("embedded lake at {}", self.store.lake_dir.display()),
            StoreBackend::Clickhouse => {
                let ch = self.store.clickhouse.as_ref().expect("validated");
                let mut s = format!("ClickHouse {} database `{}` as `{}`", ch.url, ch.database, ch.user);
                if let Some(c) = ch.cluster.as_deref().filter(|c| !c.is_empty()) {
                    s.push_str(&format!(" on cluster `{c}`"));
                }
                match ch.zookeeper.as_deref() {
                    Some(z) => s.push_str(&format!("; leases in ZooKeeper {z}")),
                    None => s.push_str("; leases in ClickHouse"),
                }
                s
            }
        };
        let graph = format!(
            "{} {} (appsecret_proof: {})",
            self.graph.base_url,
            self.graph.version,
            match &self.graph.app_secret {
                None => "off".to_owned(),
                Some(r) => match self.resolve(r) {
                    Ok(_) => format!("on, secret from {}", r.describe()),
                    Err(e) => format!("configured but unavailable: {e}"),
                },
            }
        );
        let export_projects = self
            .export_projects
            .iter()
            .map(|p| {
                let unknown: Vec<&str> = p
                    .tenants
                    .iter()
                    .filter(|t| !self.tenants.iter().any(|c| c.id.as_str() == t.as_str()))
                    .map(String::as_str)
                    .collect();
                let (text, refused) = match self.resolve(&p.key) {
                    Err(e) => (
                        format!("key unavailable here: {e} ({}); exports will fail until it is", p.key.describe()),
                        false,
                    ),
                    Ok(k) if k.expose().len() < MIN_PROJECT_KEY_BYTES => (
                        format!(
                            "key is {} bytes, need at least {MIN_PROJECT_KEY_BYTES} (`openssl rand -hex 32`); exports \
                             are refused",
                            k.expose().len()
                        ),
                        true,
                    ),
                    Ok(_) if !unknown.is_empty() => (format!("names unknown tenant(s) {}", unknown.join(", ")), true),
                    Ok(_) if p.tenants.is_empty() => (
                        "key ok; names no tenants, so any tenant the caller reads may export under it (set `tenants`)"
                            .to_owned(),
                        false,
                    ),
                    Ok(_) => (format!("key ok; tenants {}", p.tenants.join(", ")), false),
                };
                (p.name.clone(), text, refused)
            })
            .collect();
        let (mut digests, mut warnings) = self.digest_summary();
        if let Some(o) = &self.server.oidc {
            let secret = match &o.client_secret {
                None => "a public client (PKCE only)".to_owned(),
                Some(r) => match self.resolve(r) {
                    Ok(_) => format!("client secret from {}", r.describe()),
                    Err(e) => {
                        warnings.push(format!("server.oidc.client_secret cannot be read: {e}; sign-in will fail"));
                        format!("client secret from {} (unreadable)", r.describe())
                    }
                },
            };
            for (i, g) in o.grants.iter().enumerate().filter(|(_, g)| g.claim == "email_domain") {
                let national = if ["nhs.net", "nhs.uk"].contains(&g.value.to_ascii_lowercase().as_str()) {
                    " (a national domain: every NHSmail user in the country)"
                } else {
                    ""
                };
                warnings.push(format!(
                    "server.oidc.grant[{i}] lets in anyone at @{}{national} whose address the provider vouches for \
                     (email_verified, or Entra's optional claim xms_edov); a group or role is narrower",
                    g.value
                ));
            }
            digests.push(format!(
                "dashboard sign-in: {} as client {}, {secret}, {} grant(s); callback {}",
                o.issuer,
                o.client_id,
                o.grants.len(),
                o.redirect_url
            ));
        }
        Summary { tenants, store, graph, export_projects, digests, warnings }
    }

    /// What `config check` says of mail, digests and lists (no secret printed), and what looks wrong there.
    fn digest_summary(&self) -> (Vec<String>, Vec<String>) {
        let mut lines = Vec::new();
        let mut warnings = Vec::new();
        lines.push(match &self.smtp {
            None => "smtp: none (digests cannot be sent; `pulse digest preview` still works)".to_owned(),
            Some(s) => format!(
                "smtp: {}:{} security {}, from {}, login {}, every wait cut at {}s",
                s.host,
                s.port.map_or_else(|| "default".to_owned(), |p| p.to_string()),
                format!("{:?}", s.security).to_lowercase(),
                s.from,
                if s.user.is_some() { "yes" } else { "none" },
                s.timeout_secs
            ),
        });
        lines.push(format!(
            "digest: schedule `{}` ({}), links to {}, deferred recipients retried {} (first after {} min, doubling \
             up to 6 h), unsubscribe links {}",
            self.scheduler.digest,
            self.scheduler.timezone,
            self.digest.dashboard_url,
            match self.digest.max_attempts {
                Some(m) => format!("up to {m} attempts"),
                None => "until the next week's digest is due".to_owned(),
            },
            self.digest.retry_after_minutes,
            if self.digest.link_secret.is_some() { "signed" } else { "MISSING (no link secret: sends are refused)" }
        ));
        for sub in &self.subscriptions {
            lines.push(format!("list {} (tenant {}): {} recipient(s)", sub.name, sub.tenant, sub.recipients.len()));
        }
        if !self.subscriptions.is_empty() {
            let url = self.digest.dashboard_url.to_ascii_lowercase();
            let host = url.split("://").nth(1).unwrap_or("").split(['/', ':']).next().unwrap_or("");
            if ["localhost", "127.0.0.1", "[::1]", "0.0.0.0"].contains(&host) {
                warnings.push(format!(
                    "digest.dashboard_url is {} but lists are declared: recipients' links (and unsubscribe) would                      point at their own machine; set it to the dashboard's public https address",
                    self.digest.dashboard_url
                ));
            } else if !url.starts_with("https://") {
                warnings.push(format!(
                    "digest.dashboard_url {} is not https: mail clients offer one-click unsubscribe (RFC 8058) only                      over https, so the digests go without it",
                    self.digest.dashboard_url
                ));
            }
            if self.smtp.is_none() {
                warnings.push("lists are declared but there is no [smtp] section: nothing can be sent".into());
            }
            if self.digest.link_secret.is_none() {
                warnings.push("lists are declared but digest.link_secret is not set: sends are refused".into());
            }
        }
        (lines, warnings)
    }
}
