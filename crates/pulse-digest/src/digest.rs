//! The weekly digest: one tenant's week (Monday to Sunday) against the week before and the same week a year earlier,
//! its best and worst practices, who engaged by age, campaigns, and what needs doing. Built from the report tables
//! (the same figures the dashboard and `pulse report` show), with disclosure control as in research exports: counts
//! of people from 1 to 7 are not shown and the rest are rounded to 5.
//!
//! [`build`] gathers the figures; [`render`] (in `crate::render`, from templates) turns them into the subject, plain text, HTML and PNG charts that
//! [`crate::mail`] sends.

use std::collections::BTreeMap;

use chrono::{Datelike, Duration, NaiveDate, Weekday};
use pulse_config::Config;
use pulse_store::Store;

use pulse_app::columns::Col;
use pulse_app::error::{AppError, AppResult};
use pulse_app::overview;
use pulse_app::report::{self, Kind, ReportQuery, RunInfo};
use pulse_app::text::{campaign_words, thousands};
use pulse_app::views::{CampaignEffectView, QualityCheckView};
use pulse_pipelines::reach::median;
use pulse_query::Directory;

/// Engagements per 1,000 registered patients as a digest may show it: of the published (rounded) count, since the
/// exact count times 1,000 over the public list size would give the count back; none for a count too small to
/// publish.
pub fn published_rate(engagements: f64, registered: f64) -> Option<f64> {
    let published = (!pulse_export::small_count(engagements)).then(|| pulse_export::round5(engagements) as f64)?;
    Some(published / registered * 1000.0)
}

/// A count of people as the digest publishes it: `None` when it is 1 to 7 (withheld) or missing, else rounded to 5.
/// Everything the digest computes from a count of people (changes, rates, shares, chart points) starts from this.
pub fn published_count(v: Option<f64>) -> Option<f64> {
    v.filter(|v| v.is_finite() && !pulse_export::small_count(*v)).map(|v| pulse_export::round5(v) as f64)
}

/// A count of people as a digest may show it: fewer than 8 withheld, others rounded to 5.
pub fn people(v: Option<f64>) -> String {
    match v {
        None => "n/a".into(),
        Some(v) if pulse_export::small_count(v) => "fewer than 8".into(),
        Some(v) => thousands(pulse_export::round5(v) as f64),
    }
}

/// The week `text` names: an ISO week (`2018-W10`) or any day in it (`2018-03-07`). Returns its Sunday.
pub fn parse_week(text: &str) -> AppResult<NaiveDate> {
    let bad = || {
        AppError::bad_request(format!("`{text}` is not a week"))
            .at("week")
            .with_hint("write an ISO week such as 2018-W10, or any day of the week as YYYY-MM-DD")
    };
    if let Some((y, w)) = text.split_once("-W") {
        let (y, w) = (y.parse::<i32>().map_err(|_| bad())?, w.parse::<u32>().map_err(|_| bad())?);
        return NaiveDate::from_isoywd_opt(y, w, Weekday::Sun).ok_or_else(bad);
    }
    let day = pulse_config::real_date("week", text).map_err(|e| AppError::bad_request(e).at("week"))?;
    Ok(week_ending(day))
}

/// The Sunday ending the Monday-to-Sunday week `day` is in.
pub fn week_ending(day: NaiveDate) -> NaiveDate {
    day + Duration::days(i64::from(6 - day.weekday().num_days_from_monday()))
}

/// The last whole week before `today` (its Sunday).
pub fn last_whole_week(today: NaiveDate) -> NaiveDate {
    week_ending(today) - Duration::days(7)
}

/// One headline figure: this week, the week before, the same week last year.
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    pub label: &'static str,
    /// How it was counted (gross sums, the API era's label).
    pub note: &'static str,
    pub now: Option<f64>,
    pub previous: Option<f64>,
    pub last_year: Option<f64>,
    /// Counts of people get disclosure control; counts of posts do not.
    pub people: bool,
}

