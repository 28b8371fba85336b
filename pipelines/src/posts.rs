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
