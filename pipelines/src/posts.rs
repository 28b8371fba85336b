//! Post performance: each post's latest lifetime figures, engagement rate, rule-based topic, rank in the tenant.

use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use polars::prelude::*;

use crate::Result;

/// Rule-based topic of a post, from its message (first match wins).
pub fn topic(message: &str, campaign_tags: &[String]) -> &'static str {
    let m = message.to_lowercase();
    if campaign_tags.iter().any(|t| !t.is_empty() && m.contains(&t.to_lowercase())) {
        return "campaign";
    }
    let has = |words: &[&str]| words.iter().any(|w| m.contains(w));
    if has(&["missed", "did not attend", "#dna", " dna "]) {
        "dna_figures"
    } else if has(&["vaccin", "flu", "jab", "immunis"]) {
        "vaccines"
    } else if has(&["opening hours", "we are open", "closed", "bank holiday", "opening times"]) {
        "opening_hours"
    } else if has(&["phones", "website", "cyber", "down"]) {
        "service_notice"
    } else if has(&["ppg", "patient participation"]) {
        "patient_group"
    } else if has(&["self-care", "self care", "tutorial", "asthma"]) {
        "self_care"
    } else {
        "other"
    }
}

/// Posts ranked by reach in the tenant, with engagement rate and topic.
pub fn post_performance(posts: &DataFrame, campaign_tags: &[String]) -> Result<DataFrame> {
    let messages = posts.column("message")?.str()?.clone();
    let topics: Vec<&str> = messages.iter().map(|m| topic(m.unwrap_or(""), campaign_tags)).collect();
    let mut df = posts.clone();
    df.with_column(Column::new("topic".into(), topics))?;
    ranked(df)
}

