//! When and what to post: from the tenant's post performance report, how the people a post reaches engage with it by
//! the hour and day it went up (Europe/London) and by topic (the config's keyword and hashtag dictionaries), and how
//! a practice's posts' engagement per 1,000 registered patients grows with how often it posts.
//!
//! The measure is engaged users per 100 people reached, summed over a cell's posts (a ratio of sums, so a big post
//! counts for its reach), shown relative to all the analysed posts of the tenant. Intervals are 95% percentile
//! intervals from [`RESAMPLES`] resamples of the tenant's pages (posts of one page are not independent). Campaign
//! posts are left out (they are measured by uplift), and so are posts of the last [`SETTLE_DAYS`] days before the
//! reports' last day, still gathering engagement. The simulator's posting effects are the known truth these are
//! validated against (the tests below, and `posting_is_analysed_by_hour_day_topic_and_cadence` in the API's tests).

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Datelike, Duration, NaiveDate, Timelike, Utc};
use pulse_app::columns::Col;
use pulse_app::error::{AppError, AppResult, ErrorKind};
use pulse_app::report::{self, Kind, ReportQuery};
use pulse_config::{Access, Config, TopicConfig};
use pulse_store::Store;
use serde::Serialize;

use crate::Directory;

/// Resamples of the tenant's pages behind each interval.
pub const RESAMPLES: usize = 400;
/// A cell's estimate is shown with at least this many posts in it.
pub const MIN_POSTS: usize = 20;
/// Posts of the reports' last days are still gathering engagement: left out.
pub const SETTLE_DAYS: i64 = 7;
/// The default range: the last year of the tenant's reports.
pub const DEFAULT_WEEKS: i64 = 52;
/// A cadence fit needs at least this many practices.
pub const MIN_PRACTICES_FIT: usize = 8;

pub const MEASURE: &str = "engaged users per 100 people reached (engagements where the API gives no engaged users)";
const NO_TOPIC: &str = "None of these topics";
const WEEKDAYS: [&str; 7] = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"];

/// One analysed post.
#[derive(Debug, Clone)]
pub struct PostFacts {
    pub practice: String,
    pub page: String,
    pub posted: DateTime<Utc>,
    pub text: String,
    pub reach: f64,
    pub engaged: f64,
}

/// A group of posts (an hour, a day, a topic).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Cell {
    pub key: String,
    pub posts: usize,
    pub pages: usize,
    /// Engaged per 100 reached, with at least [`MIN_POSTS`] posts.
    pub rate: Option<f64>,
    /// `rate` over the rate of all the analysed posts (1.2: a fifth more engaging than the tenant's average post).
    pub relative: Option<f64>,
    /// The 95% interval of `relative`.
    pub low: Option<f64>,
    pub high: Option<f64>,
}