/// A practice's engagement in the week.
#[derive(Debug, Clone, PartialEq)]
pub struct PracticeLine {
    pub code: String,
    pub name: String,
    pub engagements: f64,
    pub registered: f64,
    /// Engagements per 1,000 registered patients, from the engagements as the digest publishes them (rounded to 5),
    /// so the rate and the public list size cannot give the exact count back. Practices with fewer than 8
    /// engagements are left out of the league.
    pub per_1000: f64,
}

/// An age band's engaged people and penetration, tenant-wide, over the 28 days ending `window_end`.
#[derive(Debug, Clone, PartialEq)]
pub struct BandLine {
    pub band: String,
    pub people: Option<f64>,
    /// The tenant's registered patients in the band (public: NHS Digital publishes list sizes by age).
    pub registered: Option<f64>,
    /// Engaged people as a share of `registered`, from the people as published (rounded), so the share and the
    /// public list size give back only the rounded count.
    pub penetration: Option<f64>,
}

/// A campaign live in the week or ended in the four weeks before it.
#[derive(Debug, Clone, PartialEq)]
pub struct CampaignLine {
    pub name: String,
    pub metric: String,
    pub window_from: NaiveDate,
    pub window_to: NaiveDate,
    pub live: bool,
    pub effect: Option<f64>,
    pub lo: Option<f64>,
    pub hi: Option<f64>,
    pub level: Option<f64>,
    /// In words, with the lift over what was expected without the campaign and what the interval means; or why
    /// there is no estimate.
    pub words: String,
    /// Registered on or after its start: its analysis was chosen knowing how it went (exploratory, not a test).
    pub post_hoc: bool,
}

/// Something to look at: a page to re-authorise, a gap, a stale page, a practice far outside its usual range.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    /// `reauth`, `gap`, `stale`, `anomaly`, ...
    pub kind: String,
    pub practice: String,
    pub name: String,
    pub detail: String,
}

/// A tenant's digest for one week.
#[derive(Debug, Clone)]
pub struct Digest {
    pub tenant: String,
    pub tenant_name: String,
    pub week_start: NaiveDate,
    pub week_end: NaiveDate,
    pub headline: Vec<Figure>,
    /// The last 13 weeks ending this one: (week ending, reach, engaged users), for the chart.
    pub trend: Vec<(NaiveDate, Option<f64>, Option<f64>)>,
    pub top: Vec<PracticeLine>,
    pub bottom: Vec<PracticeLine>,
    pub practices_with_data: usize,
    pub bands: Vec<BandLine>,
    pub bands_window_end: Option<NaiveDate>,
    /// The latest window computed at all (when it is not this week's).
    pub bands_latest_available: Option<NaiveDate>,
    pub campaigns: Vec<CampaignLine>,
    pub alerts: Vec<Alert>,
    pub anomalies: Vec<Alert>,
    /// Every page has all seven days of the week stored.
    pub complete: bool,
    pub run: Option<RunInfo>,
}

impl Digest {
    /// Whether there is anything to tell: a week without data is not sent.
    pub fn has_data(&self) -> bool {
        self.headline.first().is_some_and(|f| f.now.is_some())
    }
}

/// How many practices are named at each end of the league.
const LEAGUE: usize = 3;
/// A practice is an anomaly when its week is this many robust SDs from its own previous weeks.
const ANOMALY_SCORE: f64 = 3.5;
/// Weeks of a practice's own history its usual range is judged from.
const HISTORY_WEEKS: i64 = 8;

