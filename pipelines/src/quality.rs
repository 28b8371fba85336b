//! Data quality: gaps, stale pages, pages needing re-authorisation, impossible values.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use polars::prelude::*;
use pulse_domain::{CanonicalMetric as M, IngestRunRecord, Period as P};

use crate::Result;
use crate::frames::{day_number, from_day_number, series_many};

pub const WANTED: &[(M, P)] = &[
    (M::PageReach, P::Day),
    (M::PageReach, P::Week),
    (M::PageViews, P::Day),
    (M::PageEngagements, P::Day),
    (M::PageEngagedUsers, P::Day),
    (M::PageFollowers, P::Day),
    (M::PageVideoViews, P::Day),
];

/// Metrics checked for gaps one by one (besides daily reach): a metric Meta refused in some window leaves a hole
/// in its own series while the others are whole, and that hole must show.
pub const GAP_CHECKED: &[(M, P)] = &[
    (M::PageViews, P::Day),
    (M::PageEngagements, P::Day),
    (M::PageEngagedUsers, P::Day),
    (M::PageFollowers, P::Day),
    (M::PageVideoViews, P::Day),
    (M::PageReach, P::Week),
];

/// Days without a value before a page counts as stale.
pub const STALE_DAYS: i32 = 3;

#[derive(Default)]
struct Rows {
    practice: Vec<String>,
    page: Vec<String>,
    check: Vec<&'static str>,
    from: Vec<i32>,
    to: Vec<i32>,
    count: Vec<u32>,
    detail: Vec<String>,
}

impl Rows {
    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        practice: &str,
        page: &str,
        check: &'static str,
        from: i32,
        to: i32,
        count: u32,
        detail: String,
    ) {
        self.practice.push(practice.to_owned());
        self.page.push(page.to_owned());
        self.check.push(check);
        self.from.push(from);
        self.to.push(to);
        self.count.push(count);
        self.detail.push(detail);
    }
}

/// Holes in each checked metric's series, within the span its page has daily reach for. A metric the tenant has
/// nowhere is not expected (the API era does not offer it); days after the API retired a metric are not holes.
fn metric_gaps<'a>(
    series_of: impl Fn(M, P) -> &'a crate::campaign::Series,
    practice_of: &BTreeMap<String, String>,
    reach: &crate::campaign::Series,
    lo: i32,
    hi: i32,
    rows: &mut Rows,
) -> Result<()> {
    let catalogue = pulse_domain::MetricCatalogue::default();
    for &(metric, period) in GAP_CHECKED {
        let series = series_of(metric, period);
        if series.is_empty() {
            continue;
        }
        let retired = catalogue.retired_since(metric).map(day_number).unwrap_or(i32::MAX);
        for (page, practice) in practice_of {
            let Some(span) = reach.get(page) else { continue };
            let present: Vec<i32> = span.keys().copied().filter(|d| (lo..=hi).contains(d)).collect();
            let (Some(&first), Some(&last)) = (present.first(), present.last()) else { continue };
            let have = series.get(page);
            // Weekly values exist for every day too (rolling windows), so the same day-by-day check applies.
            let missing: Vec<i32> =
                (first..=last.min(retired - 1)).filter(|d| have.is_none_or(|h| !h.contains_key(d))).collect();
            if let (Some(&a), Some(&b)) = (missing.first(), missing.last()) {
                rows.push(
                    practice,
                    page,
                    "metric_gap",
                    a,
                    b,
                    missing.len() as u32,
                    format!(
                        "{} days without {} ({}) between {} and {} while other metrics have them (Meta refused or \
                         omitted it); the next `pulse ingest` asks for these days again, or run it with --since {}",
                        missing.len(),
                        metric.as_str(),
                        period.as_str(),
                        from_day_number(a),
                        from_day_number(b),
                        from_day_number(a)
                    ),
                );
            }
        }
    }
    Ok(())
}