/// An incremental run's post performance: the previous run's rows (`old`, in the report's shape), with the posts
/// fetched since (`posts`: new ones added, changed ones' details replaced) and the lifetime figures of every
/// (post, metric) with a snapshot fetched at or after `since` replaced by its latest snapshot among `snapshots`,
/// which must hold every snapshot dated on or after the earliest one fetched since, and every snapshot of the posts
/// new to the report (their figures are their latest snapshots'); then ranked again. A
/// (post, metric) with no snapshot fetched since keeps its figure: its snapshots are the ones the previous run read.
/// Rows not changed are carried over as they are (in Arrow, without a copy per value); the same figures, rates and
/// ranks as [`post_performance`] over every post (the incremental jobs test compares them row by row).
pub fn updated_performance(
    old: &RecordBatch,
    posts: &[pulse_domain::Post],
    snapshots: &[pulse_domain::PostInsightSnapshot],
    since: chrono::DateTime<chrono::Utc>,
    campaign_tags: &[String],
) -> Result<RecordBatch> {
    use std::collections::{BTreeMap, HashMap};

    use arrow::array::{Array, ArrayRef, BooleanArray, Date32Array, Float64Array, StringArray, UInt32Array};
    use arrow::compute::{SortColumn, SortOptions};
    use pulse_domain::CanonicalMetric as M;
    use pulse_store::report::POST_PERFORMANCE as T;

    const FIGURES: [(&str, M); 5] = [
        ("reach", M::PostReach),
        ("views", M::PostViews),
        ("engagements", M::PostEngagements),
        ("engaged_users", M::PostEngagedUsers),
        ("video_views", M::PostVideoViews),
    ];
    let fail = |e: arrow::error::ArrowError| crate::PipelineError::Input(format!("{}: {e}", T.name));
    let missing = |c: &str| crate::PipelineError::Input(format!("{}: no `{c}` column", T.name));
    let column = |c: &str| old.column_by_name(c).ok_or_else(|| missing(c));
    let texts = |c: &str| column(c)?.as_any().downcast_ref::<StringArray>().ok_or_else(|| missing(c));
    let figure = |c: &str| column(c)?.as_any().downcast_ref::<Float64Array>().ok_or_else(|| missing(c));
    let old_posts = texts("post_id")?;

    // Each changed post's row: its details (from the post fetched since, else its old row) and figures.
    struct Row {
        details: [String; 8],
        created: i32,
        figures: [Option<f64>; 5],
    }
    let old_index: HashMap<&str, usize> = old_posts.iter().enumerate().map(|(i, p)| (p.unwrap_or(""), i)).collect();
    let old_row = |i: usize| -> Result<Row> {
        let text = |c: &str| texts(c).map(|a| a.value(i).to_owned());
        let created = column("created")?.as_any().downcast_ref::<Date32Array>().ok_or_else(|| missing("created"))?;
        let mut figures = [None; 5];
        for (f, (c, _)) in figures.iter_mut().zip(FIGURES) {
            let a = figure(c)?;
            *f = a.is_valid(i).then(|| a.value(i));
        }
        Ok(Row {
            details: [
                text("practice_code")?,
                text("page_id")?,
                text("post_id")?,
                text("post_type")?,
                text("topic")?,
                text("posted_at")?,
                text("excerpt")?,
                text("permalink")?,
            ],
            created: created.value(i),
            figures,
        })
    };
    let latest = crate::frames::latest_lifetime(snapshots);
    let mut changed: BTreeMap<String, Row> = BTreeMap::new();
    for p in posts {
        // A post new to the report takes every figure from its snapshots (all of them are in `snapshots`).
        let figures = match old_index.get(p.post.as_str()) {
            Some(i) => old_row(*i)?.figures,
            None => FIGURES.map(|(_, m)| latest.get(&(p.post.as_str(), m)).copied()),
        };
        let details = [
            p.practice.as_str().to_owned(),
            p.page.as_str().to_owned(),
            p.post.as_str().to_owned(),
            p.post_type.clone(),
            topic(&p.message, campaign_tags).to_owned(),
            p.created_time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            pulse_domain::text::excerpt(&p.message, pulse_domain::text::EXCERPT_CHARS),
            crate::frames::facebook_permalink(&p.permalink).to_owned(),
        ];
        let created = pulse_domain::day_number(p.created_time.date_naive());
        changed.insert(p.post.as_str().to_owned(), Row { details, created, figures });
    }
    for s in snapshots.iter().filter(|s| s.fetched_at >= since && s.breakdown.is_empty()) {
        let Some(f) = FIGURES.iter().position(|(_, m)| *m == s.metric) else { continue };
        if !changed.contains_key(s.post.as_str()) {
            let Some(i) = old_index.get(s.post.as_str()) else { continue };
            changed.insert(s.post.as_str().to_owned(), old_row(*i)?);
        }
        let row = changed.get_mut(s.post.as_str()).expect("just inserted");
        row.figures[f] = latest.get(&(s.post.as_str(), s.metric)).copied();
    }

    // The old rows not changed, then the changed ones (rate from their figures, as the full computation's).
    let keep: BooleanArray = old_posts.iter().map(|p| Some(!changed.contains_key(p.unwrap_or("")))).collect();
    let kept = arrow::compute::filter_record_batch(old, &keep).map_err(fail)?;
    let rows: Vec<&Row> = changed.values().collect();
    let rate = |r: &Row| match (r.figures[0], r.figures[3].or(r.figures[2])) {
        (Some(reach), Some(engaged)) if reach > 0.0 => Some(engaged / reach).filter(|v| v.is_finite()),
        _ => None,
    };
    let detail = |k: usize| Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.details[k].as_str())));
    let number = |k: usize| Arc::new(Float64Array::from_iter(rows.iter().map(|r| r.figures[k])));
    let new_columns: Vec<ArrayRef> = vec![
        detail(0),
        detail(1),
        detail(2),
        Arc::new(Date32Array::from_iter_values(rows.iter().map(|r| r.created))),
        detail(3),
        detail(4),
        number(0),
        number(1),
        number(2),
        number(3),
        number(4),
        Arc::new(Float64Array::from_iter(rows.iter().map(|r| rate(r)))),
        Arc::new(UInt32Array::from_iter_values(rows.iter().map(|_| 0))),
        detail(5),
        detail(6),
        detail(7),
    ];
    let new = RecordBatch::try_new(T.schema(), new_columns).map_err(fail)?;
    let all = arrow::compute::concat_batches(&T.schema(), [&kept, &new]).map_err(fail)?;
    // Ranked by reach (highest first, posts without a figure last), ties by post id.
    let by = |name: &str, descending: bool| -> Result<SortColumn> {
        let values = all.column_by_name(name).ok_or_else(|| missing(name))?.clone();
        Ok(SortColumn { values, options: Some(SortOptions { descending, nulls_first: false }) })
    };
    let order = arrow::compute::lexsort_to_indices(&[by("reach", true)?, by("post_id", false)?], None).map_err(fail)?;
    let mut columns: Vec<ArrayRef> = all
        .columns()
        .iter()
        .map(|c| arrow::compute::take(c, &order, None))
        .collect::<std::result::Result<_, _>>()
        .map_err(fail)?;
    let rank = T.columns.iter().position(|c| c.name == "tenant_rank").ok_or_else(|| missing("tenant_rank"))?;
    columns[rank] = Arc::new(UInt32Array::from_iter_values(1..=all.num_rows() as u32));
    RecordBatch::try_new(T.schema(), columns).map_err(fail)
}

/// Engagement rate and rank by reach in the tenant.
fn ranked(df: DataFrame) -> Result<DataFrame> {
    Ok(df
        .lazy()
        .with_column(
            when(col("reach").gt(lit(0.0)))
                .then(
                    when(col("engaged_users").is_not_null()).then(col("engaged_users")).otherwise(col("engagements"))
                        / col("reach"),
                )
                .otherwise(lit(NULL).cast(DataType::Float64))
                .alias("engagement_rate"),
        )
        // Ties in reach are ranked by post id, so the ranking does not depend on the order the store returned posts.
        .sort(
            ["reach", "post_id"],
            SortMultipleOptions::default().with_order_descending_multi([true, false]).with_nulls_last(true),
        )
        .with_row_index("rank0", None)
        .with_column((col("rank0") + lit(1)).cast(DataType::UInt32).alias("tenant_rank"))
        .collect()?)
}