/// Gathers `tenant`'s digest for the week ending `week_end` (a Sunday) as the operator.
pub async fn build<S: Store>(store: &S, config: &Config, tenant: &str, week_end: NaiveDate) -> AppResult<Digest> {
    let access = config.operator_access();
    let tenant_cfg = config
        .tenants
        .iter()
        .find(|t| t.id.as_str() == tenant)
        .ok_or_else(|| AppError::not_found(format!("no tenant `{tenant}` in {}", config.path.display())))?;
    let week_start = week_end - Duration::days(6);
    let directory = Directory::load(config)?;
    let names = directory.names.get(tenant).cloned().unwrap_or_default();
    let name_of = |code: &str| names.get(code).cloned().unwrap_or_else(|| code.to_owned());
    let read = |kind: Kind| {
        let mut q = ReportQuery::new(kind);
        q.tenant = Some(tenant.to_owned());
        q
    };

    let (headline, trend) = headline_and_trend(store, config, &access, tenant, week_end).await?;

    // Practices: engagements per 1,000 registered patients this week; their own history for anomalies.
    let mut rq = read(Kind::Reach);
    rq.from = Some(week_end - Duration::weeks(HISTORY_WEEKS));
    rq.to = Some(week_end);
    let reach = report::query(store, config, &access, &rq).await?;
    let mut practices = practice_week(&reach, &directory, &name_of, week_end);

    let ages = age_window(store, config, &access, tenant, week_start, week_end).await?;

    // Campaigns live in the week or ended in the four weeks before; the tenant total of each metric.
    let camps = report::query(store, config, &access, &read(Kind::Campaigns)).await?.campaign_effects()?;
    let mut campaigns = campaign_lines(&camps, week_start, week_end);
    let listed = pulse_app::campaigns::listed(store, config, &access, Some(tenant)).await?;
    for c in &mut campaigns {
        c.post_hoc = pulse_app::campaigns::label(&listed, tenant, &c.name) == Some(pulse_app::campaigns::POST_HOC);
    }

    // Data quality: what concerns the week or is still open (re-authorisation first).
    let quality = report::query(store, config, &access, &read(Kind::Quality)).await?;
    let mut alerts = alerts_of(quality.quality_checks()?, week_start, &name_of);
    // Pages the daily token check found needing re-authorisation, each with a working invitation link.
    let scope = access.scope(tenant)?;
    for a in pulse_app::health::attention(store, config, &scope).await? {
        let link = match &a.link {
            Some(l) => format!(" Send the practice's manager this link to connect the page again: {l}"),
            None => format!(
                " Send the practice an invitation: pulse pages invite --tenant {tenant} --practice {}",
                a.practice
            ),
        };
        alerts.insert(
            0,
            Alert {
                name: name_of(&a.practice),
                kind: "token".into(),
                practice: a.practice,
                detail: format!("{}.{link}", a.problem),
            },
        );
    }

    set_aside_explained(&mut practices.anomalies, &camps, week_start, week_end);

    Ok(Digest {
        tenant: tenant.to_owned(),
        tenant_name: tenant_cfg.name.clone(),
        week_start,
        week_end,
        headline,
        trend,
        top: practices.top,
        bottom: practices.bottom,
        practices_with_data: practices.with_data,
        bands: ages.bands,
        bands_window_end: ages.window_end.map(from_day),
        bands_latest_available: ages.latest_available.map(from_day),
        campaigns,
        alerts,
        anomalies: practices.anomalies,
        complete: practices.complete,
        run: reach.run.clone(),
    })
}

