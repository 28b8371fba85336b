//! Reach: weekly figures per page from the API's own unique counts, change, outliers, and tenant roll-ups.
//!
//! A week's reach is the API's `week` value ending on the week's last day: never the sum of seven daily uniques.
//! Summing pages' reach across a tenant counts people who follow several pages more than once, so the roll-up calls
//! it gross reach.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use polars::prelude::*;
use pulse_domain::{CanonicalMetric as M, Period as P};

use crate::Result;
use crate::frames::day_number;

/// What the reach pipeline reads.
pub const WANTED: &[(M, P)] = &[
    (M::PageReach, P::Day),
    (M::PageReach, P::Week),
    (M::PageEngagedUsers, P::Week),
    (M::PageViews, P::Day),
    (M::PageEngagements, P::Day),
    (M::PageFollowers, P::Day),
];

/// Robust z-score beyond which a page stands out (Iglewicz and Hoaglin's 3.5).
pub const OUTLIER_SCORE: f64 = 3.5;

fn is(m: M, p: P) -> Expr {
    col("metric").eq(lit(m.as_str())).and(col("period").eq(lit(p.as_str())))
}

/// Day number of the Sunday ending the (Monday-Sunday) week of `day` (1970-01-01 was a Thursday).
fn week_end(day: Expr) -> Expr {
    let n = day.cast(DataType::Int32);
    n.clone() + lit(6) - ((n + lit(3)) % lit(7))
}

fn sum_or_null(m: M, p: P, name: &str) -> [Expr; 2] {
    [col("value").filter(is(m, p)).sum().alias(name), col("value").filter(is(m, p)).count().alias(format!("n_{name}"))]
}

fn at_week_end(m: M, p: P, name: &str) -> Expr {
    col("value").filter(is(m, p).and(col("day_n").eq(col("week_end")))).first().alias(name)
}

/// Weekly reach per page for the complete weeks (Monday-Sunday, Pacific days) inside `[from, to]`.
pub fn weekly(facts: &DataFrame, from: NaiveDate, to: NaiveDate) -> Result<DataFrame> {
    let (lo, hi) = (day_number(from), day_number(to));
    let mut aggs: Vec<Expr> = Vec::new();
    aggs.extend(sum_or_null(M::PageViews, P::Day, "views"));
    aggs.extend(sum_or_null(M::PageEngagements, P::Day, "engagements"));
    aggs.push(col("value").filter(is(M::PageReach, P::Day)).count().cast(DataType::UInt32).alias("days_with_data"));
    aggs.push(at_week_end(M::PageReach, P::Week, "reach"));
    aggs.push(at_week_end(M::PageEngagedUsers, P::Week, "engaged_users"));
    aggs.push(at_week_end(M::PageFollowers, P::Day, "followers"));
    let null = || lit(NULL).cast(DataType::Float64);
    let df = facts
        .clone()
        .lazy()
        .filter(col("breakdown").eq(lit("")))
        .with_columns([col("day").cast(DataType::Int32).alias("day_n"), week_end(col("day")).alias("week_end")])
        .filter(col("week_end").gt_eq(lit(lo + 6)).and(col("week_end").lt_eq(lit(hi))))
        .group_by([col("practice_code"), col("page_id"), col("week_end")])
        .agg(aggs)
        .with_columns([
            when(col("n_views").gt(lit(0))).then(col("views")).otherwise(null()).alias("views"),
            when(col("n_engagements").gt(lit(0))).then(col("engagements")).otherwise(null()).alias("engagements"),
        ])
        .with_column((col("engagements") / col("views")).alias("engagement_rate"))
        // The practice too: a page that moved practice has two rows in the week it moved, in a fixed order whatever
        // order the store handed the facts over in.
        .sort(["page_id", "week_end", "practice_code"], SortMultipleOptions::default())
        .collect()?;
    add_changes_and_outliers(df)
}

/// Week-on-week change, follower growth and the robust outlier score, computed across the sorted rows.
fn add_changes_and_outliers(mut df: DataFrame) -> Result<DataFrame> {
    let pages: Vec<String> = df.column("page_id")?.str()?.iter().map(|s| s.unwrap_or_default().to_owned()).collect();
    let weeks: Vec<i32> = df.column("week_end")?.i32()?.iter().map(|v| v.unwrap_or(0)).collect();
    let reach: Vec<Option<f64>> = df.column("reach")?.f64()?.iter().collect();
    let followers: Vec<Option<f64>> = df.column("followers")?.f64()?.iter().collect();
    let n = pages.len();
    let mut change = vec![None; n];
    let mut growth = vec![None; n];
    for i in 1..n {
        if pages[i] == pages[i - 1] && weeks[i] - weeks[i - 1] == 7 {
            change[i] = match (reach[i], reach[i - 1]) {
                (Some(a), Some(b)) if b > 0.0 => Some(a / b - 1.0),
                _ => None,
            };
            growth[i] = match (followers[i], followers[i - 1]) {
                (Some(a), Some(b)) => Some(a - b),
                _ => None,
            };
        }
    }
    // Reach per follower, scored against the other pages of the same week with the median and MAD.
    let mut by_week: BTreeMap<i32, Vec<(usize, f64)>> = BTreeMap::new();
    for i in 0..n {
        if let (Some(r), Some(f)) = (reach[i], followers[i])
            && f > 0.0
        {
            by_week.entry(weeks[i]).or_default().push((i, r / f));
        }
    }
    let mut score = vec![None; n];
    let mut reason = vec![String::new(); n];
    for rows in by_week.values() {
        if rows.len() < 5 {
            continue;
        }
        let xs: Vec<f64> = rows.iter().map(|(_, x)| *x).collect();
        let med = median(&xs);
        let mad = median(&xs.iter().map(|x| (x - med).abs()).collect::<Vec<_>>());
        if mad <= 0.0 {
            continue;
        }
        for &(i, x) in rows {
            let z = 0.6745 * (x - med) / mad;
            score[i] = Some(z);
            if z.abs() >= OUTLIER_SCORE {
                reason[i] = format!(
                    "reach per follower {x:.2} is {:.1} robust SDs {} the tenant's median of {med:.2} that week",
                    z.abs(),
                    if z > 0.0 { "above" } else { "below" }
                );
            }
        }
    }
    df.with_column(Column::new("reach_change".into(), change))?;
    df.with_column(Column::new("follower_growth".into(), growth))?;
    df.with_column(Column::new("outlier_score".into(), score))?;
    df.with_column(Column::new("outlier_reason".into(), reason))?;
    let df = df.lazy().with_column(col("week_end").cast(DataType::Date).alias("week_ending")).collect()?;
    Ok(df)
}

pub fn median(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    let mut v = xs.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let m = v.len() / 2;
    if v.len() % 2 == 1 { v[m] } else { (v[m - 1] + v[m]) / 2.0 }
}

/// The tenant's weekly roll-up: sums of page uniques are gross, so they are named so.
pub fn tenant_weekly(weekly: &DataFrame) -> Result<DataFrame> {
    Ok(weekly
        .clone()
        .lazy()
        .group_by([col("week_ending")])
        .agg([
            col("page_id").count().cast(DataType::UInt32).alias("pages"),
            col("reach").sum().alias("gross_reach"),
            col("engaged_users").sum().alias("gross_engaged_users"),
            col("views").sum().alias("views"),
            col("engagements").sum().alias("engagements"),
            col("followers").sum().alias("followers"),
            col("reach").median().alias("median_page_reach"),
        ])
        .sort(["week_ending"], SortMultipleOptions::default())
        .collect()?)
}
