//! The synthetic world: tenants, practices, pages, posts, campaigns and events, and every page's true daily series.
//!
//! Nothing per day is stored: each figure is a pure function of (seed, page, day), so the world can be any size and
//! any part of it can be generated in any order, always to the same bytes.
//!
//! Consistency the tests check: unique counts never exceed totals; a week's (28 days') unique count lies between
//! its largest day and the sum of its days; a page's daily figures contain its posts' daily increments; followers
//! change by exactly new followers minus unfollows.

use std::collections::HashMap;

use chrono::{Datelike, Duration, NaiveDate, TimeZone, Timelike, Utc, Weekday};
use pulse_domain::{AgeBand, ApiVersion, Gender, PageKind, PracticeCode, TenantId};

use crate::rng::{Rng, key, text};
use crate::scenario::{CampaignKind, Scenario};

// Stream tags, so different quantities never share a random stream.
const T_PAGE: u64 = 1;
const T_DAY: u64 = 2;
const T_POSTS: u64 = 3;
const T_CAMPAIGN: u64 = 5;
const T_SPLIT: u64 = 6;
const T_UNFOLLOW: u64 = 7;
const T_PRACTICE: u64 = 8;
const T_TOKEN: u64 = 9;
const T_CADENCE: u64 = 10;
const T_PAGE_ENGAGE: u64 = 11;

/// Days a post keeps accruing (its increments after this are negligible and dropped).
pub const POST_LIFE_DAYS: i64 = 28;

#[derive(Debug, Clone)]
pub struct Tenant {
    pub id: TenantId,
    pub name: String,
}

/// NHS Digital publishes registered patients in 5-year age groups (0-4 ... 90+) by sex.
pub const NHS_AGE_GROUPS: [&str; 19] = [
    "0_4", "5_9", "10_14", "15_19", "20_24", "25_29", "30_34", "35_39", "40_44", "45_49", "50_54", "55_59", "60_64",
    "65_69", "70_74", "75_79", "80_84", "85_89", "90+",
];

/// A typical English practice's share of patients in each 5-year group (sums to 1).
const AGE_PROFILE: [f64; 19] = [
    0.055, 0.06, 0.058, 0.056, 0.062, 0.068, 0.07, 0.067, 0.063, 0.066, 0.07, 0.068, 0.058, 0.05, 0.048, 0.035, 0.024,
    0.014, 0.008,
];

/// A page as a client sees it (see [`World::page_logins`]).
#[derive(Clone)]
pub struct PageLogin {
    pub tenant: TenantId,
    pub practice: PracticeCode,
    pub page: String,
    /// The page access token the simulator accepts (a simulated secret: never logged).
    pub token: String,
}

impl std::fmt::Debug for PageLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PageLogin({} {} {})", self.tenant, self.practice, self.page)
    }
}

#[derive(Debug, Clone)]
pub struct Practice {
    pub tenant: usize,
    pub code: PracticeCode,
    pub name: String,
    pub list_size: u32,
    /// Registered patients by NHS 5-year age group: [female, male].
    pub registered: [[u32; 2]; 19],
    pub page: Option<usize>,
}

#[derive(Debug, Clone)]
pub struct Page {
    pub index: usize,
    pub id: String,
    pub practice: usize,
    pub kind: PageKind,
    pub name: String,
    pub followers_start: f64,
    /// Follower growth per day (log scale).
    pub growth: f64,
    /// Page-specific multiplier on reach (some pages simply do better).
    pub scale: f64,
    /// The page access token the simulated Meta accepts for this page.
    pub token: String,
    /// This page's age-band × gender shares of engaged people (sums to 1), F then M then U per band.
    pub shares: Vec<(Gender, AgeBand, f64)>,
}

/// What kind of post, and what it is about.
#[derive(Debug, Clone, PartialEq)]
pub struct Post {
    pub id: String,
    pub page: usize,
    pub created_day: NaiveDate,
    /// Seconds after midnight UTC of `created_day`.
    pub created_secs: u32,
    /// `photo`, `video`, `link`, `status`.
    pub kind: &'static str,
    pub topic: &'static str,
    pub message: String,
    pub link: Option<String>,
    /// Campaign index, for campaign posts.
    pub campaign: Option<usize>,
    pub totals: PostTotals,
    pub decay_days: f64,
    /// The posting effect applied to this post's engaged share (hour, day, topic, cadence, and the page's own
    /// multiplier from `page_spread`; 1 for campaign and event posts): the known truth of the posting analyses.
    pub engagement_effect: f64,
    /// The share of the people it reaches who are expected to engage (before the post's own noise, a uniform draw
    /// of mean 1): the known truth of engagement rates.
    pub expected_engaged_share: f64,
}

