//! Secret references and the redacting [`Secret`] type.
//!
//! A config names where a secret is kept — `{ env = "PULSE_TOKEN_M83001" }` or
//! `{ file = "secrets/tokens.toml", key = "M83001" }` — and never the secret itself. A secrets file is a flat TOML
//! table of `key = "value"` lines, kept out of git (`/secrets/` and `*.secrets.toml` are ignored).

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Where a secret is kept.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretRef {
    /// Name of an environment variable holding the secret.
    pub env: Option<String>,
    /// A secrets file (flat TOML), relative to the config file.
    pub file: Option<PathBuf>,
    /// The key inside `file`.
    pub key: Option<String>,
}

/// A secret value. Its `Debug` and `Display` never show it; only [`Secret::expose`] does, at the point of use.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself. Call only where it is sent (a header, an HMAC), never to log or format.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("environment variable `{0}` is not set; export it before running pulse")]
    EnvMissing(String),
    #[error("environment variable `{0}` is empty")]
    EnvEmpty(String),
    #[error("cannot read secrets file `{path}`: {reason}")]
    FileUnreadable { path: String, reason: String },
    #[error("secrets file `{path}` has no key `{key}`; add `{key} = \"...\"` to it")]
    KeyMissing { path: String, key: String },
}

impl SecretRef {
    /// `None` when the reference is well formed, otherwise why not.
    pub fn shape_problem(&self) -> Option<&'static str> {
        match (&self.env, &self.file, &self.key) {
            (Some(e), None, None) if !e.is_empty() => None,
            (None, Some(_), Some(k)) if !k.is_empty() => None,
            (None, Some(_), None) => Some("a secrets `file` needs a `key`"),
            (None, None, Some(_)) => Some("a secret `key` needs a `file`"),
            (None, None, None) => Some("give either `env = \"VAR\"` or `file = \"...\"` with `key = \"...\"`"),
            _ => Some("give either `env = \"VAR\"` or `file` + `key`, not both"),
        }
    }

    /// Where the secret is, in words fit for a log (never the value).
    pub fn describe(&self) -> String {
        match (&self.env, &self.file, &self.key) {
            (Some(e), _, _) => format!("env {e}"),
            (None, Some(f), Some(k)) => format!("{}#{k}", f.display()),
            _ => "an incomplete reference".into(),
        }
    }

    /// Reads the secret. `base` is the directory relative file paths are resolved against.
    pub fn resolve(&self, base: &Path) -> Result<Secret, SecretError> {
        if let Some(var) = &self.env {
            return match std::env::var(var) {
                Ok(v) if v.is_empty() => Err(SecretError::EnvEmpty(var.clone())),
                Ok(v) => Ok(Secret(v)),
                Err(_) => Err(SecretError::EnvMissing(var.clone())),
            };
        }
        let (Some(file), Some(key)) = (&self.file, &self.key) else {
            return Err(SecretError::KeyMissing { path: "<none>".into(), key: "<none>".into() });
        };
        let path = base.join(file);
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(&path)
            .map_err(|e| SecretError::FileUnreadable { path: shown.clone(), reason: e.to_string() })?;
        // Parse errors from the toml crate quote the offending line, which may hold a secret: report only where.
        let table: toml::Table = toml::from_str(&text).map_err(|e| SecretError::FileUnreadable {
            path: shown.clone(),
            reason: match e.span() {
                Some(span) => {
                    format!("not a flat TOML table (problem at line {})", crate::line_col(&text, span.start).0)
                }
                None => "not a flat TOML table".into(),
            },
        })?;
        match table.get(key).and_then(|v| v.as_str()) {
            Some(v) if !v.is_empty() => Ok(Secret(v.to_owned())),
            _ => Err(SecretError::KeyMissing { path: shown, key: key.clone() }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_format() {
        let s = Secret::new("EAAB-very-secret");
        assert_eq!(format!("{s}"), "***");
        assert_eq!(format!("{s:?}"), "Secret(***)");
        assert_eq!(s.expose(), "EAAB-very-secret");
    }

    #[test]
    fn resolves_from_a_secrets_file_without_leaking_on_parse_errors() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("t.toml"), "A = \"tok-a\"\n").unwrap();
        let r = SecretRef { env: None, file: Some("t.toml".into()), key: Some("A".into()) };
        assert_eq!(r.resolve(dir.path()).unwrap().expose(), "tok-a");
        let missing = SecretRef { key: Some("B".into()), ..r.clone() };
        assert!(matches!(missing.resolve(dir.path()), Err(SecretError::KeyMissing { .. })));
        std::fs::write(dir.path().join("t.toml"), "A = tok-leaky-value\n").unwrap();
        let err = r.resolve(dir.path()).unwrap_err().to_string();
        assert!(!err.contains("tok-leaky-value"), "{err}");
        assert!(err.contains("line 1"), "{err}");
    }

    #[test]
    fn shape_problems() {
        let e = SecretRef { env: Some("X".into()), file: None, key: None };
        assert!(e.shape_problem().is_none());
        let both = SecretRef { env: Some("X".into()), file: Some("f".into()), key: Some("k".into()) };
        assert!(both.shape_problem().is_some());
        let none = SecretRef { env: None, file: None, key: None };
        assert!(none.shape_problem().is_some());
    }
}
