//! Known truth: what the simulator injected, in a documented format the pipelines' tests read.
//!
//! `pulse sim truth --scenario case-study` prints it as JSON (format `pulse-sim-truth/1`):
//!
//! - `tenants[].practices[]`: code, name, list size, registered patients by NHS 5-year age group and sex
//!   (`registered["35_39"] = [female, male]`), and the page (id, kind) if the practice has one;
//! - `campaigns[]`: the participating pages with their campaign post, the post's injected daily increments to its
//!   page's figures (`daily[]`: Pacific day, views, reach, engaged, video_views), their sums inside the campaign
//!   window (`window`) and over all pages (`window_totals`); reach sums over pages are *gross* reach;
//! - `events[]`: as in the scenario;
//! - `summary`: headline facts (weekly engaged users across pages, engaged people by age band).
//!
//! `series_csv` writes every page's true daily series: `page_id,practice,tenant,day,views,reach,engaged,
//! engagements,video_views,new_followers,followers`.

use std::fmt::Write;

use chrono::{Duration, NaiveDate};
use serde::Serialize;

use crate::world::{NHS_AGE_GROUPS, POST_LIFE_DAYS, PostTotals, World};

#[derive(Debug, Serialize)]
pub struct Truth {
    pub format: &'static str,
    pub scenario: String,
    pub seed: u64,
    pub api_version: String,
    pub start: NaiveDate,
    pub end: NaiveDate,
    pub tenants: Vec<TenantTruth>,
    pub campaigns: Vec<CampaignTruth>,
    pub events: Vec<EventTruth>,
    pub summary: Summary,
}

#[derive(Debug, Serialize)]
pub struct TenantTruth {
    pub id: String,
    pub name: String,
    pub practices: Vec<PracticeTruth>,
}

#[derive(Debug, Serialize)]
pub struct PracticeTruth {
    pub code: String,
    pub name: String,
    pub list_size: u32,
    pub registered: std::collections::BTreeMap<String, [u32; 2]>,
    pub page: Option<PageTruth>,
}

#[derive(Debug, Serialize)]
pub struct PageTruth {
    pub id: String,
    pub kind: String,
}

#[derive(Debug, Serialize, Clone, Copy, Default)]
pub struct Figures {
    pub views: f64,
    pub reach: f64,
    pub engaged: f64,
    pub video_views: f64,
}

impl Figures {
    fn add(&mut self, t: &PostTotals) {
        self.views += t.views;
        self.reach += t.reach;
        self.engaged += t.engaged;
        self.video_views += t.video_views;
    }
}

#[derive(Debug, Serialize)]
pub struct DayTruth {
    pub day: NaiveDate,
    #[serde(flatten)]
    pub figures: Figures,
}

#[derive(Debug, Serialize)]
pub struct CampaignPageTruth {
    pub page_id: String,
    pub practice: String,
    pub tenant: String,
    pub post_id: String,
    pub window: Figures,
    pub daily: Vec<DayTruth>,
}

#[derive(Debug, Serialize)]
pub struct CampaignTruth {
    pub name: String,
    pub kind: String,
    pub start: NaiveDate,
    pub days: u32,
    /// Last day of the campaign window.
    pub window_end: NaiveDate,
    pub message: String,
    pub link: Option<String>,
    pub hashtag: Option<String>,
    pub pages: Vec<CampaignPageTruth>,
    /// Sums over participating pages inside the window (reach: gross reach).
    pub window_totals: Figures,
}

#[derive(Debug, Serialize)]
pub struct EventTruth {
    pub name: String,
    pub kind: String,
    pub start: NaiveDate,
    pub days: u32,
    pub reach_multiplier: f64,
}

#[derive(Debug, Serialize)]
pub struct Summary {
    pub practices: usize,
    pub pages: usize,
    /// Weekly unique engaged users per page over the last four complete weeks: quartiles across pages.
    pub weekly_engaged_users_p25: i64,
    pub weekly_engaged_users_median: i64,
    pub weekly_engaged_users_p75: i64,
    /// Share of engaged people by age band (the world's configured mix).
    pub engaged_share_by_band: std::collections::BTreeMap<String, f64>,
}

