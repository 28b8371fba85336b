//! The planner: what to fetch for each tenant × practice × page × stream, in windows of at most 90 days, from a
//! backfill start or from checkpoints with a lookback (Meta revises recent days).

use std::collections::HashMap;

use chrono::{Duration, NaiveDate};
use pulse_config::Secret;
use pulse_config::{Access, WriteScope};
use pulse_domain::{ApiVersion, CanonicalMetric, GraphMetric, MetricCatalogue, PageId, Period, PracticeCode, Stream};

/// Page metrics asked for per period. Unique counts come at every period because they are not additive; the
/// demographic breakdowns come at 28 days, where Meta's 100-person threshold withholds least.
pub const DAY_METRICS: &[CanonicalMetric] = &[
    CanonicalMetric::PageViews,
    CanonicalMetric::PageReach,
    CanonicalMetric::PageEngagements,
    CanonicalMetric::PageEngagedUsers,
    CanonicalMetric::PageFollowers,
    CanonicalMetric::PageNewFollowers,
    CanonicalMetric::PageVideoViews,
    CanonicalMetric::PageFollowersByAgeGender,
];
pub const WEEK_METRICS: &[CanonicalMetric] = &[
    CanonicalMetric::PageViews,
    CanonicalMetric::PageReach,
    CanonicalMetric::PageEngagements,
    CanonicalMetric::PageEngagedUsers,
];
pub const DAYS_28_METRICS: &[CanonicalMetric] = &[
    CanonicalMetric::PageReach,
    CanonicalMetric::PageEngagedUsers,
    CanonicalMetric::PageReachByAgeGender,
    CanonicalMetric::PageEngagedByAgeGender,
];
pub const POST_METRICS: &[CanonicalMetric] = &[
    CanonicalMetric::PostViews,
    CanonicalMetric::PostReach,
    CanonicalMetric::PostEngagements,
    CanonicalMetric::PostEngagedUsers,
    CanonicalMetric::PostVideoViews,
    CanonicalMetric::PostVideoViewTimeByAgeGender,
];

/// Every page metric set with its period.
pub const PAGE_METRICS: [(Period, &[CanonicalMetric]); 3] =
    [(Period::Day, DAY_METRICS), (Period::Week, WEEK_METRICS), (Period::Days28, DAYS_28_METRICS)];

/// Meta's longest `since`..`until` span is 93 days; we stay inside it.
pub const MAX_WINDOW_DAYS: i64 = 90;
/// History goes back two years.
pub const MAX_HISTORY_DAYS: i64 = 730;

/// A page to ingest, with its token (kept as a secret) and the tenant scope its data is written under.
#[derive(Clone)]
pub struct Target {
    pub scope: WriteScope,
    pub practice: PracticeCode,
    pub page: PageId,
    pub token: Secret,
}

/// Why a page cannot be ingested: its tenant is not writable with this access, or its id is not a page id.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error(transparent)]
    Access(#[from] pulse_config::AccessDenied),
    #[error(transparent)]
    Page(#[from] pulse_domain::DomainError),
}

impl Target {
    /// A page to ingest into `tenant`, checked against `access` (which must be the operator's: ingest writes).
    pub fn new(
        access: &Access,
        tenant: &str,
        practice: PracticeCode,
        page: &str,
        token: Secret,
    ) -> Result<Self, TargetError> {
        Ok(Self { scope: access.write_scope(tenant)?, practice, page: page.parse()?, token })
    }
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Target({} {} {})", self.scope, self.practice, self.page)
    }
}

/// Days `from..=to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub from: NaiveDate,
    pub to: NaiveDate,
}

/// What one call of a plan asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fetch {
    /// `/{page}/insights` for every metric of the plan at once. When the plan's metrics span several periods the call
    /// names no `period`, and Meta answers each metric at every period it has: one call for all of them, the values
    /// of unwanted periods dropped on parsing.
    PageInsights,
    /// The page's posts in the window with their lifetime insights (field expansion), following cursors.
    Posts,
}