/// A post's lifetime totals once it has finished accruing.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct PostTotals {
    pub views: f64,
    pub reach: f64,
    pub engaged: f64,
    pub engagements: f64,
    pub video_views: f64,
}

/// One page-day. Unique counts are people; the rest are events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DayFigures {
    pub views: i64,
    pub reach: i64,
    pub engaged: i64,
    pub engagements: i64,
    pub video_views: i64,
    pub new_followers: i64,
    pub followers: i64,
}

#[derive(Debug, Clone)]
pub struct Campaign {
    pub index: usize,
    pub name: String,
    pub kind: CampaignKind,
    pub start: NaiveDate,
    pub days: u32,
    pub pages: Vec<usize>,
}

pub struct World {
    pub scenario: Scenario,
    pub seed: u64,
    pub tenants: Vec<Tenant>,
    pub practices: Vec<Practice>,
    pub pages: Vec<Page>,
    pub campaigns: Vec<Campaign>,
    page_by_id: HashMap<String, usize>,
}

const FIRST_NAMES: [&str; 24] = [
    "Brookfield",
    "Kiln Lane",
    "Moorland View",
    "Potters Bank",
    "Trentside",
    "Hanley Green",
    "Etruria Road",
    "Wedgwood",
    "Longton Park",
    "Burslem Bridge",
    "Millfield",
    "Castle Hill",
    "Westlands",
    "Meir Heath",
    "Bentilee",
    "Fenton Vale",
    "Tunstall Gate",
    "Keele Road",
    "Silverdale",
    "Madeley Court",
    "Leek Road",
    "Cheadle Brook",
    "Stone Lane",
    "Audley",
];
const SECOND_NAMES: [&str; 4] = ["Surgery", "Medical Practice", "Health Centre", "Medical Centre"];

