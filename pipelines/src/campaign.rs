//! Campaign uplift: what a campaign's own posts achieved, and what it added to its pages' daily figures over what
//! would have happened anyway, with an honest interval.
//!
//! Counterfactual (per participating page, per metric), one of several candidates fitted on the 8 weeks before the
//! window: the page's own weekday means; its level relative to the pages of the tenant that did not take part (the
//! controls, when there are enough), with its weekday pattern; its level relative to the national donor pool (other
//! tenants' pages, only ever as sums: [`crate::donors`]). A reference series
//! carries what hit every page (seasons, the cyber-attack day); the ratio carries what is particular to the page.
//! Every candidate is run on the placebo windows below, and the one whose errors stray least is used and named.
//!
//! Interval: placebo-in-time, a conformal construction. The same estimator is run on every earlier window of the
//! same length starting on the same weekday (with its own 8-week fit), where nothing was injected; those estimates
//! are pure error, taken relative to their window's counterfactual and scaled to the campaign's (pages grow, and
//! their noise with them). With m placebo errors the interval is the estimate minus the k-th largest and the k-th smallest
//! error, k = floor((m+1)·0.025): if the campaign's own error is exchangeable with the placebos', it falls outside
//! with probability at most 2k/(m+1), so the interval's nominal level is 1 - 2k/(m+1) (95% from m = 39 on). With
//! fewer placebos k is 1 and the level is lower (90% at m = 19): it is reported with the interval, never called 95%.
//! The p-value is the share of placebo errors at least as large as the estimate. Windows near other campaigns are left
//! out of the placebo set. Checked against the simulator's truth across many seeds (tests/uplift.rs).

use std::collections::BTreeMap;

use chrono::NaiveDate;

use crate::frames::day_number;

/// Days of pre-period fitted before a window.
pub const FIT_DAYS: i32 = 56;
/// Placebo windows needed for an interval at all (its level is then 90%).
pub const MIN_PLACEBOS: usize = 19;
/// The level intervals aim at.
pub const TARGET_LEVEL: f64 = 0.95;
/// Placebo windows needed before the interval reaches [`TARGET_LEVEL`].
pub const PLACEBOS_FOR_TARGET: usize = 39;
/// Placebo windows come from at most this many weeks before the campaign. Only the newest
/// [`PLACEBOS_FOR_TARGET`] clear windows are used: recent weeks are the most exchangeable with the campaign's
/// (seasons and one-off events long before it say little about its noise), and reaching further back only when
/// other campaigns' windows take some out keeps the interval at its target level after a campaign.
pub const MAX_PLACEBO_WEEKS: i32 = 60;
/// Days after a campaign's window its plotted series runs on.
pub const SERIES_DAYS_AFTER: i64 = 14;

/// Controls needed (and at least as many as participating pages) before the counterfactual leans on them.
pub const MIN_CONTROLS: usize = 10;
/// Days after a campaign's window that still carry its tail.
pub const TAIL_DAYS: i32 = 28;

/// How a campaign's posts are recognised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Matcher {
    Hashtag(String),
    Link(String),
    Text(String),
    Posts(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Campaign {
    pub name: String,
    pub matcher: Matcher,
    /// Only posts of this type (`video`, `photo`, ...), if set.
    pub post_type: Option<String>,
    pub start: NaiveDate,
    pub days: u32,
}

impl Campaign {
    pub fn window(&self) -> (i32, i32) {
        let s = day_number(self.start);
        (s, s + self.days as i32 - 1)
    }

    /// Whether a post (message, link, id, type, created day) is one of the campaign's.
    pub fn matches(&self, message: &str, permalink: &str, post_id: &str, post_type: &str, created: NaiveDate) -> bool {
        let (s, e) = self.window();
        let d = day_number(created);
        if d < s - 1 || d > e {
            return false;
        }
        if let Some(t) = &self.post_type
            && t != post_type
        {
            return false;
        }
        let lower = message.to_lowercase();
        match &self.matcher {
            Matcher::Hashtag(h) => lower.contains(&h.to_lowercase()),
            Matcher::Link(l) => message.contains(l.as_str()) || permalink.contains(l.as_str()),
            Matcher::Text(t) => lower.contains(&t.to_lowercase()),
            Matcher::Posts(ids) => ids.iter().any(|i| i == post_id),
        }
    }
}

/// Daily values per page: page -> day number -> value.
pub type Series = BTreeMap<String, BTreeMap<i32, f64>>;

/// A conformal interval and the nominal level it achieves with the placebo windows there were.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interval {
    pub lo: f64,
    pub hi: f64,
    /// Nominal coverage: 1 - 2k/(m+1) (see the module docs); 0.95 or a little more with enough placebos.
    pub level: f64,
}

impl Interval {
    pub fn contains(&self, x: f64) -> bool {
        self.lo <= x && x <= self.hi
    }
}

/// One page's (observed, counterfactual, effect, interval).
pub type PageEffect = (f64, f64, f64, Option<Interval>);

/// The estimate for one metric.
#[derive(Debug, Clone, PartialEq)]
pub struct Estimate {
    pub observed: f64,
    pub counterfactual: f64,
    pub effect: f64,
    pub interval: Option<Interval>,
    pub p_value: Option<f64>,
    pub placebos: usize,
    pub method: String,
    /// Per participating page: (observed, counterfactual, effect, interval).
    pub pages: BTreeMap<String, PageEffect>,
    /// Day-by-day totals around the window: (day, observed, counterfactual).
    pub series: Vec<(i32, f64, f64)>,
}

/// Why no estimate could be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpliftError {
    #[error("no participating page has daily data for this metric")]
    NoTreatedData,
    #[error("pre-period too short: {have} days of data before the campaign, the counterfactual needs {need}")]
    PrePeriodTooShort { have: i32, need: i32 },
    #[error(
        "only {have} placebo windows with every participating page's data before the campaign (a plan needs {need}): \
         ingest further back (`pulse ingest --since`), or plan a later or shorter campaign"
    )]
    TooFewPlacebos { have: usize, need: usize },
}

fn weekday(d: i32) -> usize {
    ((d + 3).rem_euclid(7)) as usize
}

