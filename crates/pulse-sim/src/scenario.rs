//! Scenario files: the world to simulate (TOML, in `crates/pulse-sim/scenarios/`), refused at start-up with the
//! file, line and field when malformed.

use std::path::{Path, PathBuf};

use chrono::NaiveDate;
use pulse_domain::text::line_col;
use pulse_domain::{ApiVersion, TenantId};
use serde::Deserialize;
use toml::Spanned;

#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("cannot read scenario `{}`: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{}:{line}:{column}: {message}", path.display())]
    Invalid { path: PathBuf, line: usize, column: usize, message: String },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub world: WorldSpec,
    #[serde(default)]
    pub audience: AudienceSpec,
    #[serde(rename = "tenant")]
    pub tenants: Vec<TenantSpec>,
    #[serde(default, rename = "campaign")]
    pub campaigns: Vec<CampaignSpec>,
    #[serde(default, rename = "event")]
    pub events: Vec<EventSpec>,
    #[serde(default)]
    pub faults: FaultSpec,
    #[serde(default)]
    pub posting: PostingSpec,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorldSpec {
    /// Scenario name, shown in logs and truth.
    pub name: String,
    /// Default seed; `pulse sim --seed` overrides it.
    pub seed: u64,
    /// The API version the simulated Meta runs ("era"): which metrics exist.
    pub api_version: ApiVersion,
    /// First day with data (Pacific).
    pub start: NaiveDate,
    /// Last complete day (Pacific); the simulated "today" is the day after, unless moved.
    pub end: NaiveDate,
    /// Page ids are this plus the page's index.
    #[serde(default = "default_page_base")]
    pub page_id_base: u64,
    /// App id reported by debug_token.
    #[serde(default = "default_app_id")]
    pub app_id: String,
}

fn default_page_base() -> u64 {
    100_000_000_000
}

fn default_app_id() -> String {
    "1790000000000001".into()
}

/// How audiences behave. Defaults reproduce the case study's figures.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AudienceSpec {
    /// Page followers as a share of the practice's registered list: [low, high].
    pub followers_per_patient: [f64; 2],
    /// Mean daily organic reach per follower (shares bring in non-followers too).
    pub reach_per_follower: f64,
    /// Multipliers Monday..Sunday.
    pub weekday: [f64; 7],
    /// Gamma shape of day-to-day noise (lower is noisier).
    pub dispersion: f64,
    /// Views (impressions) per person reached.
    pub views_per_reach: f64,
    /// Share of people reached who engage.
    pub engaged_share: f64,
    /// Engagements per engaged person.
    pub engagements_per_engaged: f64,
    /// Organic video views per person reached.
    pub video_views_per_reach: f64,
    /// New followers per day as a share of followers.
    pub new_followers_share: f64,
    /// Mean posts per page per week.
    pub posts_per_week: f64,
    /// Lifetime reach of an ordinary post per follower: [low, high].
    pub post_reach_per_follower: [f64; 2],
    /// Share of engaged people in each age band 13-17, 18-24, 25-34, 35-44, 45-54, 55-64, 65+.
    pub age_bands: [f64; 7],
    /// Share of engaged people who are female / unknown gender (the rest are male).
    pub female_share: f64,
    pub unknown_gender_share: f64,
    /// Share of the smaller days' reach that repeats within a week / 28 days (uniques are not additive).
    pub week_overlap: f64,
    pub days28_overlap: f64,
}

impl Default for AudienceSpec {
    fn default() -> Self {
        Self {
            followers_per_patient: [0.18, 0.45],
            reach_per_follower: 0.32,
            weekday: [1.05, 1.08, 1.1, 1.06, 1.0, 0.86, 0.85],
            dispersion: 7.0,
            views_per_reach: 1.55,
            engaged_share: 0.09,
            engagements_per_engaged: 1.6,
            video_views_per_reach: 0.04,
            new_followers_share: 0.0012,
            posts_per_week: 3.0,
            post_reach_per_follower: [0.15, 0.6],
            age_bands: [0.01, 0.06, 0.17, 0.25, 0.23, 0.16, 0.12],
            female_share: 0.68,
            unknown_gender_share: 0.02,
            week_overlap: 0.45,
            days28_overlap: 0.62,
        }
    }
}