impl World {
    pub fn new(scenario: Scenario, seed: Option<u64>) -> Self {
        let seed = seed.unwrap_or(scenario.world.seed);
        let mut tenants = Vec::new();
        let mut practices = Vec::new();
        let mut pages: Vec<Page> = Vec::new();
        let a = &scenario.audience;
        for spec in &scenario.tenants {
            let copies = spec.copies.unwrap_or(1).max(1);
            for copy in 0..copies {
                let (id, name, prefix) = if spec.copies.is_some() {
                    let n: u32 = spec.code_prefix[1..].parse().unwrap_or(0) + copy;
                    (
                        TenantId::new(format!("{}-{:02}", spec.id.get_ref(), copy + 1)).expect("valid tenant id"),
                        format!("{} {:02}", spec.name, copy + 1),
                        format!("{}{:02}", &spec.code_prefix[..1], n % 100),
                    )
                } else {
                    (spec.id.get_ref().clone(), spec.name.clone(), spec.code_prefix.clone())
                };
                let tenant = tenants.len();
                for i in 0..spec.practices {
                    let mut r = Rng::new(seed, &[T_PRACTICE, text(id.as_str()), i as u64]);
                    let code = PracticeCode::new(format!("{prefix}{:03}", i + 1)).expect("prefix validated");
                    let list_size = r.range(spec.list_size[0] as f64, spec.list_size[1] as f64).round() as u32;
                    let name = format!(
                        "{} {}",
                        FIRST_NAMES[r.below(FIRST_NAMES.len() as u64) as usize],
                        SECOND_NAMES[r.below(SECOND_NAMES.len() as u64) as usize]
                    );
                    let mut registered = [[0u32; 2]; 19];
                    for (g, share) in AGE_PROFILE.iter().enumerate() {
                        let n = list_size as f64 * share * r.range(0.85, 1.15);
                        let female = r.range(0.48, 0.53);
                        registered[g] = [(n * female).round() as u32, (n * (1.0 - female)).round() as u32];
                    }
                    let list_size = registered.iter().map(|[f, m]| f + m).sum();
                    let has_page = r.chance(spec.facebook_share);
                    let practice = practices.len();
                    let page = has_page.then(|| {
                        let index = pages.len();
                        let page_id = scenario.world.page_id_base + index as u64 + 1;
                        let mut pr = Rng::new(seed, &[T_PAGE, index as u64]);
                        let followers =
                            list_size as f64 * pr.range(a.followers_per_patient[0], a.followers_per_patient[1]);
                        pages.push(Page {
                            index,
                            id: page_id.to_string(),
                            practice,
                            kind: if pr.chance(spec.claimed_share) { PageKind::Claimed } else { PageKind::Official },
                            name: name.clone(),
                            followers_start: followers,
                            growth: pr.range(0.0002, 0.0011),
                            scale: pr.range(0.75, 1.3),
                            token: format!("SIM{:016x}", key(seed, &[T_TOKEN, page_id])),
                            shares: page_shares(&mut pr, a.age_bands, a.female_share, a.unknown_gender_share),
                        });
                        index
                    });
                    practices.push(Practice { tenant, code, name, list_size, registered, page });
                }
                tenants.push(Tenant { id, name });
            }
        }
        let campaigns = scenario
            .campaigns
            .iter()
            .enumerate()
            .map(|(index, c)| {
                let pages = pages
                    .iter()
                    .filter(|p| {
                        let tenant = &tenants[practices[p.practice].tenant].id;
                        (c.tenants.is_empty() || c.tenants.contains(tenant))
                            && Rng::new(seed, &[T_CAMPAIGN, index as u64, p.index as u64]).chance(c.participation)
                    })
                    .map(|p| p.index)
                    .collect();
                Campaign { index, name: c.name.get_ref().clone(), kind: c.kind, start: c.start, days: c.days, pages }
            })
            .collect();
        let page_by_id = pages.iter().map(|p| (p.id.clone(), p.index)).collect();
        World { scenario, seed, tenants, practices, pages, campaigns, page_by_id }
    }

    /// Every tenant's id.
    pub fn tenant_ids(&self) -> Vec<TenantId> {
        self.tenants.iter().map(|t| t.id.clone()).collect()
    }

    /// Every page with what a client needs to ingest it: tenant, practice, page id, the token the simulator accepts.
    pub fn page_logins(&self) -> Vec<PageLogin> {
        self.pages
            .iter()
            .map(|p| {
                let practice = &self.practices[p.practice];
                PageLogin {
                    tenant: self.tenants[practice.tenant].id.clone(),
                    practice: practice.code.clone(),
                    page: p.id.clone(),
                    token: p.token.clone(),
                }
            })
            .collect()
    }

    pub fn api_version(&self) -> ApiVersion {
        self.scenario.world.api_version
    }

    pub fn start(&self) -> NaiveDate {
        self.scenario.world.start
    }

    pub fn end(&self) -> NaiveDate {
        self.scenario.world.end
    }

    pub fn page_by_id(&self, id: &str) -> Option<&Page> {
        self.page_by_id.get(id).map(|&i| &self.pages[i])
    }

    fn day_number(&self, day: NaiveDate) -> i64 {
        (day - self.start()).num_days()
    }

    /// Followers at the end of `day`.
    pub fn followers(&self, page: usize, day: NaiveDate) -> i64 {
        let p = &self.pages[page];
        let n = self.day_number(day).max(-1) as f64;
        (p.followers_start * (p.growth * n).exp()).round() as i64
    }

    fn event_multiplier(&self, day: NaiveDate) -> f64 {
        self.scenario
            .events
            .iter()
            .filter(|e| day >= e.start && day < e.start + Duration::days(e.days as i64))
            .map(|e| e.reach_multiplier)
            .fold(1.0, f64::max)
    }