/// The week's headline figures against the week before and the same week a year earlier (people reached, engaged
/// users, posts published), and the last 13 weeks for the chart, as published (rounded).
async fn headline_and_trend<S: Store>(
    store: &S,
    config: &Config,
    access: &pulse_config::Access,
    tenant: &str,
    week_end: NaiveDate,
) -> AppResult<(Vec<Figure>, Vec<(NaiveDate, Option<f64>, Option<f64>)>)> {
    let ov = overview::weekly(store, config, access, Some(tenant), None, Some(week_end)).await?;
    let this = ov.latest.as_ref().filter(|w| w.ending == week_end);
    let prev = this.and(ov.previous.as_ref());
    let last_year = this.and(ov.last_year.as_ref());
    let trend = ov
        .weeks
        .iter()
        .filter(|w| w.ending > week_end - Duration::weeks(13))
        // Drawn from the published (rounded) figures: a chart's points are published too.
        .map(|w| (w.ending, published_count(w.reach), published_count(w.engaged_users)))
        .collect();

    // Posts: how many were published in each of the three weeks.
    let mut pq = ReportQuery::new(Kind::Posts);
    pq.tenant = Some(tenant.to_owned());
    let posts = report::query(store, config, access, &pq).await?;
    let posts = posts.post_views()?;
    let posts_in = |end: NaiveDate| -> Option<f64> {
        let from = end - Duration::days(6);
        let n = posts.iter().filter(|p| p.created.is_some_and(|d| d >= from && d <= end)).count();
        this.map(|_| n as f64)
    };
    let headline = vec![
        Figure {
            label: "People reached",
            note: "sum of the pages' weekly reach (people who follow several pages count once per page)",
            now: this.and_then(|w| w.reach),
            previous: prev.and_then(|w| w.reach),
            last_year: last_year.and_then(|w| w.reach),
            people: true,
        },
        Figure {
            label: "Engaged users",
            note: "sum of the pages' weekly engaged users",
            now: this.and_then(|w| w.engaged_users),
            previous: prev.and_then(|w| w.engaged_users),
            last_year: last_year.and_then(|w| w.engaged_users),
            people: true,
        },
        Figure {
            label: "Posts published",
            note: "posts created in the week",
            now: posts_in(week_end),
            previous: prev.and_then(|_| posts_in(week_end - Duration::days(7))),
            last_year: last_year.and_then(|_| posts_in(week_end - Duration::days(364))),
            people: false,
        },
    ];
    Ok((headline, trend))
}

/// The practices' week: the league by engagements per 1,000 registered patients, anomalies against each practice's
/// own previous weeks, and whether every page has all seven days.
struct PracticeWeek {
    top: Vec<PracticeLine>,
    bottom: Vec<PracticeLine>,
    with_data: usize,
    anomalies: Vec<Alert>,
    complete: bool,
}

fn practice_week(
    reach: &report::ReportAnswer,
    directory: &Directory,
    name_of: &dyn Fn(&str) -> String,
    week_end: NaiveDate,
) -> PracticeWeek {
    let (code, ending, engagements) = (
        Col::of(&reach.batch, "practice_code"),
        Col::of(&reach.batch, "week_ending"),
        Col::of(&reach.batch, "engagements"),
    );
    // practice -> week -> engagements (a practice's pages summed).
    let mut by_practice: BTreeMap<String, BTreeMap<i32, f64>> = BTreeMap::new();
    for i in 0..reach.batch.num_rows() {
        if let (Some(w), Some(e)) = (ending.day(i), engagements.num(i)) {
            *by_practice.entry(code.text(i).to_owned()).or_default().entry(w).or_default() += e;
        }
    }
    let this_week = day_number(week_end);
    // Each week's practices as a research export publishes them (controlled rounding over the tenant's practices),
    // so the digest and an export agree on every practice-week; `None`: suppressed.
    let mut weeks: BTreeMap<i32, BTreeMap<String, Option<f64>>> = BTreeMap::new();
    for (code, by_week) in &by_practice {
        for (w, e) in by_week {
            weeks.entry(*w).or_default().insert(code.clone(), Some(*e));
        }
    }
    let shown: BTreeMap<i32, BTreeMap<String, Option<i64>>> =
        weeks.iter().map(|(w, members)| (*w, pulse_export::publish_group(members))).collect();
    let shown_of = |code: &str, w: i32| shown.get(&w).and_then(|m| m.get(code).copied().flatten()).map(|v| v as f64);
    // Whether every page has all seven days of the week (Meta closes a Pacific day at 08:00 or 09:00 London).
    let days = Col::of(&reach.batch, "days_with_data");
    let week_rows: Vec<usize> = (0..reach.batch.num_rows()).filter(|i| ending.day(*i) == Some(this_week)).collect();
    let complete = !week_rows.is_empty() && week_rows.iter().all(|i| days.num(*i).is_some_and(|d| d >= 7.0));
    let mut league: Vec<PracticeLine> = by_practice
        .iter()
        .filter_map(|(code, weeks)| {
            weeks.get(&this_week)?;
            let e = shown_of(code, this_week)?;
            let registered = *directory.registered.get(code).filter(|r| **r > 0.0)?;
            Some(PracticeLine {
                code: code.clone(),
                name: name_of(code),
                engagements: e,
                registered,
                per_1000: published_rate(e, registered)?,
            })
        })
        .collect();
    league.sort_by(|a, b| b.per_1000.total_cmp(&a.per_1000).then_with(|| a.code.cmp(&b.code)));
    let top: Vec<PracticeLine> = league.iter().take(LEAGUE).cloned().collect();
    let bottom: Vec<PracticeLine> =
        league.iter().rev().take(LEAGUE.min(league.len().saturating_sub(top.len()))).cloned().collect();
    PracticeWeek {
        with_data: league.len(),
        top,
        bottom,
        anomalies: anomalies_of(&by_practice, this_week, &shown_of, name_of),
        complete,
    }
}

