//! The metric catalogue: stable canonical metrics mapped to the Graph API metric names valid in each API version.
//!
//! Meta retires Page Insights metrics repeatedly (2024-03-14, 2025-06-15, 2025-11-15, 2026-06-15 among them), and
//! one retired metric in a request fails the whole request with `(#100) ... must be a valid insights metric`. The
//! ingester therefore never hard-codes a Graph metric name: it asks this catalogue which names are valid for the
//! configured API version on the day of the call. Changing what Meta supports is an edit to [`CATALOGUE`], nothing
//! else.

use std::fmt;
use std::str::FromStr;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use crate::DomainError;

/// A Graph API version such as `v2.12` or `v25.0`, ordered numerically.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ApiVersion {
    pub major: u16,
    pub minor: u16,
}

impl ApiVersion {
    pub const fn new(major: u16, minor: u16) -> Self {
        Self { major, minor }
    }
}

impl fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}.{}", self.major, self.minor)
    }
}

impl FromStr for ApiVersion {
    type Err = DomainError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || DomainError::ApiVersion(s.to_owned());
        let rest = s.strip_prefix('v').ok_or_else(err)?;
        let (major, minor) = rest.split_once('.').ok_or_else(err)?;
        let digits = |x: &str| !x.is_empty() && x.len() <= 3 && x.bytes().all(|b| b.is_ascii_digit());
        if !digits(major) || !digits(minor) {
            return Err(err());
        }
        Ok(Self::new(major.parse().map_err(|_| err())?, minor.parse().map_err(|_| err())?))
    }
}

impl Serialize for ApiVersion {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ApiVersion {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// The aggregation window of a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    Day,
    Week,
    Days28,
    Lifetime,
}

impl Period {
    pub const ALL: [Period; 4] = [Period::Day, Period::Week, Period::Days28, Period::Lifetime];

    pub fn as_str(self) -> &'static str {
        match self {
            Period::Day => "day",
            Period::Week => "week",
            Period::Days28 => "days_28",
            Period::Lifetime => "lifetime",
        }
    }

    /// Days in a rolling window ending at `end_time`; `None` for lifetime values.
    pub fn window_days(self) -> Option<i64> {
        match self {
            Period::Day => Some(1),
            Period::Week => Some(7),
            Period::Days28 => Some(28),
            Period::Lifetime => None,
        }
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Period {
    type Err = DomainError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Period::ALL.into_iter().find(|p| p.as_str() == s).ok_or_else(|| DomainError::Period(s.to_owned()))
    }
}

/// Whether a metric's value is a number or a breakdown object (`{"F.25-34": 120, ...}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueKind {
    Number,
    AgeGenderBreakdown,
}

/// Whether a metric is read from `/{page-id}/insights` or `/{post-id}/insights`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Page,
    Post,
}

macro_rules! canonical_metrics {
    ($($variant:ident => $name:literal, $level:ident, $kind:ident, $unique:literal, $doc:literal;)*) => {
        /// A stable metric name of ours. Graph names come and go; these do not.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum CanonicalMetric {
            $(#[doc = $doc] $variant,)*
        }

        impl CanonicalMetric {
            pub const ALL: &'static [CanonicalMetric] = &[$(CanonicalMetric::$variant,)*];

            pub fn as_str(self) -> &'static str {
                match self { $(CanonicalMetric::$variant => $name,)* }
            }

            pub fn level(self) -> Level {
                match self { $(CanonicalMetric::$variant => Level::$level,)* }
            }

            pub fn value_kind(self) -> ValueKind {
                match self { $(CanonicalMetric::$variant => ValueKind::$kind,)* }
            }

            /// A count of unique people: never additive across days or pages.
            pub fn is_unique_count(self) -> bool {
                match self { $(CanonicalMetric::$variant => $unique,)* }
            }

            pub fn description(self) -> &'static str {
                match self { $(CanonicalMetric::$variant => $doc,)* }
            }
        }
    };
}