    /// The posts a page published on `day` (Pacific day; practices post in UK working hours).
    pub fn posts_on(&self, page: usize, day: NaiveDate) -> Vec<Post> {
        if day < self.start() || day > self.end() + Duration::days(3650) {
            return Vec::new();
        }
        let a = &self.scenario.audience;
        let n = self.day_number(day) as u64;
        let mut r = Rng::new(self.seed, &[T_POSTS, page as u64, n]);
        let weekday = day.weekday().num_days_from_monday() as usize;
        // Practices post on working days mostly (scheduled posts reach the weekend).
        let cadence = self.cadence(page);
        let rate = a.posts_per_week * cadence / 7.0 * if weekday < 5 { 1.2 } else { 0.5 };
        let count = r.poisson(rate);
        let followers = self.followers(page, day) as f64;
        let page_id = &self.pages[page].id;
        let mut out = Vec::new();
        let mut slot = 0u64;
        let mut push = |out: &mut Vec<Post>,
                        kind: &'static str,
                        topic: &'static str,
                        message: String,
                        link: Option<String>,
                        campaign: Option<usize>,
                        totals: PostTotals,
                        decay: f64,
                        secs: u32,
                        effect: f64,
                        share: f64| {
            out.push(Post {
                id: format!("{page_id}_{}", n * 10 + slot),
                page,
                created_day: day,
                created_secs: secs,
                kind,
                topic,
                message,
                link,
                campaign,
                totals,
                decay_days: decay,
                engagement_effect: effect,
                expected_engaged_share: share,
            });
            slot += 1;
        };
        for e in &self.scenario.events {
            if e.start == day {
                let reach = followers * r.range(0.8, 1.4);
                let totals = post_totals(&mut r, reach, a.views_per_reach, a.engaged_share * 1.5, 0.0);
                push(
                    &mut out,
                    "status",
                    "service_notice",
                    e.message.clone(),
                    None,
                    None,
                    totals,
                    1.0,
                    9 * 3600 + 1200,
                    1.0,
                    a.engaged_share * 1.5,
                );
            }
        }
        for c in &self.campaigns {
            if c.start == day && c.pages.contains(&page) {
                let spec = &self.scenario.campaigns[c.index];
                let mut cr = Rng::new(self.seed, &[T_CAMPAIGN, c.index as u64, page as u64, 1]);
                let reach = cr.range(spec.reach_per_page[0], spec.reach_per_page[1]);
                let totals =
                    post_totals(&mut cr, reach, spec.views_per_reach, spec.engaged_share, spec.video_views_per_reach);
                let kind = match spec.kind {
                    CampaignKind::Video => "video",
                    CampaignKind::Poster => "photo",
                    CampaignKind::Hashtag => "link",
                };
                push(
                    &mut out,
                    kind,
                    "campaign",
                    spec.message.clone(),
                    spec.link.clone(),
                    Some(c.index),
                    totals,
                    spec.decay_days,
                    9 * 3600 + 5 * 60,
                    1.0,
                    spec.engaged_share,
                );
                // In addition to the page's ordinary posts, so the injected effect is exactly this post's.
            }
        }
        for _ in 0..count.min(4) {
            let (kind, topic, message) = ordinary_post(&mut r, day);
            let reach = followers
                * r.range(a.post_reach_per_follower[0], a.post_reach_per_follower[1])
                * self.pages[page].scale;
            let video = if kind == "video" { 0.45 } else { 0.0 };
            let mut totals = post_totals(&mut r, reach, a.views_per_reach, a.engaged_share * 0.5, video);
            let secs = (8 + r.below(9) as u32) * 3600 + r.below(3600) as u32;
            // The posting effect scales engagement after the draws, so a world without one is unchanged.
            let posted = Self::london(day, secs);
            let effect = self.scenario.posting.effect(
                posted.hour(),
                posted.weekday().num_days_from_monday() as usize,
                topic,
                cadence,
            ) * self.page_engagement(page);
            totals.engaged *= effect;
            totals.engagements *= effect;
            let share = a.engaged_share * 0.5 * effect;
            push(&mut out, kind, topic, message, None, None, totals, 1.5, secs, effect, share);
        }
        out
    }

    /// Finds a post by id.
    pub fn post(&self, id: &str) -> Option<Post> {
        let (page_id, number) = id.split_once('_')?;
        let page = *self.page_by_id.get(page_id)?;
        let number: i64 = number.parse().ok()?;
        let day = self.start() + Duration::days(number / 10);
        self.posts_on(page, day).into_iter().find(|p| p.id == id)
    }