/// When and what a practice posts changes how many of the people an ordinary post reaches engage with it: the known
/// truth that the posting analyses (hour and day of posting, cadence, topic) are validated against. Each effect
/// multiplies an ordinary post's engaged share (and so its engagements), never its reach or views; campaign and event
/// posts are not affected. The default is no effect at all, so a scenario without `[posting]` is unchanged.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PostingSpec {
    /// By the hour the post went up, Europe/London, as "0" to "23"; hours not listed are 1.
    pub hour_effect: std::collections::BTreeMap<String, f64>,
    /// By the day it went up (Europe/London), Monday..Sunday.
    pub weekday_effect: [f64; 7],
    /// By the simulator's topic (`dna`, `vaccines`, `opening_hours`, `self_care`, `ppg`, `practice_news`); topics
    /// not listed are 1.
    pub topic_effect: std::collections::BTreeMap<String, f64>,
    /// Each page posts at `audience.posts_per_week` times its own cadence, drawn log-uniformly from [low, high].
    pub cadence_spread: [f64; 2],
    /// An ordinary post's engaged share is multiplied by (the page's cadence) ^ -elasticity: the more a page posts,
    /// the less each post engages, and its posts' engagement per week grows as cadence ^ (1 - elasticity).
    pub cadence_elasticity: f64,
    /// Each page's posts engage more or less than others' by a multiplier drawn log-uniformly from [low, high]
    /// (pages differ; the analyses compare posts within their page).
    pub page_spread: [f64; 2],
}

/// The simulator's topics of ordinary posts (what `topic_effect` may name).
pub const POST_TOPICS: [&str; 6] = ["dna", "vaccines", "opening_hours", "self_care", "ppg", "practice_news"];

impl Default for PostingSpec {
    fn default() -> Self {
        Self {
            hour_effect: Default::default(),
            weekday_effect: [1.0; 7],
            topic_effect: Default::default(),
            cadence_spread: [1.0, 1.0],
            cadence_elasticity: 0.0,
            page_spread: [1.0, 1.0],
        }
    }
}