/// Practices whose week is far from their own previous weeks (robust z-score) and outside all of them; judged on the
/// exact figures, shown as published.
fn anomalies_of(
    by_practice: &BTreeMap<String, BTreeMap<i32, f64>>,
    this_week: i32,
    shown_of: &dyn Fn(&str, i32) -> Option<f64>,
    name_of: &dyn Fn(&str) -> String,
) -> Vec<Alert> {
    let mut anomalies = Vec::new();
    for (code, weeks) in by_practice {
        let Some(now) = weeks.get(&this_week) else { continue };
        let history: Vec<f64> = weeks.iter().filter(|(w, _)| **w < this_week).map(|(_, v)| *v).collect();
        if history.len() < 4 {
            continue;
        }
        let med = median(&history);
        let mad = median(&history.iter().map(|x| (x - med).abs()).collect::<Vec<_>>()).max(1.0);
        let z = 0.6745 * (now - med) / mad;
        let (lo, hi) = history.iter().fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(*v), b.max(*v)));
        // Far from its median in robust terms, and outside everything it did in the weeks before.
        if z.abs() >= ANOMALY_SCORE && (*now > hi || *now < lo) {
            // Judged on the exact figures; shown as published (the same practice-weeks as an export shows them).
            let published: Vec<f64> =
                weeks.keys().filter(|w| **w < this_week).filter_map(|w| shown_of(code, *w)).collect();
            let show = |v: Option<f64>| v.map_or_else(|| "fewer than 8".to_owned(), thousands);
            let (p_lo, p_hi) = published.iter().fold((None::<f64>, None::<f64>), |(a, b), v| {
                (Some(a.map_or(*v, |a| a.min(*v))), Some(b.map_or(*v, |b| b.max(*v))))
            });
            let med = (!published.is_empty()).then(|| median(&published));
            let (word, bound) = if *now > hi {
                ("above", format!("highest {}", show(p_hi)))
            } else {
                ("below", format!("lowest {}", show(p_lo)))
            };
            anomalies.push(Alert {
                kind: "anomaly".into(),
                practice: code.clone(),
                name: name_of(code),
                detail: format!(
                    "{} engagements this week, {word} anything in the previous {} weeks (usually about {}; {bound})",
                    show(shown_of(code, this_week)),
                    history.len(),
                    people(med),
                ),
            });
        }
    }
    anomalies
}

/// The tenant's age bands for the week, and which windows there are.
struct AgeWindow {
    bands: Vec<BandLine>,
    /// The window shown (day number).
    window_end: Option<i32>,
    /// The latest window computed at all, which says why there is none for the week.
    latest_available: Option<i32>,
}

