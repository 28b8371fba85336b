//! Usage headers: how close the app and each page are to being throttled.
//!
//! `x-app-usage: {"call_count":28,"total_cputime":25,"total_time":25}` (percentages) and
//! `x-business-use-case-usage: {"<page-id>":[{"type":"pages","call_count":..,"total_cputime":..,"total_time":..,
//! "estimated_time_to_regain_access":0}]}` (minutes to wait once cut off).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppUsage {
    pub call_count: u32,
    pub total_cputime: u32,
    pub total_time: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucUsage {
    #[serde(rename = "type")]
    pub kind: String,
    pub call_count: u32,
    pub total_cputime: u32,
    pub total_time: u32,
    #[serde(default)]
    pub estimated_time_to_regain_access: u32,
}

/// The usage a response reported.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    pub app: Option<AppUsage>,
    /// Per page (business object) id.
    pub pages: BTreeMap<String, BucUsage>,
}

impl Usage {
    /// Parses the two headers (either may be missing; a malformed one is ignored rather than failing a good response).
    pub fn parse(app_header: Option<&str>, buc_header: Option<&str>) -> Self {
        let app = app_header.and_then(|h| serde_json::from_str::<AppUsage>(h).ok());
        let pages = buc_header
            .and_then(|h| serde_json::from_str::<BTreeMap<String, Vec<BucUsage>>>(h).ok())
            .map(|m| m.into_iter().filter_map(|(k, mut v)| v.pop().map(|u| (k, u))).collect())
            .unwrap_or_default();
        Self { app, pages }
    }

    /// The highest percentage reported anywhere (0-100+).
    pub fn max_percent(&self) -> u32 {
        let app = self.app.map_or(0, |a| a.call_count.max(a.total_cputime).max(a.total_time));
        let page = self.pages.values().map(|u| u.call_count.max(u.total_cputime).max(u.total_time)).max().unwrap_or(0);
        app.max(page)
    }

    /// Minutes until access returns, when a page is cut off.
    pub fn regain_minutes(&self) -> u32 {
        self.pages.values().map(|u| u.estimated_time_to_regain_access).max().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_headers() {
        let u = Usage::parse(
            Some(r#"{"call_count":28,"total_cputime":25,"total_time":25}"#),
            Some(
                r#"{"1234":[{"type":"pages","call_count":81,"total_cputime":10,"total_time":12,"estimated_time_to_regain_access":0}]}"#,
            ),
        );
        assert_eq!(u.app.unwrap().call_count, 28);
        assert_eq!(u.max_percent(), 81);
        assert_eq!(u.regain_minutes(), 0);
        let cut = Usage::parse(
            None,
            Some(
                r#"{"1":[{"type":"pages","call_count":100,"total_cputime":5,"total_time":5,"estimated_time_to_regain_access":7}]}"#,
            ),
        );
        assert_eq!(cut.regain_minutes(), 7);
        assert_eq!(Usage::parse(Some("not json"), None), Usage::default());
    }
}