/// The controls' mean per day.
fn control_mean(series: &Series, controls: &[String]) -> BTreeMap<i32, f64> {
    let mut sum: BTreeMap<i32, (f64, u32)> = BTreeMap::new();
    for c in controls {
        if let Some(s) = series.get(c) {
            for (&d, &v) in s {
                let e = sum.entry(d).or_default();
                e.0 += v;
                e.1 += 1;
            }
        }
    }
    sum.into_iter().map(|(d, (s, n))| (d, s / n as f64)).collect()
}

/// A page's counterfactual model fitted on [fit_from, fit_to].
struct Fit {
    scale: f64,
    weekday: [f64; 7],
    own_means: Option<[f64; 7]>,
}

/// What a page's counterfactual is built from: the page's own weekday means, or a reference series (the mean of the
/// tenant's non-participating pages, or the national donor pool's) scaled to the page's level, with the page's own
/// weekday pattern relative to it or without.
#[derive(Clone, Copy)]
struct Reference<'a> {
    series: Option<&'a BTreeMap<i32, f64>>,
    page_weekday: bool,
}

impl Reference<'_> {
    const OWN: Reference<'static> = Reference { series: None, page_weekday: true };
}

fn fit(page: &BTreeMap<i32, f64>, reference: Reference, fit_from: i32, fit_to: i32) -> Option<Fit> {
    // The days the page has, and the reference too when there is one: a fit on a handful of shared days, or with a
    // weekday missing, would scale a whole window by chance.
    let days: Vec<i32> = (fit_from..=fit_to)
        .filter(|d| page.contains_key(d) && reference.series.is_none_or(|r| r.contains_key(d)))
        .collect();
    let weekdays: std::collections::BTreeSet<usize> = days.iter().map(|d| weekday(*d)).collect();
    if days.len() < (FIT_DAYS as usize) / 2 || weekdays.len() < 7 {
        return None;
    }
    match reference.series {
        Some(c) => {
            let (mut ys, mut cs) = (0.0, 0.0);
            for d in &days {
                if let Some(cv) = c.get(d) {
                    ys += page[d];
                    cs += cv;
                }
            }
            if cs <= 0.0 {
                return None;
            }
            let scale = ys / cs;
            let mut weekday_factor = [1.0; 7];
            if reference.page_weekday {
                let mut ratio = [(0.0, 0.0); 7];
                for d in &days {
                    if let Some(cv) = c.get(d) {
                        let w = weekday(*d);
                        ratio[w].0 += page[d];
                        ratio[w].1 += scale * cv;
                    }
                }
                for w in 0..7 {
                    if ratio[w].1 > 0.0 {
                        weekday_factor[w] = ratio[w].0 / ratio[w].1;
                    }
                }
            }
            Some(Fit { scale, weekday: weekday_factor, own_means: None })
        }
        None => {
            let mut sums = [(0.0, 0u32); 7];
            for d in &days {
                let w = weekday(*d);
                sums[w].0 += page[d];
                sums[w].1 += 1;
            }
            let overall = days.iter().map(|d| page[d]).sum::<f64>() / days.len() as f64;
            let mut means = [overall; 7];
            for w in 0..7 {
                if sums[w].1 > 0 {
                    means[w] = sums[w].0 / sums[w].1 as f64;
                }
            }
            Some(Fit { scale: 1.0, weekday: [1.0; 7], own_means: Some(means) })
        }
    }
}

fn predict(fit: &Fit, reference: Reference, d: i32) -> Option<f64> {
    match &fit.own_means {
        Some(means) => Some(means[weekday(d)]),
        None => reference.series.and_then(|c| c.get(&d)).map(|cv| fit.scale * cv * fit.weekday[weekday(d)]),
    }
}

/// Per page, (observed, counterfactual) over a window.
type WindowEffect = BTreeMap<String, (f64, f64)>;

/// Effect of the pages over [s, e] with a fit on the FIT_DAYS before s: per page (observed, counterfactual).
fn window_effect(
    series: &Series,
    treated: &[String],
    reference: Reference,
    s: i32,
    e: i32,
) -> BTreeMap<String, (f64, f64)> {
    let mut out = BTreeMap::new();
    for p in treated {
        let Some(page) = series.get(p) else { continue };
        let Some(f) = fit(page, reference, s - FIT_DAYS, s - 1) else { continue };
        let (mut obs, mut cf) = (0.0, 0.0);
        let mut complete = true;
        for d in s..=e {
            match (page.get(&d), predict(&f, reference, d)) {
                (Some(y), Some(yhat)) => {
                    obs += y;
                    cf += yhat;
                }
                _ => complete = false,
            }
        }
        if complete {
            out.insert(p.clone(), (obs, cf));
        }
    }
    out
}

/// The placebo windows of a window [s, e]: the same length, starting on the same weekday, entirely before it, from at
/// most [`MAX_PLACEBO_WEEKS`] before and with a full fit period after `first`, clear of other campaigns' windows and
/// their tails; each with its pages' (observed, counterfactual), newest first, computed as they are taken: the caller
/// keeps the newest [`PLACEBOS_FOR_TARGET`] of those complete enough (a plan one more: see `candidates`).
fn placebo_windows<'a>(
    series: &'a Series,
    treated: &'a [String],
    reference: Reference<'a>,
    (s, e): (i32, i32),
    first: i32,
    exclude: &'a [(i32, i32)],
) -> impl Iterator<Item = (i32, WindowEffect)> + 'a {
    let len = e - s;
    let oldest = first.max(s - 7 * MAX_PLACEBO_WEEKS);
    // Newest first, computed only as the caller takes them.
    std::iter::successors(Some(s - 7), |ps| Some(ps - 7))
        .take_while(move |ps| ps - FIT_DAYS >= oldest - FIT_DAYS && ps - FIT_DAYS >= first)
        // The placebo's window and its fit period must keep clear of other campaigns and their tails.
        .filter(move |&ps| {
            let pe = ps + len;
            pe < s && exclude.iter().all(|&(xs, xe)| pe < xs || ps - FIT_DAYS > xe + TAIL_DAYS)
        })
        .map(move |ps| (ps, window_effect(series, treated, reference, ps, ps + len)))
}