/// The tenant's 28-day window ending with the week (the reports keep one a week, ending on its Sunday, and the
/// latest), or the day before it began.
async fn age_window<S: Store>(
    store: &S,
    config: &Config,
    access: &pulse_config::Access,
    tenant: &str,
    week_start: NaiveDate,
    week_end: NaiveDate,
) -> AppResult<AgeWindow> {
    let mut aq = ReportQuery::new(Kind::AgeBands);
    aq.tenant = Some(tenant.to_owned());
    (aq.from, aq.to) = (Some(week_start - chrono::Duration::days(1)), Some(week_end));
    let ages = report::query(store, config, access, &aq).await?;
    let (level, window, band, ppl, reg, source) = (
        Col::of(&ages.batch, "level"),
        Col::of(&ages.batch, "window_end"),
        Col::of(&ages.batch, "age_band"),
        Col::of(&ages.batch, "people"),
        Col::of(&ages.batch, "registered"),
        Col::of(&ages.batch, "source"),
    );
    let tenant_rows: Vec<usize> = (0..ages.batch.num_rows()).filter(|i| level.text(*i) == "tenant").collect();
    let latest_window = tenant_rows
        .iter()
        .filter_map(|i| window.day(*i))
        .filter(|d| *d <= day_number(week_end) && *d >= day_number(week_start) - 1)
        .max();
    // Without a window for the week, the latest computed says why: not computed yet, or none that week.
    let available = match latest_window {
        Some(w) => Some(w),
        None => {
            aq.from = None;
            aq.to = None;
            let latest = report::query(store, config, access, &aq).await?;
            let w = Col::of(&latest.batch, "window_end");
            (0..latest.batch.num_rows()).filter_map(|i| w.day(i)).max()
        }
    };
    let first_source = tenant_rows.iter().find(|i| window.day(**i) == latest_window).map(|i| source.text(*i));
    let bands = tenant_rows
        .iter()
        .filter(|i| window.day(**i) == latest_window && Some(source.text(**i)) == first_source)
        .map(|i| BandLine {
            band: band.text(*i).to_owned(),
            people: ppl.num(*i),
            registered: reg.num(*i),
            // From the published count: none when it is withheld (fewer than 8) or there is no list size.
            penetration: published_count(ppl.num(*i)).zip(reg.num(*i).filter(|r| *r > 0.0)).map(|(p, r)| p / r),
        })
        .collect();
    Ok(AgeWindow { bands, window_end: latest_window, latest_available: available })
}

/// The campaigns live in the week or ended in the four weeks before, each as the tenant's total of its metric,
/// published as a research export would publish it.
fn campaign_lines(camps: &[CampaignEffectView], week_start: NaiveDate, week_end: NaiveDate) -> Vec<CampaignLine> {
    let mut campaigns = Vec::new();
    for c in camps {
        let (Some(from), Some(to)) = (c.window_from, c.window_to) else { continue };
        let live = from <= week_end && to >= week_start;
        let recent = to < week_start && to >= week_start - Duration::days(28);
        if c.practice_code != "ALL" || !(live || recent) {
            continue;
        }
        // As a research export publishes them: the effect is the published observed less the counterfactual
        // rounded to 5, the interval rounded to 5, none when the observed is 1 to 7 (the exact effect beside a
        // published counterfactual would give the observed back).
        let r5 = |v: Option<f64>| v.map(|v| pulse_export::round5(v) as f64);
        let observed = published_count(c.observed);
        let cf = r5(c.counterfactual);
        let shown = observed.is_some() && c.effect.is_some();
        let effect = if shown { observed.zip(cf).map(|(o, c)| o - c) } else { None };
        let (lo, hi, lvl) =
            if shown { (r5(c.effect_lo), r5(c.effect_hi), c.interval_level) } else { (None, None, None) };
        let words = match (effect, lo, hi) {
            (Some(e), Some(l), Some(h)) => {
                campaign_words(&c.metric.replace('_', " "), e, l, h, lvl, cf.filter(|_| shown))
            }
            _ if !shown && c.effect.is_some() => "not shown: fewer than 8 observed".to_owned(),
            _ => format!("no estimate yet: {}", if c.note.is_empty() { "not enough data" } else { &c.note }),
        };
        campaigns.push(CampaignLine {
            name: c.campaign.clone(),
            metric: c.metric.clone(),
            window_from: from,
            window_to: to,
            live,
            effect,
            lo,
            hi,
            level: lvl,
            words,
            post_hoc: false,
        });
    }
    campaigns
}