canonical_metrics! {
    PageViews => "page_views", Page, Number, false, "Times the page's content was seen (impressions, now 'views').";
    PageReach => "page_reach", Page, Number, true, "Unique people who saw any of the page's content.";
    PageEngagements => "page_engagements", Page, Number, false, "Reactions, comments, shares and clicks on the page's posts.";
    PageEngagedUsers => "page_engaged_users", Page, Number, true, "Unique people who engaged with the page.";
    PageFollowers => "page_followers", Page, Number, false, "People following (formerly liking) the page, at the end of the day.";
    PageNewFollowers => "page_new_followers", Page, Number, true, "Unique people who started following the page.";
    PageVideoViews => "page_video_views", Page, Number, false, "Video plays of 3 seconds or more on the page's videos.";
    PageReachByAgeGender => "page_reach_by_age_gender", Page, AgeGenderBreakdown, true, "Unique people reached, by age band and gender.";
    PageEngagedByAgeGender => "page_engaged_by_age_gender", Page, AgeGenderBreakdown, true, "Unique people who engaged, by age band and gender.";
    PageFollowersByAgeGender => "page_followers_by_age_gender", Page, AgeGenderBreakdown, false, "Followers by age band and gender.";
    PostViews => "post_views", Post, Number, false, "Times the post was seen (lifetime).";
    PostReach => "post_reach", Post, Number, true, "Unique people who saw the post (lifetime).";
    PostEngagements => "post_engagements", Post, Number, false, "Clicks on the post, of any kind (lifetime).";
    PostEngagedUsers => "post_engaged_users", Post, Number, true, "Unique people who engaged with the post (lifetime).";
    PostVideoViews => "post_video_views", Post, Number, false, "Plays of the post's video of 3 seconds or more (lifetime).";
    PostVideoViewTimeByAgeGender => "post_video_view_time_by_age_gender", Post, AgeGenderBreakdown, false, "Milliseconds of the post's video watched, by age band and gender (lifetime).";
}

impl fmt::Display for CanonicalMetric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CanonicalMetric {
    type Err = DomainError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CanonicalMetric::ALL
            .iter()
            .copied()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| DomainError::CanonicalMetric(s.to_owned()))
    }
}

impl Serialize for CanonicalMetric {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for CanonicalMetric {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// One Graph API metric name and the versions and dates in which it is valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GraphMetric {
    pub name: &'static str,
    pub canonical: CanonicalMetric,
    pub periods: &'static [Period],
    /// The first API version that serves it.
    pub introduced: ApiVersion,
    /// The first API version that no longer serves it, if Meta removed it version by version.
    pub removed_in: Option<ApiVersion>,
    /// The day Meta retired it for every API version, if it did.
    pub retired_on: Option<NaiveDate>,
}

impl GraphMetric {
    /// Whether a request for this metric under `version`, made on `on`, would be accepted.
    pub fn is_valid(&self, version: ApiVersion, on: NaiveDate) -> bool {
        version >= self.introduced
            && self.removed_in.is_none_or(|removed| version < removed)
            && self.retired_on.is_none_or(|retired| on < retired)
    }
}

const fn ymd(y: i32, m: u32, d: u32) -> NaiveDate {
    match NaiveDate::from_ymd_opt(y, m, d) {
        Some(d) => d,
        None => panic!("invalid catalogue date"),
    }
}

const V2: ApiVersion = ApiVersion::new(2, 0);
const V18: ApiVersion = ApiVersion::new(18, 0);
const V21: ApiVersion = ApiVersion::new(21, 0);
/// 2024-03-14: engaged users and the page-level demographic metrics, for all versions.
const RETIRED_2024_03: Option<NaiveDate> = Some(ymd(2024, 3, 14));
/// 2025-06-15: `*_impressions_unique` (reach) in favour of `*_total_media_view_unique`.
const RETIRED_2025_06: Option<NaiveDate> = Some(ymd(2025, 6, 15));
/// 2025-11-15: `*_impressions` and the `page_fans*` family in favour of views and follows.
const RETIRED_2025_11: Option<NaiveDate> = Some(ymd(2025, 11, 15));
/// 2026-06-15: the video-views metrics, folded into media views.
const RETIRED_2026_06: Option<NaiveDate> = Some(ymd(2026, 6, 15));

const DAY: &[Period] = &[Period::Day];
const ROLLING: &[Period] = &[Period::Day, Period::Week, Period::Days28];
const LIFETIME: &[Period] = &[Period::Lifetime];

macro_rules! graph {
    ($name:literal, $canonical:ident, $periods:expr, $intro:expr, $removed:expr, $retired:expr) => {
        GraphMetric {
            name: $name,
            canonical: CanonicalMetric::$canonical,
            periods: $periods,
            introduced: $intro,
            removed_in: $removed,
            retired_on: $retired,
        }
    };
}

/// Every Graph metric we know, oldest name first within a canonical metric.
/// A Graph metric name as the catalogue spells it, so records can share it instead of copying it; `None` for a name
/// the catalogue does not know. The empty name stands for "no Graph metric" (checks derived in the pipelines).
pub fn graph_metric_name(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        return Some("");
    }
    CATALOGUE.iter().find(|g| g.name == name).map(|g| g.name)
}