/// Which order statistic bounds a conformal interval at `target` with m placebos at each end: floor((m+1)(1-level)/2),
/// at least 1.
fn conformal_k(m: usize, target: f64) -> usize {
    ((((m + 1) as f64) * (1.0 - target) / 2.0 + 1e-9).floor() as usize).max(1)
}

/// The interval around `estimate` from sorted placebo errors: the estimate minus the k-th largest and the k-th
/// smallest error, k = floor((m+1)(1-level)/2) but at least 1, with the level that k achieves.
fn conformal_interval(estimate: f64, sorted: &[f64], target: f64) -> Interval {
    let m = sorted.len();
    debug_assert!(m > 0);
    let k = conformal_k(m, target).min(m);
    Interval {
        lo: estimate - sorted[m - k],
        hi: estimate - sorted[k - 1],
        level: 1.0 - 2.0 * k as f64 / (m + 1) as f64,
    }
}

/// A placebo window's error relative to its counterfactual (none when the counterfactual is not positive).
fn relative_error(observed: f64, counterfactual: f64) -> Option<f64> {
    (counterfactual > 0.0).then(|| (observed - counterfactual) / counterfactual)
}

/// The median of sorted values.
fn median(sorted: &[f64]) -> f64 {
    let m = sorted.len();
    if m % 2 == 1 { sorted[m / 2] } else { (sorted[m / 2 - 1] + sorted[m / 2]) / 2.0 }
}

/// A national donor series for one metric: the mean per page per day over other tenants' pages that took no part
/// in the campaign. Only sums reach an estimate, never a page's row: see [`crate::donors`].
#[derive(Debug, Clone, PartialEq)]
pub struct Donors {
    pub mean: BTreeMap<i32, f64>,
    /// The fewest pages, and tenants, behind any day of `mean`.
    pub pages: usize,
    pub tenants: usize,
}

/// One candidate counterfactual, run on the campaign's window and its placebo windows.
struct Candidate<'a> {
    reference: Reference<'a>,
    short: String,
    describe: String,
    actual: BTreeMap<String, (f64, f64)>,
    placebos: Vec<BTreeMap<String, (f64, f64)>>,
    /// Placebo errors of the totals, sorted.
    errors: Vec<f64>,
    /// The same errors by their window's first day (newest first).
    by_window: Vec<(i32, f64)>,
}

impl Candidate<'_> {
    /// How far its placebo errors stray from their median: the mean absolute deviation (what an interval's width
    /// follows), the score candidates are chosen by.
    fn score(&self) -> f64 {
        spread(&self.errors)
    }
}

/// A placebo window's counterfactual total against the mean of the [`RECENT_WINDOWS`] newest windows that end before
/// it starts (placebos are newest first, `starts` their first days, `len` their length): how far a window's level
/// strays from the recent level a plan scales by, as the campaign's own level will from the windows before it (its
/// swings, and any trend between them). 1 when no window ends before it or their level is not positive.
fn level_ratio(placebos: &[BTreeMap<String, (f64, f64)>], starts: &[i32], len: i32, at: usize) -> f64 {
    let total = |w: &BTreeMap<String, (f64, f64)>| w.values().map(|(_, c)| c).sum::<f64>();
    let before: Vec<f64> = (at + 1..placebos.len())
        .filter(|&j| starts[j] + len <= starts[at])
        .take(RECENT_WINDOWS)
        .map(|j| total(&placebos[j]))
        .collect();
    let level = before.iter().sum::<f64>() / before.len().max(1) as f64;
    if before.is_empty() || level <= 0.0 { 1.0 } else { total(&placebos[at]) / level }
}

/// The mean absolute deviation of sorted errors from their median (infinite with fewer than [`MIN_PLACEBOS`]).
fn spread(sorted: &[f64]) -> f64 {
    if sorted.len() < MIN_PLACEBOS {
        return f64::INFINITY;
    }
    let m = median(sorted);
    sorted.iter().map(|x| (x - m).abs()).sum::<f64>() / sorted.len() as f64
}

/// The candidate whose errors stray least (the first, the page's own means, on a tie or when none has enough).
fn best_of(scores: &[f64]) -> usize {
    (0..scores.len()).fold(0, |b, i| if scores[i] < scores[b] { i } else { b })
}

/// Picks among the candidate counterfactuals ([`candidates`]) the one whose placebo errors stray least. Returns it and
/// the method's description, naming the candidates it was chosen over.
fn choose(mut candidates: Vec<Candidate<'_>>) -> Option<(Candidate<'_>, String)> {
    if candidates.is_empty() {
        return None;
    }
    // The candidate whose placebo errors stray least (the first, the page's own means, on a tie or when none has
    // enough placebo windows for a score).
    let scores: Vec<f64> = candidates.iter().map(Candidate::score).collect();
    let best = best_of(&scores);
    let others: Vec<String> = (0..candidates.len())
        .filter(|i| *i != best && scores[*i].is_finite())
        .map(|i| format!("{} {:.1}%", candidates[i].short, scores[i] * 100.0))
        .collect();
    let chosen = candidates.swap_remove(best);
    let method = if others.is_empty() {
        format!("{}; placebo-in-time interval", chosen.describe)
    } else {
        format!(
            "{}; chosen by the smallest placebo error (mean absolute deviation {:.1}% of the counterfactual, against {}); placebo-in-time interval",
            chosen.describe,
            scores[best] * 100.0,
            others.join(", ")
        )
    };
    Some((chosen, method))
}