/// Data-quality findings that concern the week or are still open, re-authorisation first.
fn alerts_of(checks: Vec<QualityCheckView>, week_start: NaiveDate, name_of: &dyn Fn(&str) -> String) -> Vec<Alert> {
    let mut alerts: Vec<Alert> = checks
        .into_iter()
        .filter(|q| {
            q.check_name == "reauth"
                || q.check_name == "stale"
                || q.day_to.is_some_and(|d| d >= week_start - Duration::days(7))
        })
        .map(|q| Alert {
            name: name_of(&q.practice_code),
            kind: q.check_name,
            practice: q.practice_code,
            detail: q.detail,
        })
        .collect();
    alerts.sort_by_key(|a| (a.kind != "reauth", a.kind != "stale", a.practice.clone()));
    alerts
}

/// An unusual week a campaign explains (a campaign on the practice, or tenant-wide, live in the week) is the
/// campaign working, not something to look at: said once per campaign, not listed.
fn set_aside_explained(
    anomalies: &mut Vec<Alert>,
    camps: &[CampaignEffectView],
    week_start: NaiveDate,
    week_end: NaiveDate,
) {
    let mut explained: BTreeMap<String, usize> = BTreeMap::new();
    anomalies.retain(|a| {
        let by = camps.iter().find(|c| {
            let (Some(from), Some(to)) = (c.window_from, c.window_to) else { return false };
            (c.practice_code == "ALL" || c.practice_code == a.practice) && from <= week_end && to >= week_start
        });
        match by {
            Some(c) => {
                *explained.entry(c.campaign.clone()).or_default() += 1;
                false
            }
            None => true,
        }
    });
    for (campaign, n) in explained {
        anomalies.push(Alert {
            kind: "explained".into(),
            practice: String::new(),
            name: String::new(),
            detail: format!(
                "{n} practice{} had an unusual week that the campaign `{campaign}`, live this week, explains; not listed",
                if n == 1 { "" } else { "s" }
            ),
        });
    }
}

fn day_number(d: NaiveDate) -> i32 {
    pulse_domain::day_number(d)
}

fn from_day(n: i32) -> NaiveDate {
    pulse_domain::from_day_number(n)
}

use crate::render::comparison;
pub use crate::render::{Links, Picture, Rendered, render};