    /// The page's true figures for one day.
    pub fn day(&self, page: usize, day: NaiveDate) -> DayFigures {
        let a = &self.scenario.audience;
        let p = &self.pages[page];
        let n = self.day_number(day);
        let mut r = Rng::new(self.seed, &[T_DAY, page as u64, n as u64]);
        let followers = self.followers(page, day);
        let weekday = a.weekday[day.weekday().num_days_from_monday() as usize];
        let mean = followers as f64 * a.reach_per_follower * weekday * p.scale * self.event_multiplier(day);
        let reach = r.overdispersed(mean, a.dispersion) as f64;
        let mut f = DayFigures {
            reach: reach as i64,
            views: (reach * a.views_per_reach * r.range(0.9, 1.1)).round() as i64,
            engaged: (reach * a.engaged_share * r.range(0.75, 1.25)).round() as i64,
            engagements: 0,
            video_views: (reach * a.video_views_per_reach * r.range(0.5, 1.5)).round() as i64,
            new_followers: 0,
            followers,
        };
        f.engagements = (f.engaged as f64 * a.engagements_per_engaged * r.range(0.9, 1.1)).round() as i64;
        for back in 0..POST_LIFE_DAYS {
            let created = day - Duration::days(back);
            for post in self.posts_on(page, created) {
                let inc = post_increment(&post, back);
                f.views += inc.views.round() as i64;
                f.reach += inc.reach.round() as i64;
                f.engaged += inc.engaged.round() as i64;
                f.engagements += inc.engagements.round() as i64;
                f.video_views += inc.video_views.round() as i64;
            }
        }
        f.views = f.views.max(f.reach);
        f.engaged = f.engaged.min(f.reach);
        f.engagements = f.engagements.max(f.engaged);
        let unfollows =
            Rng::new(self.seed, &[T_UNFOLLOW, page as u64, n as u64]).poisson(followers as f64 * 0.0002) as i64;
        f.new_followers = (followers - self.followers(page, day - Duration::days(1))).max(0) + unfollows;
        f
    }

    /// The unique count of a rolling window from its days' unique counts: the largest day plus the part of the other
    /// days that is not the same people again.
    pub fn window_unique(&self, daily: &[i64], period_days: usize) -> i64 {
        let overlap =
            if period_days <= 7 { self.scenario.audience.week_overlap } else { self.scenario.audience.days28_overlap };
        let max = daily.iter().copied().max().unwrap_or(0);
        let sum: i64 = daily.iter().sum();
        max + ((sum - max) as f64 * (1.0 - overlap)).round() as i64
    }

    /// Splits a unique count over age bands and genders with this page's shares; zero cells are omitted.
    pub fn split(&self, page: usize, total: i64, salt: u64) -> Vec<(String, i64)> {
        let mut r = Rng::new(self.seed, &[T_SPLIT, page as u64, salt]);
        self.pages[page]
            .shares
            .iter()
            .map(|(g, b, share)| {
                (format!("{}.{}", g.as_str(), b.as_str()), (total as f64 * share * r.range(0.9, 1.1)).round() as i64)
            })
            .filter(|(_, v)| *v > 0)
            .collect()
    }

    /// A post's lifetime totals accrued by the end of `as_of` (it keeps growing for weeks).
    pub fn post_lifetime(&self, post: &Post, as_of: NaiveDate) -> PostTotals {
        let age = (as_of - post.created_day).num_days();
        if age < 0 {
            return PostTotals::default();
        }
        let share = accrued(age + 1, post.decay_days);
        scale(post.totals, share)
    }

    /// The page's posting cadence: a multiplier on `audience.posts_per_week`, drawn from `posting.cadence_spread`
    /// (log-uniform; exactly 1 without a spread).
    pub fn cadence(&self, page: usize) -> f64 {
        log_uniform(self.scenario.posting.cadence_spread, Rng::new(self.seed, &[T_CADENCE, page as u64]).uniform())
    }

    /// The page's own multiplier on its ordinary posts' engaged share, from `posting.page_spread` (exactly 1 without
    /// a spread).
    pub fn page_engagement(&self, page: usize) -> f64 {
        log_uniform(self.scenario.posting.page_spread, Rng::new(self.seed, &[T_PAGE_ENGAGE, page as u64]).uniform())
    }