impl PostingSpec {
    /// The multiplier of a post that went up at `hour` on `weekday` (0 = Monday, both Europe/London) about `topic`,
    /// from a page of `cadence`.
    pub fn effect(&self, hour: u32, weekday: usize, topic: &str, cadence: f64) -> f64 {
        self.hour_effect.get(&hour.to_string()).copied().unwrap_or(1.0)
            * self.weekday_effect[weekday.min(6)]
            * self.topic_effect.get(topic).copied().unwrap_or(1.0)
            * cadence.powf(-self.cadence_elasticity)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantSpec {
    pub id: Spanned<TenantId>,
    pub name: String,
    /// ODS-style prefix: a letter and two digits; practices get the next three digits.
    pub code_prefix: String,
    pub practices: u32,
    /// Share of practices with a Facebook page.
    pub facebook_share: f64,
    /// Share of pages that are unofficial pages the practice claimed.
    #[serde(default = "default_claimed")]
    pub claimed_share: f64,
    /// Registered list size range.
    pub list_size: [u32; 2],
    /// Repeat this tenant N times (`id-01`, `id-02`, ... with prefixes counting up), for national-scale worlds.
    #[serde(default)]
    pub copies: Option<u32>,
}

fn default_claimed() -> f64 {
    0.15
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CampaignKind {
    Video,
    Poster,
    Hashtag,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CampaignSpec {
    pub name: Spanned<String>,
    pub kind: CampaignKind,
    /// Day the campaign posts go up (Pacific), 09:00 UK time.
    pub start: NaiveDate,
    /// Length of the campaign window in days.
    pub days: u32,
    /// Tenants whose pages take part (empty: all).
    #[serde(default)]
    pub tenants: Vec<TenantId>,
    /// Share of those pages that post it.
    pub participation: f64,
    /// The injected effect: lifetime reach of the campaign post per participating page [low, high].
    pub reach_per_page: [f64; 2],
    /// Views per person reached.
    #[serde(default = "default_views_per_reach")]
    pub views_per_reach: f64,
    /// Video views per person reached (video campaigns).
    #[serde(default)]
    pub video_views_per_reach: f64,
    /// Share of people reached who engage.
    pub engaged_share: f64,
    /// Days over which the post's reach accrues (time constant of the decay).
    #[serde(default = "default_decay")]
    pub decay_days: f64,
    pub message: String,
    #[serde(default)]
    pub link: Option<String>,
    #[serde(default)]
    pub hashtag: Option<String>,
}

fn default_views_per_reach() -> f64 {
    1.4
}

fn default_decay() -> f64 {
    0.9
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventSpec {
    pub name: String,
    /// `outage`: phones and websites down; people go to the pages.
    pub kind: String,
    pub start: NaiveDate,
    pub days: u32,
    /// Multiplier on organic reach during the event.
    pub reach_multiplier: f64,
    /// What practices post on the first day.
    pub message: String,
}

/// Faults to inject; deterministic under the seed. All off by default.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FaultSpec {
    /// Share of calls answered with a transient error (code 1 or 2, `is_transient`).
    pub transient_rate: f64,
    /// Share of calls answered slowly, and how slowly.
    pub slow_rate: f64,
    pub slow_ms: u64,
    /// Share of calls whose body is cut off mid-way / is not JSON.
    pub truncated_rate: f64,
    pub malformed_rate: f64,
    /// Calls per page per window before code 32 (page throttling); `None`: unlimited.
    pub page_budget: Option<u32>,
    /// Calls per window for the whole app before code 4; `None`: unlimited.
    pub app_budget: Option<u32>,
    /// Budget window and lockout length, in milliseconds.
    pub budget_window_ms: u64,
    pub lockout_ms: u64,
    /// Pages (by index) whose token dies after some calls: code 190 with subcode 463 (expired) or 460 (password
    /// changed).
    pub token_deaths: Vec<TokenDeath>,
    /// Pages (by index) whose token lacks `read_insights`: code 200.
    pub permission_errors: Vec<usize>,
    /// Post listings end with an empty page that still has `next`.
    pub empty_page_with_next: bool,
    /// A metric retired after some calls (code 100 from then on).
    pub retire_metric: Option<RetireMetric>,
    /// How long a "minute" is in `estimated_time_to_regain_access` (default 60000; tests shrink time).
    pub minute_ms: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenDeath {
    pub page: usize,
    pub after_calls: u32,
    pub subcode: i64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetireMetric {
    pub metric: String,
    pub after_calls: u32,
}

impl Scenario {
    pub fn load(path: &Path) -> Result<Self, ScenarioError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ScenarioError::Read { path: path.to_owned(), source })?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Self, ScenarioError> {
        let invalid = |span: Option<std::ops::Range<usize>>, message: String| {
            let (line, column) = span.map_or((0, 0), |s| line_col(text, s.start));
            ScenarioError::Invalid { path: path.to_owned(), line, column, message }
        };
        let scenario: Scenario = toml::from_str(text).map_err(|e| invalid(e.span(), e.message().trim().to_owned()))?;
        let world_at = text.find("[world]").map(|i| i..i + 1);
        if scenario.world.end < scenario.world.start {
            return Err(invalid(world_at, "world.end is before world.start".into()));
        }
        if scenario.tenants.is_empty() {
            return Err(invalid(None, "a scenario needs at least one [[tenant]]".into()));
        }
        for t in &scenario.tenants {
            let at = Some(t.id.span());
            let p = t.code_prefix.as_bytes();
            if p.len() != 3 || !p[0].is_ascii_uppercase() || !p[1..].iter().all(u8::is_ascii_digit) {
                return Err(invalid(
                    at,
                    format!("tenant {}: code_prefix must be a letter and two digits", t.id.get_ref()),
                ));
            }
            if t.practices == 0 || t.practices > 999 {
                return Err(invalid(at, format!("tenant {}: practices must be 1-999", t.id.get_ref())));
            }
            if !(0.0..=1.0).contains(&t.facebook_share) || !(0.0..=1.0).contains(&t.claimed_share) {
                return Err(invalid(at, format!("tenant {}: shares must be between 0 and 1", t.id.get_ref())));
            }
            if t.list_size[0] == 0 || t.list_size[1] < t.list_size[0] {
                return Err(invalid(
                    at,
                    format!("tenant {}: list_size must be [low, high] with 0 < low <= high", t.id.get_ref()),
                ));
            }
        }
        let tenant_ids: Vec<&TenantId> = scenario.tenants.iter().map(|t| t.id.get_ref()).collect();
        for c in &scenario.campaigns {
            let at = Some(c.name.span());
            if let Some(unknown) = c.tenants.iter().find(|t| !tenant_ids.contains(t)) {
                return Err(invalid(
                    at,
                    format!("campaign `{}`: tenants: unknown tenant `{unknown}`", c.name.get_ref()),
                ));
            }
            if c.days == 0 || !(0.0..=1.0).contains(&c.participation) || c.reach_per_page[1] < c.reach_per_page[0] {
                return Err(invalid(
                    at,
                    format!(
                        "campaign `{}`: needs days >= 1, participation in [0, 1], reach_per_page [low, high]",
                        c.name.get_ref()
                    ),
                ));
            }
        }
        let posting = &scenario.posting;
        let posting_at = text.find("[posting").map(|i| i..i + 1);
        let positive = |v: &f64| v.is_finite() && *v > 0.0;
        // Hours as the effect looks them up ("9", not "09"), so none is silently without effect.
        if let Some(h) =
            posting.hour_effect.keys().find(|h| h.parse::<u32>().map_or(true, |n| n > 23 || n.to_string() != **h))
        {
            return Err(invalid(posting_at, format!("posting.hour_effect: `{h}` is not an hour \"0\" to \"23\"")));
        }
        if let Some(t) = posting.topic_effect.keys().find(|t| !POST_TOPICS.contains(&t.as_str())) {
            return Err(invalid(
                posting_at,
                format!("posting.topic_effect: `{t}` is not a topic ({})", POST_TOPICS.join(", ")),
            ));
        }
        if !posting
            .hour_effect
            .values()
            .chain(posting.topic_effect.values())
            .chain(&posting.weekday_effect)
            .all(positive)
            || !posting.cadence_spread.iter().chain(&posting.page_spread).all(positive)
            || posting.cadence_spread[1] < posting.cadence_spread[0]
            || posting.page_spread[1] < posting.page_spread[0]
            || !(0.0..=1.0).contains(&posting.cadence_elasticity)
        {
            return Err(invalid(
                posting_at,
                "posting: effects must be positive, cadence_spread and page_spread [low, high] with 0 < low <= high, \
                 cadence_elasticity in [0, 1]"
                    .into(),
            ));
        }
        let a = &scenario.audience;
        let band_total: f64 = a.age_bands.iter().sum();
        if (band_total - 1.0).abs() > 0.01 {
            return Err(invalid(
                text.find("age_bands").map(|i| i..i + 1),
                format!("audience.age_bands must sum to 1 (they sum to {band_total:.3})"),
            ));
        }
        Ok(scenario)
    }
}

/// The scenarios shipped in the repository, by name.
pub fn bundled(name: &str) -> Option<&'static str> {
    match name {
        "case-study" => Some(include_str!("../scenarios/case-study.toml")),
        "current" => Some(include_str!("../scenarios/current.toml")),
        "national" => Some(include_str!("../scenarios/national.toml")),
        _ => None,
    }
}

/// Loads a bundled scenario by name, or a file by path.
pub fn resolve(name_or_path: &str) -> Result<Scenario, ScenarioError> {
    match bundled(name_or_path) {
        Some(text) => Scenario::parse(text, Path::new(&format!("<bundled {name_or_path}>"))),
        None => Scenario::load(Path::new(name_or_path)),
    }
}