pub const CATALOGUE: &[GraphMetric] = &[
    graph!("page_impressions", PageViews, ROLLING, V2, None, RETIRED_2025_11),
    graph!("page_media_view", PageViews, ROLLING, V21, None, None),
    graph!("page_impressions_unique", PageReach, ROLLING, V2, None, RETIRED_2025_06),
    graph!("page_total_media_view_unique", PageReach, ROLLING, V21, None, None),
    graph!("page_post_engagements", PageEngagements, ROLLING, V2, None, None),
    graph!("page_engaged_users", PageEngagedUsers, ROLLING, V2, Some(V18), RETIRED_2024_03),
    graph!("page_fans", PageFollowers, DAY, V2, None, RETIRED_2025_11),
    graph!("page_follows", PageFollowers, DAY, V21, None, None),
    graph!("page_fan_adds_unique", PageNewFollowers, ROLLING, V2, None, RETIRED_2025_11),
    graph!("page_daily_follows_unique", PageNewFollowers, DAY, V21, None, None),
    graph!("page_video_views", PageVideoViews, ROLLING, V2, None, RETIRED_2026_06),
    graph!("page_impressions_by_age_gender_unique", PageReachByAgeGender, ROLLING, V2, Some(V18), RETIRED_2024_03),
    graph!(
        "page_content_activity_by_age_gender_unique",
        PageEngagedByAgeGender,
        ROLLING,
        V2,
        Some(V18),
        RETIRED_2024_03
    ),
    graph!("page_fans_gender_age", PageFollowersByAgeGender, DAY, V2, Some(V18), RETIRED_2024_03),
    graph!("post_impressions", PostViews, LIFETIME, V2, None, RETIRED_2025_11),
    graph!("post_media_view", PostViews, LIFETIME, V21, None, None),
    graph!("post_impressions_unique", PostReach, LIFETIME, V2, None, RETIRED_2025_06),
    graph!("post_total_media_view_unique", PostReach, LIFETIME, V21, None, None),
    graph!("post_clicks", PostEngagements, LIFETIME, V2, None, None),
    graph!("post_engaged_users", PostEngagedUsers, LIFETIME, V2, Some(V18), RETIRED_2024_03),
    graph!("post_video_views", PostVideoViews, LIFETIME, V2, None, RETIRED_2026_06),
    graph!("post_video_view_time_by_age_bucket_and_gender", PostVideoViewTimeByAgeGender, LIFETIME, V2, None, None),
];

/// Queries over [`CATALOGUE`] (or a test's own table).
#[derive(Debug, Clone, Copy)]
pub struct MetricCatalogue {
    entries: &'static [GraphMetric],
}

impl Default for MetricCatalogue {
    fn default() -> Self {
        Self { entries: CATALOGUE }
    }
}

impl MetricCatalogue {
    pub fn new(entries: &'static [GraphMetric]) -> Self {
        Self { entries }
    }