    /// When a post that went up `secs` after midnight UTC of `day` went up, in Europe/London.
    pub fn london(day: NaiveDate, secs: u32) -> chrono::DateTime<chrono_tz::Tz> {
        (Utc.from_utc_datetime(&day.and_hms_opt(0, 0, 0).expect("midnight")) + Duration::seconds(secs as i64))
            .with_timezone(&chrono_tz::Europe::London)
    }

    /// Registered date-time of a post, in UTC.
    pub fn created_time(post: &Post) -> chrono::DateTime<Utc> {
        Utc.from_utc_datetime(&post.created_day.and_hms_opt(0, 0, 0).expect("midnight"))
            + Duration::seconds(post.created_secs as i64)
    }

    /// The campaign's injected effect on one page on one day (what its post added to the page's figures).
    pub fn campaign_increment(&self, campaign: usize, page: usize, day: NaiveDate) -> PostTotals {
        let c = &self.campaigns[campaign];
        let back = (day - c.start).num_days();
        if !(0..POST_LIFE_DAYS).contains(&back) || !c.pages.contains(&page) {
            return PostTotals::default();
        }
        self.posts_on(page, c.start)
            .iter()
            .filter(|p| p.campaign == Some(campaign))
            .map(|p| post_increment(p, back))
            .fold(PostTotals::default(), add)
    }
}

/// A value drawn log-uniformly from [low, high] with `u` in [0, 1): exactly `low` when they are equal.
fn log_uniform([low, high]: [f64; 2], u: f64) -> f64 {
    if low == high { low } else { (low.ln() + u * (high.ln() - low.ln())).exp() }
}

fn page_shares(r: &mut Rng, bands: [f64; 7], female: f64, unknown: f64) -> Vec<(Gender, AgeBand, f64)> {
    let female = (female + r.range(-0.05, 0.05)).clamp(0.3, 0.9);
    let mut out = Vec::new();
    for (i, band) in AgeBand::ALL.into_iter().enumerate() {
        let b = bands[i] * r.range(0.85, 1.15);
        for (g, s) in [(Gender::Female, female), (Gender::Male, 1.0 - female - unknown), (Gender::Unknown, unknown)] {
            out.push((g, band, b * s));
        }
    }
    let total: f64 = out.iter().map(|(_, _, s)| s).sum();
    out.iter_mut().for_each(|(_, _, s)| *s /= total);
    out
}

fn post_totals(r: &mut Rng, reach: f64, views_per_reach: f64, engaged_share: f64, video_per_reach: f64) -> PostTotals {
    let engaged = reach * engaged_share * r.range(0.7, 1.3);
    PostTotals {
        reach,
        views: reach * views_per_reach * r.range(0.9, 1.1),
        engaged,
        engagements: engaged * r.range(1.2, 1.6),
        video_views: reach * video_per_reach * r.range(0.9, 1.1),
    }
}

/// Share of a post's lifetime totals accrued within its first `days` days.
fn accrued(days: i64, decay: f64) -> f64 {
    if days <= 0 { 0.0 } else { 1.0 - (-(days as f64) / decay).exp() }
}

fn scale(t: PostTotals, s: f64) -> PostTotals {
    PostTotals {
        views: t.views * s,
        reach: t.reach * s,
        engaged: t.engaged * s,
        engagements: t.engagements * s,
        video_views: t.video_views * s,
    }
}

fn add(a: PostTotals, b: PostTotals) -> PostTotals {
    PostTotals {
        views: a.views + b.views,
        reach: a.reach + b.reach,
        engaged: a.engaged + b.engaged,
        engagements: a.engagements + b.engagements,
        video_views: a.video_views + b.video_views,
    }
}

/// What a post adds to its page's figures on day `back` of its life (0 = the day it went up).
pub fn post_increment(post: &Post, back: i64) -> PostTotals {
    let share = accrued(back + 1, post.decay_days) - accrued(back, post.decay_days);
    scale(post.totals, share)
}