/// An estimate with its 95% interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Estimate {
    pub value: f64,
    pub low: f64,
    pub high: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct PracticeCadence {
    pub code: String,
    pub name: String,
    pub posts: usize,
    pub posts_per_week: f64,
    /// Its posts' engaged users per week per 1,000 registered patients (none without a known list size).
    pub engaged_per_1000: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Cadence {
    pub practices: Vec<PracticeCadence>,
    /// The slope of log(engaged per 1,000 a week) on log(posts a week) across practices: 1 when each extra post
    /// engages as many as the others, below 1 when posting more engages fewer per post.
    pub elasticity: Option<Estimate>,
    /// What doubling the posts does to each post's engagement, relative (-0.2: a fifth fewer engage per post).
    pub per_post_when_doubled: Option<Estimate>,
}

/// A topic of the dictionary used, with its terms.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct TopicTerms {
    pub name: String,
    pub keywords: Vec<String>,
    pub hashtags: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Posting {
    pub tenant: String,
    #[schema(value_type = String)]
    pub from: NaiveDate,
    #[schema(value_type = String)]
    pub to: NaiveDate,
    /// The last posting day analysed (later posts are still gathering engagement).
    #[schema(value_type = String)]
    pub analysed_to: NaiveDate,
    pub measure: String,
    pub posts: usize,
    pub pages: usize,
    /// Engaged per 100 reached over every analysed post.
    pub overall_rate: Option<f64>,
    pub by_hour: Vec<Cell>,
    pub by_weekday: Vec<Cell>,
    pub by_topic: Vec<Cell>,
    pub topics: Vec<TopicTerms>,
    pub cadence: Cadence,
    pub notes: Vec<String>,
}

/// What [`analyse`] finds.
#[derive(Debug, Clone, PartialEq)]
pub struct Analysis {
    pub overall_rate: Option<f64>,
    pub by_hour: Vec<Cell>,
    pub by_weekday: Vec<Cell>,
    pub by_topic: Vec<Cell>,
    pub cadence: Cadence,
}

#[derive(Debug, Clone, Copy, Default)]
struct Sums {
    engaged: f64,
    reach: f64,
    posts: usize,
}

impl Sums {
    fn add(&mut self, o: &Sums) {
        self.engaged += o.engaged;
        self.reach += o.reach;
        self.posts += o.posts;
    }
    fn rate(&self) -> Option<f64> {
        (self.reach > 0.0).then(|| self.engaged / self.reach)
    }
}

/// A small deterministic generator (SplitMix64): the same posts give the same intervals.
struct Draws(u64);

impl Draws {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        ((z >> 11) as f64 / (1u64 << 53) as f64 * n as f64) as usize % n.max(1)
    }
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    sorted[((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1]
}

fn interval(mut draws: Vec<f64>) -> Option<(f64, f64)> {
    // Resamples with no post of the cell say nothing about it; too many of them and there is no interval.
    if draws.len() < RESAMPLES * 9 / 10 {
        return None;
    }
    draws.sort_by(f64::total_cmp);
    Some((percentile(&draws, 0.025), percentile(&draws, 0.975)))
}

/// One dimension's cells: `key_of` gives each post's (by its index) keys (indexes into `keys`); `page_of` its page (0..pages).
fn dimension(
    posts: &[PostFacts],
    page_of: &[usize],
    pages: usize,
    keys: &[String],
    key_of: impl Fn(usize) -> Vec<usize>,
    seed: u64,
) -> Vec<Cell> {
    let k = keys.len();
    // Per page: each key's sums, and (at k) all of the page's posts.
    let mut by_page = vec![vec![Sums::default(); k + 1]; pages];
    let mut pages_in = vec![BTreeSet::new(); k];
    for (i, (p, &page)) in posts.iter().zip(page_of).enumerate() {
        let one = Sums { engaged: p.engaged, reach: p.reach, posts: 1 };
        for key in key_of(i) {
            by_page[page][key].add(&one);
            pages_in[key].insert(page);
        }
        by_page[page][k].add(&one);
    }
    let mut totals = vec![Sums::default(); k + 1];
    by_page.iter().for_each(|row| totals.iter_mut().zip(row).for_each(|(t, s)| t.add(s)));
    let mut draws = vec![Vec::with_capacity(RESAMPLES); k];
    let mut rng = Draws(seed);
    for _ in 0..RESAMPLES {
        let mut s = vec![Sums::default(); k + 1];
        for _ in 0..pages {
            let row = &by_page[rng.below(pages)];
            s.iter_mut().zip(row).for_each(|(t, x)| t.add(x));
        }
        let Some(all) = s[k].rate().filter(|r| *r > 0.0) else { continue };
        for j in 0..k {
            if let Some(r) = s[j].rate() {
                draws[j].push(r / all);
            }
        }
    }
    let overall = totals[k].rate().filter(|r| *r > 0.0);
    keys.iter()
        .enumerate()
        .zip(draws)
        .filter(|((j, _), _)| totals[*j].posts > 0)
        .map(|((j, key), d)| {
            let shown = totals[j].posts >= MIN_POSTS;
            let rate = totals[j].rate().filter(|_| shown);
            let relative = rate.zip(overall).map(|(r, o)| r / o);
            let ci = relative.and_then(|_| interval(d));
            Cell {
                key: key.clone(),
                posts: totals[j].posts,
                pages: pages_in[j].len(),
                rate: rate.map(|r| r * 100.0),
                relative,
                low: ci.map(|c| c.0),
                high: ci.map(|c| c.1),
            }
        })
        .collect()
}

/// The slope of y on x (least squares), when x varies.
fn slope(points: &[(f64, f64)]) -> Option<f64> {
    let n = points.len() as f64;
    let (mx, my) = points.iter().fold((0.0, 0.0), |a, p| (a.0 + p.0 / n, a.1 + p.1 / n));
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    (sxx > 1e-9).then(|| sxy / sxx)
}

/// The analyses of `posts` (none of them a campaign's) over `weeks` weeks, pure: what the tests validate.
pub fn analyse(
    posts: &[PostFacts],
    topics: &[TopicConfig],
    registered: &BTreeMap<String, f64>,
    names: &BTreeMap<String, String>,
    weeks: f64,
) -> Analysis {
    let page_ids: Vec<&str> = posts.iter().map(|p| p.page.as_str()).collect::<BTreeSet<_>>().into_iter().collect();
    let page_of: Vec<usize> =
        posts.iter().map(|p| page_ids.binary_search(&p.page.as_str()).expect("every page listed")).collect();
    let london = |p: &PostFacts| p.posted.with_timezone(&chrono_tz::Europe::London);
    let hours: Vec<String> = (0..24).map(|h| format!("{h:02}:00")).collect();
    let by_hour = dimension(posts, &page_of, page_ids.len(), &hours, |i| vec![london(&posts[i]).hour() as usize], 1);
    let days: Vec<String> = WEEKDAYS.iter().map(|d| (*d).to_owned()).collect();
    let by_weekday = dimension(
        posts,
        &page_of,
        page_ids.len(),
        &days,
        |i| vec![london(&posts[i]).weekday().num_days_from_monday() as usize],
        2,
    );
    let mut topic_keys: Vec<String> = topics.iter().map(|t| t.name.clone()).collect();
    topic_keys.push(NO_TOPIC.to_owned());
    let texts: Vec<String> = posts.iter().map(|p| p.text.to_lowercase()).collect();
    let by_topic = dimension(
        posts,
        &page_of,
        page_ids.len(),
        &topic_keys,
        |i| {
            let text = &texts[i];
            let hits: Vec<usize> =
                topics.iter().enumerate().filter(|(_, t)| t.matches_lowercase(text)).map(|(i, _)| i).collect();
            if hits.is_empty() { vec![topics.len()] } else { hits }
        },
        3,
    );
    let overall: Sums = posts.iter().fold(Sums::default(), |mut s, p| {
        s.add(&Sums { engaged: p.engaged, reach: p.reach, posts: 1 });
        s
    });
    Analysis {
        overall_rate: overall.rate().map(|r| r * 100.0),
        by_hour,
        by_weekday,
        by_topic,
        cadence: cadence(posts, registered, names, weeks),
    }
}

fn cadence(
    posts: &[PostFacts],
    registered: &BTreeMap<String, f64>,
    names: &BTreeMap<String, String>,
    weeks: f64,
) -> Cadence {
    let mut per: BTreeMap<&str, (usize, f64)> = BTreeMap::new();
    for p in posts {
        let e = per.entry(p.practice.as_str()).or_default();
        e.0 += 1;
        e.1 += p.engaged;
    }
    let practices: Vec<PracticeCadence> = per
        .iter()
        .map(|(code, (n, engaged))| PracticeCadence {
            code: (*code).to_owned(),
            name: names.get(*code).cloned().unwrap_or_else(|| (*code).to_owned()),
            posts: *n,
            posts_per_week: *n as f64 / weeks,
            engaged_per_1000: registered.get(*code).filter(|r| **r > 0.0).map(|r| engaged / weeks / r * 1000.0),
        })
        .collect();
    let points: Vec<(f64, f64)> = practices
        .iter()
        .filter_map(|p| Some((p.posts_per_week.ln(), p.engaged_per_1000.filter(|e| *e > 0.0)?.ln())))
        .collect();
    let elasticity = (points.len() >= MIN_PRACTICES_FIT).then(|| slope(&points)).flatten().and_then(|value| {
        let mut rng = Draws(4);
        let mut draws = Vec::with_capacity(RESAMPLES);
        for _ in 0..RESAMPLES {
            let sample: Vec<(f64, f64)> = (0..points.len()).map(|_| points[rng.below(points.len())]).collect();
            draws.extend(slope(&sample));
        }
        interval(draws).map(|(low, high)| Estimate { value, low, high })
    });
    let doubled = |b: f64| 2f64.powf(b - 1.0) - 1.0;
    Cadence {
        practices,
        elasticity,
        per_post_when_doubled: elasticity.map(|e| Estimate {
            value: doubled(e.value),
            low: doubled(e.low),
            high: doubled(e.high),
        }),
    }
}

/// The posting analyses of `tenant` (one `access` may read) over `from..=to`, by default the last year of its
/// reports.
pub async fn posting<S: Store>(
    store: &S,
    config: &Config,
    directory: &Directory,
    access: &Access,
    tenant: Option<&str>,
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
) -> AppResult<Posting> {
    let scope = pulse_app::tenant::resolve(access, tenant, "tenant", "add ?tenant=<id>")?;
    let me = scope.to_string();
    let Some(run) = report::main_run(store, access, &me).await? else {
        return Err(AppError::new(ErrorKind::NotReady, format!("tenant {me}'s reports have not been computed"))
            .with_hint("an operator runs `pulse jobs run` after an ingest"));
    };
    let to = to.unwrap_or(run.range_to);
    let from = from.unwrap_or(to - Duration::weeks(DEFAULT_WEEKS) + Duration::days(1));
    if from > to {
        return Err(AppError::bad_request(format!("from ({from}) is after to ({to})")).at("from"));
    }
    if (to - from).num_days() > crate::MAX_RANGE_DAYS {
        return Err(AppError::bad_request(format!("the range {from} to {to} spans more than three years"))
            .with_hint("ask for up to three years")
            .at("from"));
    }
    let analysed_to = to.min(run.range_to - Duration::days(SETTLE_DAYS));
    let mut notes = Vec::new();
    let mut posts = Vec::new();
    let (mut campaign_posts, mut untimed) = (0usize, 0usize);
    if analysed_to >= from {
        let mut q = ReportQuery::new(Kind::Posts);
        q.tenant = Some(me.clone());
        (q.from, q.to) = (Some(from), Some(analysed_to));
        let b = report::query(store, config, access, &q).await?.batch;
        let (code, page, posted, excerpt, topic, reach, engaged, engagements) = (
            Col::of(&b, "practice_code"),
            Col::of(&b, "page_id"),
            Col::of(&b, "posted_at"),
            Col::of(&b, "excerpt"),
            Col::of(&b, "topic"),
            Col::of(&b, "reach"),
            Col::of(&b, "engaged_users"),
            Col::of(&b, "engagements"),
        );
        for i in 0..b.num_rows() {
            if topic.text(i) == "campaign" {
                campaign_posts += 1;
                continue;
            }
            let Ok(at) = DateTime::parse_from_rfc3339(posted.text(i)) else {
                untimed += 1;
                continue;
            };
            let (Some(reach), Some(engaged)) = (reach.num(i), engaged.num(i).or(engagements.num(i))) else { continue };
            if reach <= 0.0 {
                continue;
            }
            posts.push(PostFacts {
                practice: code.text(i).to_owned(),
                page: page.text(i).to_owned(),
                posted: at.with_timezone(&Utc),
                text: excerpt.text(i).to_owned(),
                reach,
                engaged,
            });
        }
    }
    if analysed_to < to {
        notes.push(format!(
            "posts after {analysed_to} are left out: they are still gathering engagement ({SETTLE_DAYS} days before \
             the reports' last day, {})",
            run.range_to
        ));
    }
    if campaign_posts > 0 {
        notes.push(format!("{campaign_posts} campaign posts are left out (their effect is in the campaigns report)"));
    }
    if untimed > 0 {
        notes.push(format!(
            "{untimed} posts have no posting time (computed before migration 10): run `pulse jobs run --full`"
        ));
    }
    notes.push(
        "topics are matched in the first 160 characters of a post's text (the report's excerpt); a post in two \
         topics counts in both"
            .to_owned(),
    );
    let topics = pulse_config::topics::for_tenant(&config.topics, &me);
    let names = directory.names.get(&me).cloned().unwrap_or_default();
    let registered: BTreeMap<String, f64> =
        names.keys().filter_map(|c| directory.registered.get(c).map(|r| (c.clone(), *r))).collect();
    let weeks = ((analysed_to - from).num_days() + 1).max(1) as f64 / 7.0;
    let a = analyse(&posts, &topics, &registered, &names, weeks);
    Ok(Posting {
        tenant: me,
        from,
        to,
        analysed_to,
        measure: MEASURE.to_owned(),
        posts: posts.len(),
        pages: posts.iter().map(|p| p.page.as_str()).collect::<BTreeSet<_>>().len(),
        overall_rate: a.overall_rate,
        by_hour: a.by_hour,
        by_weekday: a.by_weekday,
        by_topic: a.by_topic,
        topics: topics
            .into_iter()
            .map(|t| TopicTerms { name: t.name, keywords: t.keywords, hashtags: t.hashtags })
            .collect(),
        cadence: a.cadence,
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use pulse_sim::scenario;
    use pulse_sim::world::World;

    /// A tenant's posts but campaigns' over a year as the analysis reads them, and each post's expected engaged share.
    fn year_of_posts(world: &World, tenant: usize) -> (Vec<PostFacts>, Vec<f64>, BTreeMap<String, f64>) {
        let (start, end) =
            (NaiveDate::from_ymd_opt(2017, 3, 1).unwrap(), NaiveDate::from_ymd_opt(2018, 2, 28).unwrap());
        let (mut posts, mut effects, mut registered) = (Vec::new(), Vec::new(), BTreeMap::new());
        for page in world.pages.iter().filter(|p| world.practices[p.practice].tenant == tenant) {
            let practice = &world.practices[page.practice];
            registered.insert(practice.code.to_string(), f64::from(practice.list_size));
            let mut day = start;
            while day <= end {
                for p in world.posts_on(page.index, day).into_iter().filter(|p| p.campaign.is_none()) {
                    posts.push(PostFacts {
                        practice: practice.code.to_string(),
                        page: page.id.clone(),
                        posted: World::created_time(&p),
                        text: p.message.clone(),
                        reach: p.totals.reach.round(),
                        engaged: p.totals.engaged.round(),
                    });
                    effects.push(p.expected_engaged_share);
                }
                day += Duration::days(1);
            }
        }
        (posts, effects, registered)
    }

    /// The true relative effect of each cell: the reach-weighted mean of its posts' expected engaged shares over all
    /// posts' (service notices engage more than ordinary posts: they are in the truth too).
    fn truth(
        cells: &[Cell],
        posts: &[PostFacts],
        effects: &[f64],
        key_of: impl Fn(&PostFacts) -> Vec<String>,
    ) -> Vec<Option<f64>> {
        let mean = |pick: &dyn Fn(&PostFacts) -> bool| {
            let (w, r) = posts
                .iter()
                .zip(effects)
                .filter(|(p, _)| pick(p))
                .fold((0.0, 0.0), |a, (p, e)| (a.0 + p.reach * e, a.1 + p.reach));
            w / r
        };
        let all = mean(&|_| true);
        cells.iter().map(|c| c.relative.map(|_| mean(&|p| key_of(p).contains(&c.key)) / all)).collect()
    }

    fn hour_key(p: &PostFacts) -> Vec<String> {
        vec![format!("{:02}:00", p.posted.with_timezone(&chrono_tz::Europe::London).hour())]
    }

    fn weekday_key(p: &PostFacts) -> Vec<String> {
        vec![
            WEEKDAYS[p.posted.with_timezone(&chrono_tz::Europe::London).weekday().num_days_from_monday() as usize]
                .to_owned(),
        ]
    }

    /// Over 4 seeds of the case study, both tenants: every hour, day and topic's 95% interval covers the injected
    /// relative effect in at least 90% of cells, the estimates are within 5% of it on average and the intervals
    /// narrower than a fifth of them; the hour with the
    /// strongest effect (09:00) is found above the weakest (16:00).
    #[test]
    fn posting_effects_injected_in_the_simulator_are_recovered_within_their_intervals() {
        let topics = pulse_config::topics::defaults();
        let topic_key = |p: &PostFacts| {
            let t = p.text.to_lowercase();
            let hits: Vec<String> = topics.iter().filter(|x| x.matches_lowercase(&t)).map(|x| x.name.clone()).collect();
            if hits.is_empty() { vec![NO_TOPIC.to_owned()] } else { hits }
        };
        let (mut cells, mut covered, mut error, mut width) = (0usize, 0usize, 0.0, 0.0);
        for seed in [1u64, 2, 3, 4] {
            let world = World::new(scenario::resolve("case-study").unwrap(), Some(seed));
            for tenant in 0..world.tenants.len() {
                let (posts, effects, registered) = year_of_posts(&world, tenant);
                let a = analyse(&posts, &topics, &registered, &BTreeMap::new(), 52.0);
                let groups: [(&Vec<Cell>, &dyn Fn(&PostFacts) -> Vec<String>); 3] =
                    [(&a.by_hour, &hour_key), (&a.by_weekday, &weekday_key), (&a.by_topic, &topic_key)];
                for (group, key_of) in groups {
                    for (c, t) in group.iter().zip(truth(group, &posts, &effects, key_of)) {
                        let (Some(t), Some(rel), Some(low), Some(high)) = (t, c.relative, c.low, c.high) else {
                            continue;
                        };
                        cells += 1;
                        if std::env::var("POSTING_DEBUG").is_ok() {
                            eprintln!(
                                "{seed} {tenant} {} n={} rel={rel:.3} [{low:.3},{high:.3}] truth={t:.3}",
                                c.key, c.posts
                            );
                        }
                        covered += usize::from(low <= t && t <= high);
                        error += (rel / t - 1.0).abs();
                        width += (high - low) / rel;
                    }
                }
                let rel = |key: &str| a.by_hour.iter().find(|c| c.key == key).and_then(|c| c.relative).unwrap();
                assert!(rel("09:00") > rel("16:00"), "seed {seed} tenant {tenant}: 09:00 should beat 16:00");
                let dna = a.by_topic.iter().find(|c| c.key == "Missed appointments (DNA)").unwrap();
                assert!(dna.high.unwrap() < 1.0, "seed {seed}: DNA posts engage less (effect 0.7): {dna:?}");
            }
        }
        eprintln!(
            "posting effects: covered {covered} of {cells} cells, mean relative error {:.4}",
            error / cells as f64
        );
        assert!(cells >= 150, "only {cells} cells had intervals");
        let coverage = covered as f64 / cells as f64;
        assert!(coverage >= 0.9, "95% intervals covered the truth in {covered} of {cells} cells");
        assert!(error / (cells as f64) < 0.05, "mean relative error {:.3}", error / cells as f64);
        // Informative too: an interval is on average narrower than a fifth of its estimate.
        assert!(width / (cells as f64) < 0.2, "mean interval width {:.3} of the estimate", width / cells as f64);
    }

    /// In a world where pages post at different cadences and each post engages fewer the more a page posts
    /// (elasticity 0.4: engagement a week grows as cadence^0.6), the fitted elasticity's interval covers 0.6 in at
    /// least 8 of 10 (seed, tenant) cases, and their mean is within 0.1 of it.
    #[test]
    fn the_cadence_effect_injected_in_the_simulator_is_recovered() {
        let mut covered = 0;
        let mut values = Vec::new();
        for seed in 1u64..=5 {
            let mut s = scenario::resolve("case-study").unwrap();
            s.posting.cadence_spread = [0.4, 2.5];
            s.posting.cadence_elasticity = 0.4;
            let world = World::new(s, Some(seed));
            for tenant in 0..world.tenants.len() {
                let (posts, _, registered) = year_of_posts(&world, tenant);
                let weeks = 365.0 / 7.0;
                let e = analyse(&posts, &[], &registered, &BTreeMap::new(), weeks).cadence.elasticity.unwrap();
                covered += usize::from(e.low <= 0.6 && 0.6 <= e.high);
                values.push(e.value);
            }
        }
        let mean = values.iter().sum::<f64>() / values.len() as f64;
        eprintln!("cadence: 0.6 covered in {covered} of 10, mean elasticity {mean:.3}: {values:.3?}");
        assert!(covered >= 8, "covered 0.6 in {covered} of 10: {values:?}");
        assert!((mean - 0.6).abs() < 0.1, "mean elasticity {mean:.3}: {values:?}");
    }

    #[test]
    fn cells_of_few_posts_have_no_estimate_and_a_post_in_two_topics_counts_in_both() {
        let at = |h: u32| Utc.with_ymd_and_hms(2018, 1, 10, h, 0, 0).unwrap();
        let mut posts: Vec<PostFacts> = (0..30)
            .map(|i| PostFacts {
                practice: format!("P{}", i % 3),
                page: format!("{}", i % 3),
                posted: at(9),
                text: "Flu clinic this Saturday; bank holiday opening hours".into(),
                reach: 100.0,
                engaged: 10.0 + (i % 5) as f64,
            })
            .collect();
        posts.push(PostFacts { posted: at(15), ..posts[0].clone() });
        let a = analyse(&posts, &pulse_config::topics::defaults(), &BTreeMap::new(), &BTreeMap::new(), 4.0);
        let nine = a.by_hour.iter().find(|c| c.key == "09:00").unwrap();
        assert_eq!((nine.posts, nine.pages), (30, 3));
        assert!(nine.low.unwrap() <= nine.relative.unwrap() && nine.relative.unwrap() <= nine.high.unwrap());
        let three = a.by_hour.iter().find(|c| c.key == "15:00").unwrap();
        assert_eq!((three.posts, three.rate, three.low), (1, None, None));
        let flu = a.by_topic.iter().find(|c| c.key == "Flu vaccination").unwrap();
        let open = a.by_topic.iter().find(|c| c.key == "Opening times").unwrap();
        assert_eq!((flu.posts, open.posts), (31, 31));
        assert!(a.by_topic.iter().all(|c| c.key != NO_TOPIC));
        // Hours without posts are not listed; practices without a list size have no rate and no fit.
        assert_eq!(a.by_hour.len(), 2);
        assert!(a.cadence.practices.iter().all(|p| p.engaged_per_1000.is_none()));
        assert!(a.cadence.elasticity.is_none());
    }

    use chrono::TimeZone;
}