/// A page metric at a period (a post metric at `Lifetime`).
pub type MetricAt = (Period, &'static GraphMetric);

/// The distinct periods of `metrics`, in order.
pub fn periods(metrics: &[MetricAt]) -> Vec<Period> {
    let mut out: Vec<Period> = Vec::new();
    for (p, _) in metrics {
        if !out.contains(p) {
            out.push(*p);
        }
    }
    out
}

#[derive(Debug, Clone)]
pub struct StreamPlan {
    pub fetch: Fetch,
    pub metrics: Vec<MetricAt>,
    pub windows: Vec<Window>,
}

impl StreamPlan {
    /// The periods asked for, in order.
    pub fn periods(&self) -> Vec<Period> {
        periods(&self.metrics)
    }

    /// How a failure names what could not be fetched: `page_insights/day`, `page_insights/day+week+days_28`, `posts`.
    pub fn label(&self) -> String {
        match self.fetch {
            Fetch::Posts => Stream::Posts.to_string(),
            Fetch::PageInsights => {
                let periods: Vec<&str> = self.periods().iter().map(|p| p.as_str()).collect();
                format!("page_insights/{}", periods.join("+"))
            }
        }
    }
}

/// Splits `from..=to` into windows of at most `max` days.
pub fn windows(from: NaiveDate, to: NaiveDate, max: i64) -> Vec<Window> {
    let mut out = Vec::new();
    let mut start = from;
    while start <= to {
        let end = (start + Duration::days(max - 1)).min(to);
        out.push(Window { from: start, to: end });
        start = end + Duration::days(1);
    }
    out
}

/// The Graph metrics to ask for, for these canonical metrics at this period, under `version` on `today`.
pub fn graph_metrics(
    wanted: &[CanonicalMetric],
    period: Period,
    version: ApiVersion,
    today: NaiveDate,
) -> Vec<&'static GraphMetric> {
    let catalogue = MetricCatalogue::default();
    wanted
        .iter()
        .filter_map(|&m| catalogue.graph_name(m, version, today))
        .filter(|g| g.periods.contains(&period))
        .collect()
}

/// Plan options.
#[derive(Debug, Clone)]
pub struct PlanOptions {
    pub version: ApiVersion,
    /// The first Pacific day that is not complete yet; data is fetched up to the day before.
    pub today: NaiveDate,
    /// Where a page without checkpoints starts.
    pub backfill_from: NaiveDate,
    /// Days re-read before a checkpoint, because Meta revises recent days.
    pub lookback_days: i64,
    /// Days over which a post's lifetime values are re-read (its growth curve).
    pub post_snapshot_days: i64,
}

impl PlanOptions {
    /// Lookback days used unless told otherwise (Meta revises the last few days).
    pub const DEFAULT_LOOKBACK_DAYS: i64 = 3;
    /// Days over which young posts are re-snapshotted.
    pub const POST_SNAPSHOT_DAYS: i64 = 28;

    /// A plan up to the day before `today`, backfilling pages without checkpoints from `backfill_from`, with the
    /// default lookback and post snapshot window.
    pub fn backfill(version: ApiVersion, today: NaiveDate, backfill_from: NaiveDate) -> Self {
        Self {
            version,
            today,
            backfill_from,
            lookback_days: Self::DEFAULT_LOOKBACK_DAYS,
            post_snapshot_days: Self::POST_SNAPSHOT_DAYS,
        }
    }
}

