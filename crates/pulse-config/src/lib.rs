//! `pulse.toml`: tenants, practices, pages and where their tokens are kept, the store, and the Graph API settings.
//!
//! Every struct denies unknown fields, so a misspelt key is an error naming the file, line and field rather than a
//! silently ignored setting. Semantic problems (a bad practice code, a duplicate page) are collected and reported
//! together, each with its line. Secrets are referenced, never written inline: see [`secret`].

mod model;
mod practices_csv;
pub mod schedule;
pub mod secret;
pub mod tenancy;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod topics;

use std::fmt;
use std::path::{Path, PathBuf};

pub use model::{
    CampaignConfig, ClickHouseConfig, Config, DigestConfig, ExportProjectConfig, GraphConfig, MIN_PROJECT_KEY_BYTES,
    OidcConfig, OidcGrant, OnboardingConfig, PageConfig, PracticeConfig, SchedulerConfig, ServerConfig, SmtpConfig,
    SmtpSecurity, StoreBackend, StoreConfig, SubscriptionConfig, TenantConfig, VaultConfig, is_loopback,
    oidc_url_allowed, plausible_email, real_date,
};
pub use secret::{Secret, SecretError, SecretRef};
pub use tenancy::{Access, AccessDenied, Principal, TenantScope, WriteScope};
pub use topics::TopicConfig;

/// A problem at a place in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    pub path: PathBuf,
    /// 1-based; 0 when the problem is not tied to one line.
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.column) {
            (0, _) => write!(f, "{}: {}", self.path.display(), self.message),
            (l, 0) => write!(f, "{}:{l}: {}", self.path.display(), self.message),
            (l, c) => write!(f, "{}:{l}:{c}: {}", self.path.display(), self.message),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file `{}`: {source}; pass --config <file> or copy pulse.example.toml", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{}", render_issues(.0))]
    Invalid(Vec<Issue>),
}

fn render_issues(issues: &[Issue]) -> String {
    let mut out =
        format!("the configuration has {} problem{}:", issues.len(), if issues.len() == 1 { "" } else { "s" });
    for issue in issues {
        out.push_str("\n  ");
        out.push_str(&issue.to_string());
    }
    out
}

impl ConfigError {
    pub fn issues(&self) -> &[Issue] {
        match self {
            ConfigError::Invalid(issues) => issues,
            ConfigError::Read { .. } => &[],
        }
    }
}

/// Reads and validates a config file. Relative paths inside it (practices CSV, secrets files, the lake directory)
/// are resolved against the file's directory.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
    parse(&text, path)
}

/// Parses config text as if it were read from `path`.
pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
    model::parse(text, path)
}

pub(crate) use pulse_domain::text::line_col;