/// Every candidate counterfactual, each run on the window and its placebo windows: the page's own weekday means; the
/// ratio to the tenant's non-participating pages (`controls`: their mean per day and how many they are), when there
/// are enough; the ratio to the national donor pool. `planning`: the window is in the future (a plan), so placebo
/// windows need every participating page rather than those of the window itself.
#[allow(clippy::too_many_arguments)]
fn candidates<'a>(
    series: &Series,
    treated: &[String],
    (cmean, controls): (&'a BTreeMap<i32, f64>, usize),
    donors: Option<&'a Donors>,
    (s, e): (i32, i32),
    first: i32,
    exclude: &[(i32, i32)],
    planning: bool,
) -> Vec<Candidate<'a>> {
    // The controls' mean enters every participating page's counterfactual, so its noise is shared by all of them
    // and adds up across pages; it only pays for itself when there are at least as many controls as participants.
    let enough_controls = controls >= treated.len().max(MIN_CONTROLS) && !cmean.is_empty();
    let mut references = vec![(
        Reference::OWN,
        "the page's own weekday means".to_owned(),
        format!("the page's own weekday means over the {FIT_DAYS} days before"),
    )];
    if enough_controls {
        references.push((
            Reference { series: Some(cmean), page_weekday: true },
            "the tenant's non-participating pages".to_owned(),
            format!(
                "the ratio to {controls} non-participating pages of the tenant, fitted on the {FIT_DAYS} days before, with the page's weekday pattern"
            ),
        ));
    }
    if let Some(d) = donors.filter(|d| !d.mean.is_empty()) {
        // The pool's own counts are not printed: they would say how many pages other tenants have, and whether one
        // took part. Its thresholds are.
        let pool = format!(
            "the national donor pool (sums over at least {} other tenants of at least {} pages each)",
            crate::donors::MIN_POOL_TENANTS,
            crate::donors::MIN_POOL_PAGES
        );
        references.push((
            Reference { series: Some(&d.mean), page_weekday: false },
            pool.clone(),
            format!("the ratio to {pool}, fitted on the {FIT_DAYS} days before"),
        ));
    }
    references
        .into_iter()
        .map(|(reference, short, describe)| {
            let actual = window_effect(series, treated, reference, s, e);
            // A window counts when it has every page the campaign's own has (every participating page, for a plan).
            let need = if planning { treated.len() } else { actual.len() };
            let (starts, placebos): (Vec<i32>, Vec<_>) =
                placebo_windows(series, treated, reference, (s, e), first, exclude)
                    // A window counts only when it gives an error (a positive counterfactual): one that does not
                    // would take a slot among the newest and leave the interval below its level.
                    .filter(|(_, p)| p.len() == need && p.values().map(|(_, c)| c).sum::<f64>() > 0.0)
                    // A plan takes one more: each window in turn plays the campaign against the others, which are
                    // then as many as the campaign's own placebo windows (the interval's bound from 38 would be
                    // the largest of fewer errors, and the plan would promise more than the estimate delivers).
                    .take(PLACEBOS_FOR_TARGET + usize::from(planning))
                    .unzip();
            let by_window: Vec<(i32, f64)> = starts
                .iter()
                .zip(&placebos)
                .filter_map(|(ps, p)| {
                    relative_error(p.values().map(|(o, _)| o).sum(), p.values().map(|(_, c)| c).sum()).map(|r| (*ps, r))
                })
                .collect();
            // One error per window taken (both filters above ask for a positive counterfactual): `by_window[i]` is
            // `placebos[i]`'s, which the plan's leave-one-out relies on.
            debug_assert_eq!(by_window.len(), placebos.len());
            let mut errors: Vec<f64> = by_window.iter().map(|(_, r)| *r).collect();
            errors.sort_by(|a, b| a.total_cmp(b));
            Candidate { reference, short, describe, actual, placebos, errors, by_window }
        })
        .filter(|c| planning || !c.actual.is_empty())
        .collect()
}

/// Estimates the campaign's effect on one metric. `exclude` lists other campaigns' windows (day numbers) that
/// placebo windows must keep clear of.
pub fn estimate(
    series: &Series,
    treated: &[String],
    controls: &[String],
    start: NaiveDate,
    days: u32,
    exclude: &[(i32, i32)],
) -> Result<Estimate, UpliftError> {
    estimate_with_donors(series, treated, controls, None, start, days, exclude)
}

/// [`estimate`], with the national donor pool as a further candidate counterfactual. Every candidate (the page's own
/// weekday means; the ratio to the tenant's non-participating pages, when there are enough; the ratio to the national
/// donor pool) is run on the campaign's placebo windows, and the one
/// whose placebo errors stray least is used, named in the estimate's method.
pub fn estimate_with_donors(
    series: &Series,
    treated: &[String],
    controls: &[String],
    donors: Option<&Donors>,
    start: NaiveDate,
    days: u32,
    exclude: &[(i32, i32)],
) -> Result<Estimate, UpliftError> {
    let s = day_number(start);
    let e = s + days as i32 - 1;
    let first = series
        .iter()
        .filter(|(p, _)| treated.contains(p))
        .filter_map(|(_, v)| v.keys().next().copied())
        .min()
        .ok_or(UpliftError::NoTreatedData)?;
    if s - first < FIT_DAYS {
        return Err(UpliftError::PrePeriodTooShort { have: (s - first).max(0), need: FIT_DAYS });
    }
    let cmean = control_mean(series, controls);
    let (chosen, method) =
        choose(candidates(series, treated, (&cmean, controls.len()), donors, (s, e), first, exclude, false))
            .ok_or(UpliftError::NoTreatedData)?;
    let reference = chosen.reference;
    let actual = chosen.actual;
    let observed: f64 = actual.values().map(|(o, _)| o).sum();
    let counterfactual: f64 = actual.values().map(|(_, c)| c).sum();
    let effect = observed - counterfactual;
    // Placebo errors relative to their window's counterfactual, at the campaign's scale: pages grow (followers, and
    // the noise with them), so an error from 40 weeks ago is as large relative to its level as today's, not in
    // absolute terms; and a counterfactual that lags a growing level lags it by the same share in every window.
    let errors_total: Vec<f64> = chosen.errors.iter().map(|r| r * counterfactual).collect();
    let mut errors_page: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for placebo in chosen.placebos {
        for (p, (o, c)) in placebo {
            if let (Some(r), Some((_, now))) = (relative_error(o, c), actual.get(&p)) {
                errors_page.entry(p).or_default().push(r * now);
            }
        }
    }
    let placebos = errors_total.len();
    // Interval from the raw estimate and the placebo errors (conformal). The errors' median is the estimator's bias
    // where nothing happened: it is taken out of the point estimate, and the p-value compares the estimate with the
    // errors around that centre.
    let raw = effect;
    let (effect, counterfactual, interval, p_value) = if placebos >= MIN_PLACEBOS {
        let bias = median(&errors_total);
        let interval = conformal_interval(raw, &errors_total, TARGET_LEVEL);
        let beyond = errors_total.iter().filter(|x| (*x - bias).abs() >= (raw - bias).abs()).count();
        (raw - bias, counterfactual + bias, Some(interval), Some((1 + beyond) as f64 / (placebos + 1) as f64))
    } else {
        (raw, counterfactual, None, None)
    };
    let pages = actual
        .iter()
        .map(|(p, (o, c))| {
            let eff = o - c;
            let iv = errors_page.get_mut(p).filter(|v| v.len() >= MIN_PLACEBOS).map(|v| {
                v.sort_by(|a, b| a.total_cmp(b));
                conformal_interval(eff, v, TARGET_LEVEL)
            });
            (p.clone(), (*o, *c, eff, iv))
        })
        .collect();
    // The series for plotting: totals over participating pages from 4 weeks before to 2 weeks after.
    let mut plot = Vec::new();
    let fits: Vec<(&BTreeMap<i32, f64>, Fit)> = actual
        .keys()
        .filter_map(|p| series.get(p).and_then(|page| fit(page, reference, s - FIT_DAYS, s - 1).map(|f| (page, f))))
        .collect();
    for d in (s - 28)..=(e + SERIES_DAYS_AFTER as i32) {
        let (mut o, mut c) = (0.0, Some(0.0));
        for (page, f) in &fits {
            o += page.get(&d).copied().unwrap_or(0.0);
            c = c.zip(predict(f, reference, d)).map(|(a, b)| a + b);
        }
        // A day the reference lacks (the pool's newest days, say) is left out, not drawn as a counterfactual of 0.
        if let Some(c) = c {
            plot.push((d, o, c));
        }
    }
    Ok(Estimate { observed, counterfactual, effect, interval, p_value, placebos, method, pages, series: plot })
}

