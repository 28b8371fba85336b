//! Practices (and optionally one page each) from a CSV file, for tenants with many practices.
//!
//! Columns: `code,name` required; `list_size`, `page_id`, `page_kind`, `token_env` optional. Extra columns are an
//! error, like unknown fields in the TOML, so a typo in a header cannot silently drop a column.

use std::path::Path;

use pulse_domain::{PageId, PageKind, PracticeCode};

use crate::secret::SecretRef;
use crate::{Issue, PageConfig, PracticeConfig};

const KNOWN: &[&str] = &["code", "name", "list_size", "page_id", "page_kind", "token_env"];

/// A practice and where it was declared (`file:line`).
pub(crate) type Declared = (PracticeConfig, String);

pub(crate) fn read(path: &Path) -> Result<(Vec<Declared>, Vec<Issue>), String> {
    let mut reader = csv::ReaderBuilder::new().trim(csv::Trim::All).from_path(path).map_err(|e| e.to_string())?;
    let headers = reader.headers().map_err(|e| e.to_string())?.clone();
    let mut issues = Vec::new();
    let issue = |line: usize, message: String| Issue { path: path.to_owned(), line, column: 0, message };
    for h in headers.iter() {
        if !KNOWN.contains(&h) {
            issues.push(issue(1, format!("unknown column `{h}`, expected some of {}", KNOWN.join(", "))));
        }
    }
    for required in ["code", "name"] {
        if !headers.iter().any(|h| h == required) {
            issues.push(issue(1, format!("missing column `{required}`")));
        }
    }
    if !issues.is_empty() {
        return Ok((Vec::new(), issues));
    }
    let col = |name: &str| headers.iter().position(|h| h == name);
    let (code_i, name_i) = (col("code").expect("checked"), col("name").expect("checked"));
    let (size_i, page_i, kind_i, env_i) = (col("list_size"), col("page_id"), col("page_kind"), col("token_env"));
    let mut out = Vec::new();
    for record in reader.records() {
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line() as usize);
                issues.push(issue(line, e.to_string()));
                continue;
            }
        };
        let line = record.position().map_or(0, |p| p.line() as usize);
        let get = |i: Option<usize>| i.and_then(|i| record.get(i)).filter(|v| !v.is_empty());
        let code = match PracticeCode::new(record.get(code_i).unwrap_or_default()) {
            Ok(c) => c,
            Err(e) => {
                issues.push(issue(line, e.to_string()));
                continue;
            }
        };
        let list_size = match get(size_i).map(str::parse::<u32>) {
            Some(Ok(n)) => Some(n),
            Some(Err(_)) => {
                issues.push(issue(line, format!("list_size `{}` is not a whole number", get(size_i).unwrap_or(""))));
                None
            }
            None => None,
        };
        let mut pages = Vec::new();
        if let Some(page) = get(page_i) {
            let kind = match get(kind_i).map(str::parse::<PageKind>).transpose() {
                Ok(k) => k.unwrap_or_default(),
                Err(e) => {
                    issues.push(issue(line, e.to_string()));
                    PageKind::Official
                }
            };
            match PageId::new(page) {
                Ok(id) => pages.push(PageConfig {
                    id,
                    kind,
                    token: get(env_i).map(|v| SecretRef { env: Some(v.to_owned()), file: None, key: None }),
                    declared_at: format!("{}:{line}", path.display()),
                }),
                Err(e) => issues.push(issue(line, e.to_string())),
            }
        }
        let name = record.get(name_i).unwrap_or_default().to_owned();
        out.push((PracticeConfig { code, name, list_size, pages }, format!("{}:{line}", path.display())));
    }
    Ok((out, issues))
}