/// Checks a tenant's facts over `[from, to]`, plus its latest ingest run.
pub fn quality(facts: &DataFrame, runs: &[IngestRunRecord], from: NaiveDate, to: NaiveDate) -> Result<DataFrame> {
    let (lo, hi) = (day_number(from), day_number(to));
    // Each page's practice on its latest day (a page that moved practice is named by its new one), whatever order
    // the store handed the facts over in.
    let pages = facts
        .clone()
        .lazy()
        .group_by([col("page_id")])
        .agg([col("practice_code")
            .sort_by([col("day"), col("practice_code")], SortMultipleOptions::default())
            .last()
            .alias("practice_code")])
        .collect()?;
    let practice_of: BTreeMap<String, String> = pages
        .column("page_id")?
        .str()?
        .iter()
        .zip(pages.column("practice_code")?.str()?.iter())
        .filter_map(|(p, c)| Some((p?.to_owned(), c?.to_owned())))
        .collect();
    // Every series the checks read, in one pass over the facts.
    let mut pairs = vec![(M::PageReach, P::Day), (M::PageReach, P::Week), (M::PageViews, P::Day)];
    pairs.extend(GAP_CHECKED.iter().filter(|g| !pairs.contains(g)).copied().collect::<Vec<_>>());
    let all = series_many(facts, &pairs)?;
    let series_of = |m: M, p: P| &all[pairs.iter().position(|x| *x == (m, p)).expect("asked for above")];
    let (reach, week, views) =
        (series_of(M::PageReach, P::Day), series_of(M::PageReach, P::Week), series_of(M::PageViews, P::Day));
    let mut rows = Rows::default();
    for (page, practice) in &practice_of {
        let days = reach.get(page).cloned().unwrap_or_default();
        let present: Vec<i32> = days.keys().copied().filter(|d| (lo..=hi).contains(d)).collect();
        if let (Some(&first), Some(&last)) = (present.first(), present.last()) {
            let missing: Vec<i32> = (first..=last).filter(|d| !days.contains_key(d)).collect();
            if let (Some(&a), Some(&b)) = (missing.first(), missing.last()) {
                rows.push(
                    practice,
                    page,
                    "gap",
                    a,
                    b,
                    missing.len() as u32,
                    format!(
                        "{} days without daily reach between {} and {}; re-run ingest with --since {}",
                        missing.len(),
                        from_day_number(a),
                        from_day_number(b),
                        from_day_number(a)
                    ),
                );
            }
            if hi - last > STALE_DAYS {
                rows.push(
                    practice,
                    page,
                    "stale",
                    last + 1,
                    hi,
                    (hi - last) as u32,
                    format!("no data after {}: check the page's token and the last ingest run", from_day_number(last)),
                );
            }
        } else {
            rows.push(
                practice,
                page,
                "stale",
                lo,
                hi,
                (hi - lo + 1) as u32,
                "no daily reach at all in this range".into(),
            );
        }
        if let Some(v) = views.get(page) {
            let bad: Vec<i32> =
                days.iter().filter(|(d, r)| v.get(d).is_some_and(|x| **r > *x)).map(|(d, _)| *d).collect();
            if let (Some(&a), Some(&b)) = (bad.first(), bad.last()) {
                rows.push(
                    practice,
                    page,
                    "unique_above_total",
                    a,
                    b,
                    bad.len() as u32,
                    "daily reach (unique people) above daily views (total): impossible; re-ingest these days".into(),
                );
            }
        }
        if let Some(w) = week.get(page) {
            let bad: Vec<i32> = w
                .iter()
                .filter(|(d, wv)| {
                    let max_day = (**d - 6..=**d).filter_map(|x| days.get(&x)).fold(f64::MIN, |a, b| a.max(*b));
                    max_day > f64::MIN && **wv + 0.5 < max_day
                })
                .map(|(d, _)| *d)
                .collect();
            if let (Some(&a), Some(&b)) = (bad.first(), bad.last()) {
                rows.push(
                    practice,
                    page,
                    "week_below_max_day",
                    a,
                    b,
                    bad.len() as u32,
                    "a week's unique reach is below its largest day's: impossible; re-ingest these weeks".into(),
                );
            }
        }
    }
    metric_gaps(series_of, &practice_of, reach, lo, hi, &mut rows)?;
    // Pages needing re-authorisation, from each practice's latest run.
    let mut latest: BTreeMap<&str, &IngestRunRecord> = BTreeMap::new();
    for r in runs {
        let e = latest.entry(r.practice.as_str()).or_insert(r);
        if r.started_at > e.started_at {
            *e = r;
        }
    }
    for r in latest.values().filter(|r| r.pages_needing_reauth > 0 || r.status == pulse_domain::RunStatus::Failed) {
        let d = day_number(r.started_at.date_naive());
        let check = if r.pages_needing_reauth > 0 { "reauth" } else { "ingest_failed" };
        rows.push(r.practice.as_str(), "", check, d, d, r.pages_needing_reauth.max(1), r.message.clone());
    }
    let df = df!(
        "practice_code" => rows.practice,
        "page_id" => rows.page,
        "check_name" => rows.check,
        "day_from" => rows.from,
        "day_to" => rows.to,
        "count" => rows.count,
        "detail" => rows.detail,
    )?;
    Ok(df.lazy().with_columns([col("day_from").cast(DataType::Date), col("day_to").cast(DataType::Date)]).collect()?)
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, Utc};
    use pulse_domain::{ApiVersion, PageInsightFact};

    use super::*;

    fn fact(metric: M, period: P, day: NaiveDate) -> PageInsightFact {
        PageInsightFact {
            practice: "M83001".parse().unwrap(),
            page: "100000000001".parse().unwrap(),
            metric,
            graph_metric: "",
            period,
            day,
            breakdown: "".into(),
            value: if metric == M::PageViews { 100.0 } else { 50.0 },
            api_version: ApiVersion::new(2, 12),
            fetched_at: Utc::now(),
        }
    }

    #[test]
    fn a_hole_in_one_metric_is_a_gap_even_when_reach_is_whole() {
        let from = NaiveDate::from_ymd_opt(2018, 3, 1).unwrap();
        let mut facts = Vec::new();
        for i in 0..30 {
            let day = from + Duration::days(i);
            facts.push(fact(M::PageReach, P::Day, day));
            // Views were refused for ten days in the middle of the month.
            if !(10..20).contains(&i) {
                facts.push(fact(M::PageViews, P::Day, day));
            }
        }
        let df = crate::frames::facts_frame(&facts).unwrap();
        let to = from + Duration::days(29);
        let q = quality(&df, &[], from, to).unwrap();
        let checks: Vec<&str> = q.column("check_name").unwrap().str().unwrap().iter().flatten().collect();
        assert_eq!(checks, vec!["metric_gap"], "{q}");
        assert_eq!(q.column("count").unwrap().u32().unwrap().get(0), Some(10));
        let detail = q.column("detail").unwrap().str().unwrap().get(0).unwrap().to_owned();
        assert!(detail.contains("page_views") && detail.contains("2018-03-11"), "{detail}");
        // With every metric whole, there is nothing to report.
        let whole: Vec<PageInsightFact> = (0..30)
            .flat_map(|i| [M::PageReach, M::PageViews].map(|m| fact(m, P::Day, from + Duration::days(i))))
            .collect();
        assert_eq!(quality(&crate::frames::facts_frame(&whole).unwrap(), &[], from, to).unwrap().height(), 0);
    }
}