/// Whether an estimate's interval excludes zero (at the interval's own level).
pub fn significant(e: &Estimate) -> bool {
    e.interval.is_some_and(|i| i.lo > 0.0 || i.hi < 0.0)
}

/// Random draws of participating pages a plan pools (which pages will take part is not known when planning).
pub const PLAN_DRAWS: u64 = 8;
/// The share of campaigns of the minimum detectable effect that a plan promises to detect.
pub const PLAN_POWER: f64 = 0.8;

/// What a planned campaign could detect, from the placebo windows of the history before it.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub start: NaiveDate,
    pub days: u32,
    /// The share of pages asked to take part, and what it comes to.
    pub share: f64,
    pub pages: usize,
    pub participants: usize,
    /// The placebo windows the campaign's own interval will have: the fewest of any draw, at most
    /// [`PLACEBOS_FOR_TARGET`] (a plan takes one more, so that each window judged against the others has as many).
    pub placebos: usize,
    /// The level of the interval the campaign will be judged by (0.95 with enough placebo windows).
    pub level: f64,
    /// The minimum detectable effect: the total added over the participating pages and days that the campaign's
    /// interval excludes zero for with probability [`PLAN_POWER`].
    pub mde: f64,
    /// The participating pages' usual total over such a window (the mean over the latest placebo windows and the draws): the MDE as
    /// a share of it is the lift needed.
    pub baseline: f64,
    /// The last day of the history the plan was made from (a start long after it plans with fewer, older windows).
    pub history_to: NaiveDate,
    pub method: String,
}

/// The latest placebo windows a plan takes the participating pages' current level from.
const RECENT_WINDOWS: usize = 4;

/// A deterministic generator for the plan's draws (splitmix64): the same history and seed give the same plan.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Plans a campaign of `days` from `start` with `share` of the pages in `series` taking part (GeoLift's power
/// analysis, with this estimator): for each of [`PLAN_DRAWS`] random draws of participating pages, the estimator
/// is run on every placebo window before `start` exactly as it will be on the campaign (same controls rule, same
/// interval), and each window in turn plays the campaign against the others (leave one out): it is detected when
/// its error plus the effect is above the interval's bound from the others. The MDE is the effect detected in
/// [`PLAN_POWER`] of those trials. Only the history before `start` is read.
pub fn plan(
    series: &Series,
    start: NaiveDate,
    days: u32,
    share: f64,
    exclude: &[(i32, i32)],
    seed: u64,
) -> Result<Plan, UpliftError> {
    plan_with_donors(series, None, start, days, share, exclude, seed)
}