/// Reach and engagement by topic and by post type.
pub fn by_topic(performance: &DataFrame) -> Result<DataFrame> {
    Ok(performance
        .clone()
        .lazy()
        .group_by([col("topic"), col("post_type")])
        .agg([
            col("post_id").count().alias("posts"),
            col("reach").mean().alias("mean_reach"),
            col("engagement_rate").mean().alias("mean_engagement_rate"),
        ])
        .sort(
            ["mean_reach", "topic", "post_type"],
            SortMultipleOptions::default().with_order_descending_multi([true, false, false]),
        )
        .collect()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn post(id: &str, day: u32, fetched: i64) -> pulse_domain::Post {
        use chrono::TimeZone;
        pulse_domain::Post {
            practice: "M83001".parse().unwrap(),
            page: "1001".parse().unwrap(),
            post: format!("1001_{id}").parse().unwrap(),
            created_time: chrono::Utc.with_ymd_and_hms(2018, 3, day, 12, 0, 0).unwrap(),
            post_type: "photo".into(),
            message: format!("Flu clinic {id}"),
            permalink: format!("https://www.facebook.com/1001/posts/{id}"),
            fetched_at: chrono::DateTime::from_timestamp(fetched, 0).unwrap(),
        }
    }

    fn snapshot(
        id: &str,
        metric: pulse_domain::CanonicalMetric,
        day: u32,
        value: f64,
        fetched: i64,
    ) -> pulse_domain::PostInsightSnapshot {
        pulse_domain::PostInsightSnapshot {
            practice: "M83001".parse().unwrap(),
            page: "1001".parse().unwrap(),
            post: format!("1001_{id}").parse().unwrap(),
            metric,
            graph_metric: "post_impressions_unique",
            breakdown: "".into(),
            snapshot_day: chrono::NaiveDate::from_ymd_opt(2018, 3, day).unwrap(),
            value,
            api_version: pulse_domain::ApiVersion::new(3, 0),
            fetched_at: chrono::DateTime::from_timestamp(fetched, 0).unwrap(),
        }
    }

    /// The update equals computing every post whole: a figure fetched since replaces the old one, a figure not
    /// fetched since stays, a post new to the report takes every figure from its snapshots (one fetched before
    /// `since` too), and the ranks are redone.
    #[test]
    fn an_update_equals_the_whole_computation() {
        use pulse_domain::CanonicalMetric as M;
        let (before, since) = (100, 200);
        let posts = [post("1", 1, before), post("2", 2, before), post("3", 20, before)];
        let all = [
            snapshot("1", M::PostReach, 3, 50.0, before),
            snapshot("1", M::PostEngagedUsers, 3, 5.0, before),
            snapshot("2", M::PostReach, 3, 40.0, before),
            snapshot("2", M::PostEngagedUsers, 3, 4.0, before),
            // After the previous run: post 1's reach revised, post 3 made and snapshotted by an ingest that ran ahead.
            snapshot("1", M::PostReach, 21, 30.0, since),
            snapshot("3", M::PostReach, 19, 45.0, before),
            snapshot("3", M::PostEngagedUsers, 19, 9.0, before),
        ];
        let table = |df: &DataFrame| crate::frames::to_batch(df, &pulse_store::report::POST_PERFORMANCE).unwrap();
        let whole = |posts: &[pulse_domain::Post], snaps: &[pulse_domain::PostInsightSnapshot]| {
            table(&post_performance(&crate::frames::post_frame(posts, snaps).unwrap(), &[]).unwrap())
        };
        let old = whole(&posts[..2], &all[..4]);
        let since_at = chrono::DateTime::from_timestamp(since, 0).unwrap();
        // What the run reads: the post new to the report, and the snapshots from two days before it was made on.
        let updated = updated_performance(&old, &posts[2..], &all[4..], since_at, &[]).unwrap();
        assert_eq!(updated, whole(&posts, &all));
        let ids = updated.column_by_name("post_id").unwrap().as_any().downcast_ref::<arrow::array::StringArray>();
        let ids: Vec<&str> = ids.unwrap().iter().flatten().collect();
        assert_eq!(ids, ["1001_3", "1001_2", "1001_1"], "ranked by the new reach");
    }

    #[test]
    fn topics_follow_the_rules() {
        assert_eq!(topic("In March, 312 appointments were missed", &[]), "dna_figures");
        assert_eq!(topic("Flu vaccine clinics this Saturday", &[]), "vaccines");
        assert_eq!(topic("Watch: signs of stroke #ActFAST", &["#actfast".into()]), "campaign");
        assert_eq!(topic("Opening hours over the bank holiday", &[]), "opening_hours");
        assert_eq!(topic("Our phones and website are down", &[]), "service_notice");
        assert_eq!(topic("Hello", &[]), "other");
    }
}