/// Every figure the digest publishes, as the disclosure auditor reads them (`crates/pulse-export/audit/disclosure_audit.py`): counts of
/// people as shown, the changes, rates and shares computed from them with what they are computed from, the chart's
/// points, and each campaign's effect as shown (the digest publishes no total its named practices add up to; the
/// "needs attention" lines quote practice-weeks as published, through the same controlled rounding). The texts are made by the same functions as the email's, and the digest test checks each one appears in it.
pub fn published_figures(d: &Digest) -> serde_json::Value {
    use serde_json::json;
    let mut counts = Vec::new();
    let mut changes = Vec::new();
    let mut rates = Vec::new();
    let mut count = |id: String, v: Option<f64>| {
        counts.push(json!({"id": id, "shown": people(v)}));
        id
    };
    for f in d.headline.iter().filter(|f| f.people && f.now.is_some()) {
        let now = count(format!("{} this week", f.label), f.now);
        for (when, before) in [("week before", f.previous), ("same week last year", f.last_year)] {
            if before.is_some() {
                let id = count(format!("{} {when}", f.label), before);
                let shown = comparison(f, before);
                changes.push(json!({"now": now, "before": id, "shown": shown.split(' ').next().unwrap_or(""), "of": "published"}));
            }
        }
    }
    for (end, reach, engaged) in &d.trend {
        count(format!("chart: reach, week to {end}"), *reach);
        count(format!("chart: engaged users, week to {end}"), *engaged);
    }
    for p in d.top.iter().chain(d.bottom.iter()) {
        let id = count(format!("engagements of {}", p.code), Some(p.engagements));
        rates.push(json!({"count": id, "per": p.registered, "scale": 1000, "shown": format!("{:.1}", p.per_1000), "of": "published"}));
    }
    for b in &d.bands {
        let id = count(format!("engaged people aged {}", b.band), b.people);
        if let (Some(pen), Some(reg)) = (b.penetration, b.registered) {
            rates.push(json!({"count": id, "per": reg, "scale": 100, "shown": format!("{:.1}", pen * 100.0), "of": "published"}));
        }
    }
    // Campaign effects: estimates (the published observed less the counterfactual rounded to 5), not counts.
    let estimates: Vec<serde_json::Value> = d
        .campaigns
        .iter()
        .map(|c| json!({"id": format!("effect of {} on {}", c.name, c.metric), "shown": c.words, "of": "published"}))
        .collect();
    json!({
        "kind": "practice-pulse-digest",
        "tenant": d.tenant,
        "week_end": d.week_end.to_string(),
        "counts": counts,
        "changes": changes,
        "rates": rates,
        "estimates": estimates,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_practice_rate_and_its_public_list_size_give_back_only_the_rounded_count() {
        for (e, list) in [(123.0, 4321.0), (1234.0, 9876.0), (58.0, 2500.0), (8.0, 3000.0)] {
            let shown: f64 = format!("{:.1}", published_rate(e, list).unwrap()).parse().unwrap();
            // What a reader with NHS Digital's list sizes works out from the rate shown to one decimal:
            let back = shown * list / 1000.0;
            let half_step = 0.05 * list / 1000.0;
            let rounded = pulse_export::round5(e) as f64;
            assert!((back - rounded).abs() <= half_step + 1e-9, "{e}: {back} vs {rounded}");
            assert!(
                (back - e).abs() > half_step || e == rounded,
                "{e}: the rate narrows the count to {back} ± {half_step}, not just its rounding"
            );
        }
        assert_eq!(published_rate(7.0, 3000.0), None, "a count of 1-7 has no rate either");
    }

    #[test]
    fn weeks_are_monday_to_sunday() {
        let sun = NaiveDate::from_ymd_opt(2018, 3, 11).unwrap();
        assert_eq!(parse_week("2018-W10").unwrap(), sun);
        assert_eq!(parse_week("2018-03-05").unwrap(), sun);
        assert_eq!(parse_week("2018-03-11").unwrap(), sun);
        assert_eq!(last_whole_week(NaiveDate::from_ymd_opt(2018, 3, 12).unwrap()), sun);
        assert_eq!(last_whole_week(NaiveDate::from_ymd_opt(2018, 3, 18).unwrap()), sun);
        assert!(parse_week("2018-W60").is_err() && parse_week("next week").is_err());
        assert_eq!(parse_week("2018-02-30").unwrap_err().field.as_deref(), Some("week"));
    }

    #[test]
    fn counts_of_people_are_rounded_and_small_ones_withheld() {
        assert_eq!(people(Some(3.0)), "fewer than 8");
        assert_eq!(people(Some(0.0)), "0");
        assert_eq!(people(Some(1234.0)), "1,235");
        assert_eq!(people(None), "n/a");
    }
}