/// [`plan`], with the national donor pool among the candidate counterfactuals, as the campaign's estimate will have
/// it when its tenant is in the pool (the pool's days from `start` on are never read).
pub fn plan_with_donors(
    series: &Series,
    donors: Option<&Donors>,
    start: NaiveDate,
    days: u32,
    share: f64,
    exclude: &[(i32, i32)],
    seed: u64,
) -> Result<Plan, UpliftError> {
    let s = day_number(start);
    let e = s + days.max(1) as i32 - 1;
    // The pages that can take part: those with data in the last FIT_DAYS of the history (a page that stopped
    // reporting long before would never have a complete window).
    let last = series.values().filter_map(|v| v.range(..s).next_back().map(|(d, _)| *d)).max();
    let last = last.ok_or(UpliftError::NoTreatedData)?;
    let pages: Vec<&String> =
        series.iter().filter(|(_, v)| v.range(last - FIT_DAYS + 1..s).next().is_some()).map(|(p, _)| p).collect();
    let first =
        pages.iter().filter_map(|p| series[*p].keys().next().copied()).min().ok_or(UpliftError::NoTreatedData)?;
    if s - first < FIT_DAYS {
        return Err(UpliftError::PrePeriodTooShort { have: (s - first).max(0), need: FIT_DAYS });
    }
    // Only the history: a plan made after the start must not see the campaign.
    let history: Series =
        series.iter().map(|(p, v)| (p.clone(), v.range(..s).map(|(d, x)| (*d, *x)).collect())).collect();
    // Only the pool's history either.
    let donors = donors.map(|d| Donors { mean: d.mean.range(..s).map(|(d, x)| (*d, *x)).collect(), ..d.clone() });
    let donors = donors.as_ref().filter(|d| !d.mean.is_empty());
    let participants = ((share.clamp(0.0, 1.0) * pages.len() as f64).round() as usize).clamp(1, pages.len());
    let (mut thresholds, mut baseline, mut windows_seen, mut fewest, mut method) =
        (Vec::new(), Vec::new(), 0, usize::MAX, String::new());
    // The candidates some draw was offered (the tenant's other pages only when a draw leaves enough of them).
    let mut offered: Vec<String> = Vec::new();
    let mut rng = seed ^ 0x5EED_0FC0_FFEE;
    for _ in 0..PLAN_DRAWS {
        let mut order: Vec<String> = pages.iter().map(|p| (*p).clone()).collect();
        for i in (1..order.len()).rev() {
            order.swap(i, (splitmix(&mut rng) % (i as u64 + 1)) as usize);
        }
        let controls = order.split_off(participants);
        let treated = order;
        let cmean = control_mean(&history, &controls);
        // The counterfactual the campaign will be estimated with is chosen the same way from the same history.
        let all = candidates(&history, &treated, (&cmean, controls.len()), donors, (s, e), first, exclude, true);
        if all.is_empty() {
            thresholds.extend(std::iter::repeat_n(f64::INFINITY, MIN_PLACEBOS + 1));
            continue;
        }
        for c in &all {
            if !offered.contains(&c.short) {
                offered.push(c.short.clone());
            }
        }
        let chosen = &all[best_of(&all.iter().map(Candidate::score).collect::<Vec<_>>())];
        if method.is_empty() {
            method = chosen.describe.clone();
        }
        let m = chosen.errors.len();
        windows_seen = windows_seen.max(m);
        if m < MIN_PLACEBOS + 1 {
            // A draw whose pages leave too few complete windows would give the campaign no interval: never detected,
            // so it counts as misses, not as a draw that did not happen.
            thresholds.extend(std::iter::repeat_n(f64::INFINITY, MIN_PLACEBOS + 1));
            continue;
        }
        fewest = fewest.min(m);
        // The campaign's counterfactual will be about the latest windows' (newest first): errors are relative to a
        // window's counterfactual, so they are scaled to it.
        let level_now: Vec<f64> = all
            .iter()
            .map(|c| {
                let recent = &c.placebos[..RECENT_WINDOWS.min(c.placebos.len())];
                recent.iter().map(|w| w.values().map(|(_, c)| c).sum::<f64>()).sum::<f64>() / recent.len().max(1) as f64
            })
            .collect();
        let recent = &chosen.placebos[..RECENT_WINDOWS.min(chosen.placebos.len())];
        baseline.extend(recent.iter().map(|w| w.values().map(|(o, _)| o).sum::<f64>()));
        // Each window in turn plays the campaign (leave one out). The method is chosen on the other windows, as the
        // campaign's will be on windows that never include its own: choosing on the same windows that bound the
        // interval would make the plan promise more than the estimate delivers. The window's error under the method
        // chosen is set against the interval's upper bound from that method's other windows (the k-th largest).
        for (w, _) in &chosen.by_window {
            // The trial picks among the candidates that can estimate the window playing the campaign: those with an
            // error for it (a complete window with a positive counterfactual). The campaign's estimate offers its
            // candidates under looser rules (a matching page count, no check of its own window's counterfactual):
            // a known gap, see the README. Never empty while the window comes from the chosen candidate.
            let able: Vec<usize> = (0..all.len()).filter(|&i| all[i].by_window.iter().any(|(x, _)| x == w)).collect();
            let rests: Vec<Vec<f64>> = able
                .iter()
                .map(|&i| {
                    let mut r: Vec<f64> = all[i].by_window.iter().filter(|(x, _)| x != w).map(|(_, e)| *e).collect();
                    r.sort_by(|a, b| a.total_cmp(b));
                    r
                })
                .collect();
            if able.is_empty() {
                thresholds.push(f64::INFINITY);
                continue;
            }
            let j = best_of(&rests.iter().map(|r| spread(r)).collect::<Vec<_>>());
            let pick = able[j];
            let at = all[pick].by_window.iter().position(|(x, _)| x == w).expect("an able candidate has the window");
            let error = all[pick].by_window[at].1;
            let others = &rests[j];
            let n = others.len();
            if n < MIN_PLACEBOS {
                thresholds.push(f64::INFINITY);
                continue;
            }
            // The others are the trial's placebo windows, as the campaign's own are its: the same order statistic.
            let k = conformal_k(n, TARGET_LEVEL).min(n);
            // An effect is judged relative to its window's counterfactual, and the campaign's will not be exactly
            // today's level: the window's counterfactual against the level of the windows just before it says how
            // far it strays, and the trial carries that (a plan that assumed the level exact would be optimistic by
            // the spread of the level's own weekly swings).
            let starts: Vec<i32> = all[pick].by_window.iter().map(|(x, _)| *x).collect();
            let ratio = level_ratio(&all[pick].placebos, &starts, e - s + 1, at);
            thresholds.push(level_now[pick] * ratio * (others[n - k] - error));
        }
    }
    thresholds.sort_by(|a, b| a.total_cmp(b));
    let at = ((thresholds.len() as f64 * PLAN_POWER).ceil() as usize).clamp(1, thresholds.len()) - 1;
    // More than a fifth of the draws without an interval: no effect is detected with the power promised.
    if !thresholds[at].is_finite() || fewest == usize::MAX {
        return Err(UpliftError::TooFewPlacebos { have: windows_seen, need: MIN_PLACEBOS + 1 });
    }
    // The campaign's own placebo windows: one fewer than the plan took, at most (see `candidates`).
    let campaign_placebos = fewest.min(PLACEBOS_FOR_TARGET);
    let k = conformal_k(campaign_placebos, TARGET_LEVEL);
    Ok(Plan {
        start,
        days,
        share,
        pages: pages.len(),
        participants,
        placebos: campaign_placebos,
        level: 1.0 - 2.0 * k as f64 / (campaign_placebos + 1) as f64,
        mde: thresholds[at].max(0.0),
        baseline: baseline.iter().sum::<f64>() / baseline.len() as f64,
        history_to: crate::frames::from_day_number(last),
        method: format!(
            "{method} (chosen as the campaign's will be, by placebo error, among {}); placebo-in-time interval; {PLAN_DRAWS} draws of participating pages",
            match offered.split_last() {
                Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
                _ => offered.join(""),
            },
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(d: i32) -> NaiveDate {
        crate::frames::from_day_number(d)
    }

    #[test]
    fn a_trial_is_scaled_by_how_far_its_window_strays_from_the_four_before_it() {
        // Counterfactual totals per window, newest first, weekly; two pages each.
        let window = |total: f64| -> BTreeMap<String, (f64, f64)> {
            [("a".to_owned(), (0.0, total * 0.25)), ("b".to_owned(), (0.0, total * 0.75))].into_iter().collect()
        };
        let placebos: Vec<_> = [120.0, 100.0, 80.0, 120.0, 100.0, 50.0, 0.0].into_iter().map(window).collect();
        let starts: Vec<i32> = (0..7).map(|i| 1000 - 7 * i).collect();
        // A 2-day window: the newest against the mean of the next four (100), 1.2.
        assert!((level_ratio(&placebos, &starts, 2, 0) - 1.2).abs() < 1e-12);
        // The second against (80 + 120 + 100 + 50) / 4 = 87.5.
        assert!((level_ratio(&placebos, &starts, 2, 1) - 100.0 / 87.5).abs() < 1e-12);
        // Fewer than four before it: the mean of those there are; the oldest has none, and one whose windows before
        // it have no level is not scaled.
        assert!((level_ratio(&placebos, &starts, 2, 4) - 100.0 / 25.0).abs() < 1e-12);
        assert_eq!(level_ratio(&placebos, &starts, 2, 5), 1.0);
        assert_eq!(level_ratio(&placebos, &starts, 2, 6), 1.0);
        // A 14-day window overlaps the next week's: its level is from the windows that end before it starts, the
        // 3rd to the 6th (80 + 120 + 100 + 50) / 4 for the newest.
        assert!((level_ratio(&placebos, &starts, 14, 0) - 120.0 / 87.5).abs() < 1e-12);
    }

    #[test]
    fn the_interval_uses_the_right_order_statistic_at_each_end_and_states_its_level() {
        let errors: Vec<f64> = (1..=40).map(f64::from).collect();
        // m = 40: k = floor(41 * 0.025) = 1, so the smallest and the largest error bound it; level 1 - 2/41.
        let i = conformal_interval(100.0, &errors, 0.95);
        assert_eq!((i.lo, i.hi), (100.0 - 40.0, 100.0 - 1.0));
        assert!((i.level - (1.0 - 2.0 / 41.0)).abs() < 1e-12 && i.level >= 0.95);
        // m = 79: k = 2 at both ends (the old code took the 2nd smallest but the 78th, not the 79th... at m = 40).
        let errors: Vec<f64> = (1..=79).map(f64::from).collect();
        let i = conformal_interval(0.0, &errors, 0.95);
        assert_eq!((i.lo, i.hi), (-78.0, -2.0));
        assert!((i.level - 0.95).abs() < 1e-12);
        // m = 19: 95% cannot be reached; the extremes give 90%, and the level says so.
        let errors: Vec<f64> = (1..=19).map(f64::from).collect();
        let i = conformal_interval(0.0, &errors, 0.95);
        assert_eq!((i.lo, i.hi), (-19.0, -1.0));
        assert!((i.level - 0.90).abs() < 1e-12);
        assert_eq!(median(&[1.0, 2.0, 3.0, 10.0]), 2.5);
    }

    #[test]
    fn matching_by_hashtag_link_text_and_ids() {
        let c = Campaign {
            name: "stroke".into(),
            matcher: Matcher::Hashtag("#ActFAST".into()),
            post_type: Some("video".into()),
            start: NaiveDate::from_ymd_opt(2018, 3, 10).unwrap(),
            days: 2,
        };
        let d = NaiveDate::from_ymd_opt(2018, 3, 10).unwrap();
        assert!(c.matches("Signs of stroke #actfast", "", "1_1", "video", d));
        assert!(!c.matches("Signs of stroke #actfast", "", "1_1", "photo", d));
        assert!(!c.matches("Signs of stroke", "", "1_1", "video", d));
        assert!(!c.matches("#ActFAST", "", "1_1", "video", NaiveDate::from_ymd_opt(2018, 4, 1).unwrap()));
        let link = Campaign { matcher: Matcher::Link("uhnm.nhs.uk/stroke".into()), post_type: None, ..c.clone() };
        assert!(link.matches("see https://www.uhnm.nhs.uk/stroke", "", "1_1", "link", d));
        let ids = Campaign { matcher: Matcher::Posts(vec!["1_7".into()]), post_type: None, ..c };
        assert!(ids.matches("", "", "1_7", "photo", d) && !ids.matches("", "", "1_8", "photo", d));
    }

    #[test]
    fn recovers_a_known_step_with_controls() {
        // Ten pages with a common seasonal wave; three get +100/day for two days.
        let start = NaiveDate::from_ymd_opt(2018, 6, 2).unwrap();
        let s = day_number(start);
        let mut series = Series::new();
        for p in 0..10 {
            let mut m = BTreeMap::new();
            for d in (s - 400)..(s + 30) {
                let base = 200.0 + 20.0 * p as f64;
                let wave = 1.0 + 0.2 * ((d as f64) / 30.0).sin() + if weekday(d) >= 5 { -0.1 } else { 0.05 };
                let noise = (((d * 7919 + p * 104729) % 97) as f64 / 97.0 - 0.5) * 20.0;
                let mut v = base * wave + noise;
                if p < 3 && (s..s + 2).contains(&d) {
                    v += 100.0;
                }
                m.insert(d, v);
            }
            series.insert(format!("p{p}"), m);
        }
        let treated: Vec<String> = (0..3).map(|p| format!("p{p}")).collect();
        let controls: Vec<String> = (3..10).map(|p| format!("p{p}")).collect();
        let est = estimate(&series, &treated, &controls, start, 2, &[]).unwrap();
        assert!((est.effect - 600.0).abs() < 60.0, "{est:?}");
        let Interval { lo, hi, level } = est.interval.unwrap();
        assert!(lo < 600.0 && hi > 600.0 && lo > 0.0 && level >= 0.95, "{lo} {hi} {level}");
        assert!(significant(&est));
        assert_eq!(est.placebos, PLACEBOS_FOR_TARGET, "the newest 39 clear windows");
        assert_eq!(est.series.len(), 28 + 2 + 14);
        let short = estimate(&series, &treated, &controls, day(s - 400 + 20), 2, &[]).unwrap_err();
        assert_eq!(short, UpliftError::PrePeriodTooShort { have: 20, need: FIT_DAYS });
    }

    /// Pages whose days move with a shock shared nationally (an outage, a news day) that their own weekday means
    /// cannot foresee, and a pool that carries it: a plan offered the pool must need a smaller effect, and an
    /// estimate offered it must choose it. With the pool ignored, both fail.
    #[test]
    fn the_pool_lowers_the_mde_when_it_carries_shocks_own_means_cannot_see() {
        let start = NaiveDate::from_ymd_opt(2018, 6, 2).unwrap();
        let s = day_number(start);
        let shock = |d: i32| 1.0 + 0.4 * ((((d as i64 * 2_654_435_761) % 1000) as f64 / 1000.0) - 0.5);
        let mut series = Series::new();
        for p in 0..8 {
            let m = ((s - 500)..(s + 10))
                .map(|d| {
                    let noise = (((d * 7919 + p * 104_729) % 97) as f64 / 97.0 - 0.5) * 4.0;
                    (d, (300.0 + 40.0 * p as f64) * shock(d) + noise)
                })
                .collect();
            series.insert(format!("p{p}"), m);
        }
        let pool =
            Donors { mean: ((s - 500)..(s + 10)).map(|d| (d, 90.0 * shock(d))).collect(), pages: 40, tenants: 4 };
        let alone = plan(&series, start, 2, 1.0, &[], 7).unwrap();
        let pooled = plan_with_donors(&series, Some(&pool), start, 2, 1.0, &[], 7).unwrap();
        assert!(alone.method.starts_with("the page's own weekday means"), "{}", alone.method);
        assert!(pooled.method.starts_with("the ratio to the national donor pool"), "{}", pooled.method);
        assert!(pooled.mde < 0.25 * alone.mde, "with the pool {} against {} alone", pooled.mde, alone.mde);
        assert!(pooled.placebos == PLACEBOS_FOR_TARGET && (pooled.level - 0.95).abs() < 1e-9, "{pooled:?}");

        // A campaign of twice the pooled plan's MDE: the estimate with the pool detects it, without it does not.
        let treated: Vec<String> = series.keys().cloned().collect();
        let mut injected = series.clone();
        for p in &treated {
            for d in s..s + 2 {
                *injected.get_mut(p).unwrap().get_mut(&d).unwrap() += 2.0 * pooled.mde / 16.0;
            }
        }
        let with = estimate_with_donors(&injected, &treated, &[], Some(&pool), start, 2, &[]).unwrap();
        assert!(with.method.starts_with("the ratio to the national donor pool") && significant(&with), "{with:?}");
        assert!((with.effect - 2.0 * pooled.mde).abs() < pooled.mde, "{} against {}", with.effect, 2.0 * pooled.mde);
        let without = estimate(&injected, &treated, &[], start, 2, &[]).unwrap();
        assert!(!significant(&without), "{without:?}");
    }

    /// Placebo windows are the newest 39 clear of other campaigns, reaching back up to 60 weeks, and no further.
    #[test]
    fn placebo_windows_reach_past_another_campaign_up_to_sixty_weeks() {
        let start = NaiveDate::from_ymd_opt(2018, 6, 2).unwrap();
        let s = day_number(start);
        let mut series = Series::new();
        for p in 0..4 {
            let m = ((s - 500)..(s + 10))
                .map(|d| (d, 200.0 + 10.0 * p as f64 + (((d * 7919 + p * 104_729) % 97) as f64 / 97.0 - 0.5) * 20.0))
                .collect();
            series.insert(format!("p{p}"), m);
        }
        let treated: Vec<String> = series.keys().cloned().collect();
        let windows = |exclude: &[(i32, i32)]| {
            placebo_windows(&series, &treated, Reference::OWN, (s, s + 1), s - 500, exclude)
                .map(|(ps, _)| ps)
                .collect::<Vec<_>>()
        };
        // Nothing excluded: every week back to 60 (a fit period after the first day is also needed, and there is).
        let all = windows(&[]);
        assert_eq!((all.len(), all[0], *all.last().unwrap()), (60, s - 7, s - 420));
        // An earlier campaign 9 weeks back takes out the 8 newest weeks (its window and tail overlap their fit
        // periods): the 39 placebos reach back to week 47, beyond the 40 weeks of before.
        let recent = [(s - 60, s - 58)];
        let est = estimate(&series, &treated, &[], start, 2, &recent).unwrap();
        assert_eq!(est.placebos, PLACEBOS_FOR_TARGET);
        assert_eq!(windows(&recent)[..39].last(), Some(&(s - 7 * 47)));
        // A window after another campaign is clear once its fit period starts after that campaign's tail: weeks 1 to
        // 16 are clear of a campaign 29 weeks back. With campaigns 9, 17 and 29 weeks back, only weeks 29 to 60 are
        // left: 32 windows, none older than 60 weeks, although the history reaches back 71.
        let three = [(s - 60, s - 58), (s - 120, s - 118), (s - 200, s - 198)];
        assert_eq!(windows(&[(s - 200, s - 198)]).len(), 16 + 32);
        let left = windows(&three);
        assert_eq!((left.len(), left[0], *left.last().unwrap()), (32, s - 7 * 29, s - 420));
        let est = estimate(&series, &treated, &[], start, 2, &three).unwrap();
        assert_eq!(est.placebos, 32);
    }
}
