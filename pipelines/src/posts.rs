//! Post performance: each post's latest lifetime figures, engagement rate, rule-based topic, rank in the tenant.

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
/// which must hold every snapshot dated on or after the earliest one fetched since; then ranked again. A
/// (post, metric) with no snapshot fetched since keeps its figure: its snapshots are the ones the previous run read.
pub fn updated_performance(
    old: &arrow::record_batch::RecordBatch,
    posts: &[pulse_domain::Post],
    snapshots: &[pulse_domain::PostInsightSnapshot],
    since: chrono::DateTime<chrono::Utc>,
    campaign_tags: &[String],
) -> Result<DataFrame> {
    use std::collections::HashMap;

    use arrow::array::{Array, Date32Array, Float64Array, StringArray};
    use pulse_domain::CanonicalMetric as M;

    const FIGURES: [(&str, M); 5] = [
        ("reach", M::PostReach),
        ("views", M::PostViews),
        ("engagements", M::PostEngagements),
        ("engaged_users", M::PostEngagedUsers),
        ("video_views", M::PostVideoViews),
    ];
    const TEXTS: [&str; 8] =
        ["practice_code", "page_id", "post_id", "post_type", "topic", "posted_at", "excerpt", "permalink"];
    let missing = |c: &str| crate::PipelineError::Input(format!("report_post_performance: no `{c}` column"));
    let text = |c: &str| -> Result<Vec<String>> {
        let a =
            old.column_by_name(c).and_then(|a| a.as_any().downcast_ref::<StringArray>()).ok_or_else(|| missing(c))?;
        Ok(a.iter().map(|v| v.unwrap_or("").to_owned()).collect())
    };
    let mut texts: Vec<Vec<String>> = TEXTS.iter().map(|c| text(c)).collect::<Result<_>>()?;
    let created = old.column_by_name("created").and_then(|a| a.as_any().downcast_ref::<Date32Array>());
    let mut created: Vec<i32> = created.ok_or_else(|| missing("created"))?.values().to_vec();
    let mut figures: Vec<Vec<Option<f64>>> = FIGURES
        .iter()
        .map(|(c, _)| {
            let a = old.column_by_name(c).and_then(|a| a.as_any().downcast_ref::<Float64Array>());
            Ok(a.ok_or_else(|| missing(c))?.iter().collect())
        })
        .collect::<Result<_>>()?;
    let mut row: HashMap<String, usize> = texts[2].iter().enumerate().map(|(i, p)| (p.clone(), i)).collect();
    for p in posts {
        let i = *row.entry(p.post.as_str().to_owned()).or_insert_with(|| {
            texts.iter_mut().for_each(|t| t.push(String::new()));
            created.push(0);
            figures.iter_mut().for_each(|f| f.push(None));
            created.len() - 1
        });
        let details = [
            p.practice.as_str(),
            p.page.as_str(),
            p.post.as_str(),
            p.post_type.as_str(),
            topic(&p.message, campaign_tags),
            &p.created_time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            &pulse_domain::text::excerpt(&p.message, pulse_domain::text::EXCERPT_CHARS),
            crate::frames::facebook_permalink(&p.permalink),
        ];
        for (t, v) in texts.iter_mut().zip(details) {
            t[i] = v.to_owned();
        }
        created[i] = pulse_domain::day_number(p.created_time.date_naive());
    }
    let latest = crate::frames::latest_lifetime(snapshots);
    for s in snapshots.iter().filter(|s| s.fetched_at >= since && s.breakdown.is_empty()) {
        let (Some(i), Some(f)) = (row.get(s.post.as_str()), FIGURES.iter().position(|(_, m)| *m == s.metric)) else {
            continue;
        };
        figures[f][*i] = latest.get(&(s.post.as_str(), s.metric)).copied();
    }
    let height = created.len();
    let mut columns: Vec<Column> =
        TEXTS.iter().zip(texts).map(|(name, values)| Column::new((*name).into(), values)).collect();
    columns.push(Column::new("created".into(), created).cast(&DataType::Date)?);
    columns.extend(FIGURES.iter().zip(figures).map(|((name, _), values)| Column::new((*name).into(), values)));
    ranked(DataFrame::new(height, columns)?)
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