/// The calls for one page, given its checkpoints (`through_day` per stream): page metrics of every period that agree
/// on where to start share one call per window (the API's minimum: Meta's windows are at most 90 days and one call
/// can name every metric and, without `period`, every period), and the posts with their insights are one listing.
pub fn plan_page(opts: &PlanOptions, checkpoints: &HashMap<Stream, NaiveDate>) -> Vec<StreamPlan> {
    let last = opts.today - Duration::days(1);
    let earliest = opts.today - Duration::days(MAX_HISTORY_DAYS);
    let start_for = |stream: Stream, lookback: i64| match checkpoints.get(&stream) {
        Some(through) => (*through - Duration::days(lookback - 1)).max(earliest),
        None => opts.backfill_from.max(earliest),
    };
    // Checkpoints are per metric (a refused metric holds its own back); a page checkpointed before that has one per
    // period, which stands for every metric of it.
    let mut by_start: std::collections::BTreeMap<NaiveDate, Vec<MetricAt>> = Default::default();
    for (period, wanted) in PAGE_METRICS {
        for metric in graph_metrics(wanted, period, opts.version, opts.today) {
            let own = Stream::PageMetric(period, metric.canonical);
            let stream = if checkpoints.contains_key(&own) { own } else { Stream::PageInsights(period) };
            let from = start_for(stream, opts.lookback_days);
            if from <= last {
                by_start.entry(from).or_default().push((period, metric));
            }
        }
    }
    // Metrics that agree on where to start share their calls; those that lag behind (a gap to fill) get their own.
    let mut plans: Vec<StreamPlan> = by_start
        .into_iter()
        .map(|(from, metrics)| StreamPlan {
            fetch: Fetch::PageInsights,
            metrics,
            windows: windows(from, last, MAX_WINDOW_DAYS),
        })
        .collect();
    let from = start_for(Stream::Posts, opts.post_snapshot_days);
    if from <= last {
        plans.push(StreamPlan {
            fetch: Fetch::Posts,
            metrics: graph_metrics(POST_METRICS, Period::Lifetime, opts.version, opts.today)
                .into_iter()
                .map(|m| (Period::Lifetime, m))
                .collect(),
            windows: vec![Window { from, to: last }],
        });
    }
    plans
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).unwrap()
    }

    fn opts() -> PlanOptions {
        PlanOptions {
            version: ApiVersion::new(2, 12),
            today: d(2018, 7, 1),
            backfill_from: d(2017, 1, 1),
            lookback_days: 3,
            post_snapshot_days: 28,
        }
    }

    #[test]
    fn windows_are_at_most_90_days_and_cover_the_range() {
        let w = windows(d(2017, 1, 1), d(2018, 6, 30), MAX_WINDOW_DAYS);
        assert_eq!(w.len(), 7);
        assert_eq!(w[0], Window { from: d(2017, 1, 1), to: d(2017, 3, 31) });
        assert!(w.windows(2).all(|p| p[1].from == p[0].to + Duration::days(1)));
        assert_eq!(w.last().unwrap().to, d(2018, 6, 30));
        assert!(w.iter().all(|x| (x.to - x.from).num_days() < 90));
    }

    /// Checkpoints of every page metric at every period through `day`.
    fn every_metric_through(day: NaiveDate) -> HashMap<Stream, NaiveDate> {
        PAGE_METRICS
            .iter()
            .flat_map(|(period, wanted)| wanted.iter().map(|m| (Stream::PageMetric(*period, *m), day)))
            .collect()
    }

    fn names(plan: &StreamPlan, period: Period) -> Vec<&'static str> {
        plan.metrics.iter().filter(|(p, _)| *p == period).map(|(_, g)| g.name).collect()
    }

    #[test]
    fn a_backfill_asks_for_every_period_in_one_call_per_window_and_the_catalogue_picks_names() {
        let plans = plan_page(&opts(), &HashMap::new());
        assert_eq!(plans.iter().map(|p| p.fetch).collect::<Vec<_>>(), vec![Fetch::PageInsights, Fetch::Posts]);
        assert_eq!(plans[0].periods(), vec![Period::Day, Period::Week, Period::Days28]);
        assert_eq!(plans[0].label(), "page_insights/day+week+days_28");
        assert_eq!(plans[0].windows.len(), 7, "18 months in 90-day windows: 7 calls for all page metrics");
        assert_eq!(plans[1].windows.len(), 1, "posts: one listing (paged by cursor)");
        let day = names(&plans[0], Period::Day);
        assert!(day.contains(&"page_impressions_unique") && day.contains(&"page_fans_gender_age"));
        assert_eq!(names(&plans[0], Period::Week).len(), WEEK_METRICS.len());
        assert!(names(&plans[0], Period::Days28).contains(&"page_impressions_by_age_gender_unique"));
        let current = PlanOptions {
            version: ApiVersion::new(25, 0),
            today: d(2026, 11, 21),
            backfill_from: d(2026, 1, 1),
            ..opts()
        };
        let plans = plan_page(&current, &HashMap::new());
        let day = names(&plans[0], Period::Day);
        assert!(day.contains(&"page_media_view") && !day.contains(&"page_fans"));
        assert_eq!(
            names(&plans[1], Period::Lifetime),
            vec![
                "post_media_view",
                "post_total_media_view_unique",
                "post_clicks",
                "post_video_view_time_by_age_bucket_and_gender"
            ]
        );
        assert_eq!(plans[1].label(), "posts");
    }

    #[test]
    fn a_daily_incremental_run_is_one_insights_call_and_one_posts_listing() {
        let mut cps = every_metric_through(d(2018, 6, 29));
        cps.insert(Stream::Posts, d(2018, 6, 29));
        let plans = plan_page(&opts(), &cps);
        assert_eq!(plans.len(), 2, "{plans:?}");
        assert_eq!(plans[0].windows, vec![Window { from: d(2018, 6, 27), to: d(2018, 6, 30) }]);
        assert_eq!(plans[0].periods(), vec![Period::Day, Period::Week, Period::Days28]);
        assert_eq!(plans[1].windows[0].from, d(2018, 6, 2), "young posts are re-snapshotted");
    }

    #[test]
    fn an_incremental_run_starts_at_the_checkpoint_minus_the_lookback() {
        let mut cps = HashMap::new();
        // A page checkpointed per period (before checkpoints were per metric), daily data only.
        cps.insert(Stream::PageInsights(Period::Day), d(2018, 6, 25));
        cps.insert(Stream::Posts, d(2018, 6, 30));
        let plans = plan_page(&opts(), &cps);
        // The week and 28-day metrics were never fetched: backfilled in their own calls; the day metrics re-read the
        // lookback.
        assert_eq!(plans.len(), 3, "{plans:?}");
        assert_eq!(plans[0].periods(), vec![Period::Week, Period::Days28]);
        assert_eq!(plans[0].windows[0].from, d(2017, 1, 1));
        assert_eq!(plans[1].periods(), vec![Period::Day]);
        assert_eq!(plans[1].label(), "page_insights/day");
        assert_eq!(plans[1].windows, vec![Window { from: d(2018, 6, 23), to: d(2018, 6, 30) }]);
        assert_eq!(plans[2].windows[0].from, d(2018, 6, 3), "young posts are re-snapshotted");
    }

    #[test]
    fn a_metric_whose_checkpoint_lags_is_fetched_from_its_own_start_and_the_rest_from_theirs() {
        let mut cps = every_metric_through(d(2018, 6, 25));
        // Daily reach was refused in the window after April: its checkpoint stayed at the end of April.
        cps.insert(Stream::PageMetric(Period::Day, CanonicalMetric::PageReach), d(2018, 4, 30));
        let plans = plan_page(&opts(), &cps);
        let page: Vec<&StreamPlan> = plans.iter().filter(|p| p.fetch == Fetch::PageInsights).collect();
        assert_eq!(page.len(), 2, "{page:?}");
        assert_eq!(
            page[0].metrics.iter().map(|(p, m)| (*p, m.name)).collect::<Vec<_>>(),
            vec![(Period::Day, "page_impressions_unique")]
        );
        assert_eq!(page[0].windows[0].from, d(2018, 4, 28));
        assert_eq!(page[0].windows.last().unwrap().to, d(2018, 6, 30));
        assert!(!names(page[1], Period::Day).contains(&"page_impressions_unique"));
        assert!(names(page[1], Period::Week).contains(&"page_impressions_unique"), "weekly reach is up to date");
        assert_eq!(page[1].windows, vec![Window { from: d(2018, 6, 23), to: d(2018, 6, 30) }]);
    }

    #[test]
    fn history_is_capped_at_two_years() {
        let o = PlanOptions { backfill_from: d(2010, 1, 1), ..opts() };
        let plans = plan_page(&o, &HashMap::new());
        assert_eq!(plans[0].windows[0].from, d(2016, 7, 1));
    }
}
