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

impl BucUsage {
    /// The highest of its percentages.
    pub fn percent(&self) -> u32 {
        self.call_count.max(self.total_cputime).max(self.total_time)
    }
}

/// The usage a response reported.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    pub app: Option<AppUsage>,
    /// Per page (business object) id: every entry Meta sent for it (one per use case type), most constrained first.
    pub pages: BTreeMap<String, Vec<BucUsage>>,
}

impl Usage {
    /// Parses the two headers (either may be missing; a malformed one is ignored rather than failing a good response).
    pub fn parse(app_header: Option<&str>, buc_header: Option<&str>) -> Self {
        let app = app_header.and_then(|h| serde_json::from_str::<AppUsage>(h).ok());
        let pages = buc_header
            .and_then(|h| serde_json::from_str::<BTreeMap<String, Vec<BucUsage>>>(h).ok())
            .map(|m| {
                m.into_iter()
                    .filter(|(_, v)| !v.is_empty())
                    .map(|(k, mut v)| {
                        v.sort_by_key(|u| std::cmp::Reverse((u.estimated_time_to_regain_access, u.percent())));
                        (k, v)
                    })
                    .collect()
            })
            .unwrap_or_default();
        Self { app, pages }
    }

    /// The highest percentage reported anywhere (0-100+).
    pub fn max_percent(&self) -> u32 {
        let app = self.app.map_or(0, |a| a.call_count.max(a.total_cputime).max(a.total_time));
        let page = self.pages.values().flatten().map(BucUsage::percent).max().unwrap_or(0);
        app.max(page)
    }

    /// Minutes until access returns, when a page is cut off.
    pub fn regain_minutes(&self) -> u32 {
        self.pages.values().flatten().map(|u| u.estimated_time_to_regain_access).max().unwrap_or(0)
    }

    /// One page's most constrained entry: the longest lockout, then the highest percentage.
    pub fn page(&self, id: &str) -> Option<&BucUsage> {
        self.pages.get(id).and_then(|v| v.first())
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

    #[test]
    fn several_entries_for_a_page_are_all_kept_and_the_most_constrained_wins() {
        let u = Usage::parse(
            None,
            Some(
                r#"{"42":[{"type":"pages","call_count":95,"total_cputime":1,"total_time":1,"estimated_time_to_regain_access":0},{"type":"instagram","call_count":10,"total_cputime":1,"total_time":1,"estimated_time_to_regain_access":3},{"type":"ads_insights","call_count":20,"total_cputime":1,"total_time":1}]}"#,
            ),
        );
        assert_eq!(u.pages["42"].len(), 3, "every entry is kept");
        assert_eq!(u.page("42").unwrap().kind, "instagram", "a lockout is the most constrained");
        assert_eq!(u.regain_minutes(), 3);
        assert_eq!(u.max_percent(), 95, "the highest percentage of any entry counts");
    }
}