    pub fn entries(&self) -> &'static [GraphMetric] {
        self.entries
    }

    /// The Graph metric to request for `canonical` under `version` on day `on`: the newest valid name.
    /// `None` means the API no longer offers it, and reports must say the figure is unavailable.
    pub fn graph_name(
        &self,
        canonical: CanonicalMetric,
        version: ApiVersion,
        on: NaiveDate,
    ) -> Option<&'static GraphMetric> {
        self.entries.iter().rev().find(|g| g.canonical == canonical && g.is_valid(version, on))
    }

    /// The day the API stopped offering `canonical` under every name, if it has: a figure after that day is
    /// "retired", not missing.
    pub fn retired_since(&self, canonical: CanonicalMetric) -> Option<NaiveDate> {
        let names: Vec<&GraphMetric> = self.entries.iter().filter(|g| g.canonical == canonical).collect();
        if names.is_empty() || names.iter().any(|g| g.retired_on.is_none()) {
            return None;
        }
        names.iter().filter_map(|g| g.retired_on).max()
    }

    /// Finds a Graph metric by name (any version), to map a response back to its canonical metric.
    pub fn by_graph_name(&self, name: &str) -> Option<&'static GraphMetric> {
        self.entries.iter().find(|g| g.name == name)
    }

    /// Whether `name` is a valid metric under `version` on day `on` (what Meta checks before answering).
    pub fn is_valid_graph_name(&self, name: &str, version: ApiVersion, on: NaiveDate) -> bool {
        self.entries.iter().any(|g| g.name == name && g.is_valid(version, on))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V2_12: ApiVersion = ApiVersion::new(2, 12);
    const V25: ApiVersion = ApiVersion::new(25, 0);

    #[test]
    fn versions_parse_and_order_numerically() {
        let v: ApiVersion = "v2.12".parse().unwrap();
        assert_eq!(v, V2_12);
        assert!(ApiVersion::new(2, 9) < V2_12);
        assert!(V2_12 < "v18.0".parse().unwrap());
        assert_eq!(V25.to_string(), "v25.0");
        for bad in ["2.12", "v2", "v2.x", "v.1", "", "v2.12.1"] {
            assert!(bad.parse::<ApiVersion>().is_err(), "{bad}");
        }
    }

    #[test]
    fn the_2018_era_uses_the_old_names() {
        let c = MetricCatalogue::default();
        let on = ymd(2018, 3, 1);
        let name = |m| c.graph_name(m, V2_12, on).map(|g| g.name);
        assert_eq!(name(CanonicalMetric::PageReach), Some("page_impressions_unique"));
        assert_eq!(name(CanonicalMetric::PageFollowers), Some("page_fans"));
        assert_eq!(name(CanonicalMetric::PageEngagedByAgeGender), Some("page_content_activity_by_age_gender_unique"));
        assert_eq!(name(CanonicalMetric::PageFollowersByAgeGender), Some("page_fans_gender_age"));
    }

    #[test]
    fn the_current_era_uses_media_views_and_follows_and_drops_page_demographics() {
        let c = MetricCatalogue::default();
        let on = ymd(2026, 11, 21);
        let name = |m| c.graph_name(m, V25, on).map(|g| g.name);
        assert_eq!(name(CanonicalMetric::PageViews), Some("page_media_view"));
        assert_eq!(name(CanonicalMetric::PageReach), Some("page_total_media_view_unique"));
        assert_eq!(name(CanonicalMetric::PageFollowers), Some("page_follows"));
        assert_eq!(name(CanonicalMetric::PageNewFollowers), Some("page_daily_follows_unique"));
        assert_eq!(name(CanonicalMetric::PageEngagedUsers), None);
        assert_eq!(name(CanonicalMetric::PageReachByAgeGender), None);
        assert_eq!(name(CanonicalMetric::PageVideoViews), None);
        assert_eq!(
            name(CanonicalMetric::PostVideoViewTimeByAgeGender),
            Some("post_video_view_time_by_age_bucket_and_gender")
        );
    }

    #[test]
    fn retirement_applies_to_every_version_from_its_day() {
        let c = MetricCatalogue::default();
        assert!(c.is_valid_graph_name("page_impressions", V25, ymd(2025, 11, 14)));
        assert!(!c.is_valid_graph_name("page_impressions", V25, ymd(2025, 11, 15)));
        assert!(!c.is_valid_graph_name("page_impressions", V2_12, ymd(2025, 11, 15)));
        // Removed version by version before the all-version retirement.
        assert!(!c.is_valid_graph_name("page_engaged_users", ApiVersion::new(18, 0), ymd(2023, 10, 1)));
        assert!(c.is_valid_graph_name("page_engaged_users", ApiVersion::new(17, 0), ymd(2023, 10, 1)));
        // Not yet introduced.
        assert!(!c.is_valid_graph_name("page_media_view", V2_12, ymd(2018, 1, 1)));
        assert!(!c.is_valid_graph_name("no_such_metric", V25, ymd(2026, 1, 1)));
    }

    #[test]
    fn every_canonical_metric_has_a_graph_name_and_a_round_trip() {
        let c = MetricCatalogue::default();
        for &m in CanonicalMetric::ALL {
            assert!(c.entries().iter().any(|g| g.canonical == m), "{m} has no graph metric");
            assert_eq!(m.as_str().parse::<CanonicalMetric>().unwrap(), m);
        }
        for g in c.entries() {
            assert_eq!(c.by_graph_name(g.name).unwrap().canonical, g.canonical);
            let lifetime = g.periods == LIFETIME;
            assert_eq!(lifetime, g.canonical.level() == Level::Post, "{}", g.name);
        }
    }
}