impl World {
    pub fn truth(&self) -> Truth {
        let tenants = self
            .tenants
            .iter()
            .enumerate()
            .map(|(ti, t)| TenantTruth {
                id: t.id.to_string(),
                name: t.name.clone(),
                practices: self
                    .practices
                    .iter()
                    .filter(|p| p.tenant == ti)
                    .map(|p| PracticeTruth {
                        code: p.code.to_string(),
                        name: p.name.clone(),
                        list_size: p.list_size,
                        registered: NHS_AGE_GROUPS
                            .iter()
                            .zip(p.registered.iter())
                            .map(|(g, v)| (g.to_string(), *v))
                            .collect(),
                        page: p.page.map(|i| PageTruth {
                            id: self.pages[i].id.clone(),
                            kind: self.pages[i].kind.as_str().into(),
                        }),
                    })
                    .collect(),
            })
            .collect();
        let campaigns = self
            .campaigns
            .iter()
            .map(|c| {
                let spec = &self.scenario.campaigns[c.index];
                let window_end = c.start + Duration::days(c.days as i64 - 1);
                let mut window_totals = Figures::default();
                let pages = c
                    .pages
                    .iter()
                    .map(|&page| {
                        let p = &self.pages[page];
                        let practice = &self.practices[p.practice];
                        let post_id = self
                            .posts_on(page, c.start)
                            .into_iter()
                            .find(|x| x.campaign == Some(c.index))
                            .map(|x| x.id)
                            .unwrap_or_default();
                        let mut window = Figures::default();
                        let daily = (0..POST_LIFE_DAYS)
                            .map(|b| {
                                let day = c.start + Duration::days(b);
                                let inc = self.campaign_increment(c.index, page, day);
                                if day <= window_end {
                                    window.add(&inc);
                                }
                                let mut figures = Figures::default();
                                figures.add(&inc);
                                DayTruth { day, figures }
                            })
                            .collect();
                        window_totals.views += window.views;
                        window_totals.reach += window.reach;
                        window_totals.engaged += window.engaged;
                        window_totals.video_views += window.video_views;
                        CampaignPageTruth {
                            page_id: p.id.clone(),
                            practice: practice.code.to_string(),
                            tenant: self.tenants[practice.tenant].id.to_string(),
                            post_id,
                            window,
                            daily,
                        }
                    })
                    .collect();
                CampaignTruth {
                    name: c.name.clone(),
                    kind: format!("{:?}", c.kind).to_lowercase(),
                    start: c.start,
                    days: c.days,
                    window_end,
                    message: spec.message.clone(),
                    link: spec.link.clone(),
                    hashtag: spec.hashtag.clone(),
                    pages,
                    window_totals,
                }
            })
            .collect();
        let events = self
            .scenario
            .events
            .iter()
            .map(|e| EventTruth {
                name: e.name.clone(),
                kind: e.kind.clone(),
                start: e.start,
                days: e.days,
                reach_multiplier: e.reach_multiplier,
            })
            .collect();
        let mut weekly: Vec<i64> = Vec::new();
        let last = self.end();
        for page in 0..self.pages.len().min(400) {
            for w in 0..4 {
                let end = last - Duration::days(7 * w);
                let daily: Vec<i64> = (0..7).map(|b| self.day(page, end - Duration::days(b)).engaged).collect();
                weekly.push(self.window_unique(&daily, 7));
            }
        }
        weekly.sort_unstable();
        let q = |f: f64| weekly.get(((weekly.len() as f64 - 1.0) * f).round() as usize).copied().unwrap_or(0);
        let bands = pulse_domain::AgeBand::ALL
            .iter()
            .zip(self.scenario.audience.age_bands.iter())
            .map(|(b, s)| (b.as_str().to_owned(), *s))
            .collect();
        Truth {
            format: "pulse-sim-truth/1",
            scenario: self.scenario.world.name.clone(),
            seed: self.seed,
            api_version: self.api_version().to_string(),
            start: self.start(),
            end: self.end(),
            tenants,
            campaigns,
            events,
            summary: Summary {
                practices: self.practices.len(),
                pages: self.pages.len(),
                weekly_engaged_users_p25: q(0.25),
                weekly_engaged_users_median: q(0.5),
                weekly_engaged_users_p75: q(0.75),
                engaged_share_by_band: bands,
            },
        }
    }

    /// Every page's true daily series over [from, to], as CSV.
    pub fn series_csv(&self, from: NaiveDate, to: NaiveDate) -> String {
        let mut out = String::from(
            "page_id,practice,tenant,day,views,reach,engaged,engagements,video_views,new_followers,followers\n",
        );
        for p in &self.pages {
            let practice = &self.practices[p.practice];
            let tenant = &self.tenants[practice.tenant].id;
            let mut day = from;
            while day <= to {
                let f = self.day(p.index, day);
                let _ = writeln!(
                    out,
                    "{},{},{},{day},{},{},{},{},{},{},{}",
                    p.id,
                    practice.code,
                    tenant,
                    f.views,
                    f.reach,
                    f.engaged,
                    f.engagements,
                    f.video_views,
                    f.new_followers,
                    f.followers
                );
                day += Duration::days(1);
            }
        }
        out
    }
}