fn ordinary_post(r: &mut Rng, day: NaiveDate) -> (&'static str, &'static str, String) {
    let month = day.month();
    let first_working_day = day.day() <= 3 && !matches!(day.weekday(), Weekday::Sat | Weekday::Sun);
    if first_working_day && r.chance(0.8) {
        let missed = 150 + r.below(300);
        let prev = day - Duration::days(day.day() as i64);
        return (
            "photo",
            "dna",
            format!(
                "In {}, {missed} appointments were missed without being cancelled. If you can't make it, please let us know so someone else can be seen. #DNA",
                prev.format("%B")
            ),
        );
    }
    let roll = r.uniform();
    if (9..=12).contains(&month) && roll < 0.35 {
        return (
            "photo",
            "vaccines",
            "Flu vaccine clinics are running this month. Eligible? Book with reception or online. #FluJab".into(),
        );
    }
    if (4..=7).contains(&month) && roll < 0.25 {
        return (
            "link",
            "vaccines",
            "Travelling this summer? Check which travel vaccinations you need at least 8 weeks before you go.".into(),
        );
    }
    if roll < 0.45 {
        return (
            "status",
            "opening_hours",
            format!("Opening hours: we are open 8am-6.30pm {}. Out of hours, call 111.", day.format("%A")),
        );
    }
    if roll < 0.6 {
        return ("video", "self_care", "Self-care tutorial from one of our GPs: managing asthma at home.".into());
    }
    if roll < 0.75 {
        return (
            "photo",
            "ppg",
            "Join our Patient Participation Group: our Facebook PPG meets online, no meetings to travel to.".into(),
        );
    }
    (
        "status",
        "practice_news",
        "Practice news: online booking and repeat prescriptions are available through Patient Online.".into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario;

    fn case_study() -> World {
        World::new(scenario::resolve("case-study").unwrap(), None)
    }

    #[test]
    fn about_two_thirds_of_practices_have_pages() {
        let w = case_study();
        let share = w.pages.len() as f64 / w.practices.len() as f64;
        assert!((0.55..0.8).contains(&share), "{share}");
        assert_eq!(w.tenants.len(), 2);
    }

    #[test]
    fn invariants_hold_for_every_page_day() {
        let w = case_study();
        for page in 0..w.pages.len().min(20) {
            let mut day = w.start();
            let mut daily = Vec::new();
            while day <= w.start() + Duration::days(120) {
                let f = w.day(page, day);
                assert!(f.reach <= f.views && f.engaged <= f.reach && f.engaged <= f.engagements, "{f:?}");
                assert!(f.new_followers >= 0 && f.followers > 0);
                daily.push(f.reach);
                if daily.len() >= 7 {
                    let week = &daily[daily.len() - 7..];
                    let u = w.window_unique(week, 7);
                    assert!(u >= *week.iter().max().unwrap() && u <= week.iter().sum::<i64>());
                }
                // The page contains its posts: what its posts added today is within today's figures.
                let posts: f64 = (0..POST_LIFE_DAYS)
                    .flat_map(|b| {
                        w.posts_on(page, day - Duration::days(b)).into_iter().map(move |p| post_increment(&p, b).views)
                    })
                    .sum();
                assert!(f.views as f64 >= posts.floor() - 1.0, "page views {} < posts {posts}", f.views);
                day += Duration::days(1);
            }
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_world_and_another_seed_another() {
        let a = case_study();
        let b = case_study();
        let c = World::new(scenario::resolve("case-study").unwrap(), Some(99));
        let day = NaiveDate::from_ymd_opt(2018, 3, 10).unwrap();
        assert_eq!(a.day(3, day), b.day(3, day));
        assert_eq!(a.posts_on(3, day), b.posts_on(3, day));
        assert_ne!(
            (0..10).map(|p| a.day(p, day)).collect::<Vec<_>>(),
            (0..10).map(|p| c.day(p, day)).collect::<Vec<_>>()
        );
    }

    #[test]
    fn posts_are_found_by_id() {
        let w = case_study();
        let day = NaiveDate::from_ymd_opt(2018, 3, 10).unwrap();
        let c = &w.campaigns[0];
        let page = c.pages[0];
        let post = w.posts_on(page, day).into_iter().find(|p| p.campaign == Some(0)).unwrap();
        assert_eq!(w.post(&post.id), Some(post.clone()));
        assert_eq!(w.post("999_1"), None);
        let later = w.post_lifetime(&post, day + Duration::days(20));
        let first = w.post_lifetime(&post, day);
        assert!(later.views > first.views && first.views > 0.0, "lifetime values grow");
    }
}
