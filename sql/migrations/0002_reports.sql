-- Report tables written by the pipelines. A tenant's slice is replaced as a whole: rows are inserted under a new
-- version, then report_slices points the tenant at that version; readers follow the pointer, so they see the old
-- slice or the new one, never a mix. Superseded versions are deleted afterwards. Columns mirror
-- crates/pulse-store/src/report.rs (the conformance suite checks they agree).

CREATE TABLE IF NOT EXISTS report_slices /*ON_CLUSTER*/
(
    tenant_id String,
    report String,
    current_version UInt64,
    rows UInt64,
    written_at DateTime,
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (tenant_id, report);

-- Weekly reach per practice page from the API's own 7-day unique counts, with change and outliers (Pacific-time weeks ending on Sundays).
CREATE TABLE IF NOT EXISTS report_reach_weekly /*ON_CLUSTER*/
(
    tenant_id String,
    version UInt64,
    practice_code String,
    page_id String,
    week_ending Date,
    reach Nullable(Float64),
    engaged_users Nullable(Float64),
    views Nullable(Float64),
    engagements Nullable(Float64),
    followers Nullable(Float64),
    follower_growth Nullable(Float64),
    engagement_rate Nullable(Float64),
    reach_change Nullable(Float64),
    outlier_score Nullable(Float64),
    outlier_reason String,
    days_with_data UInt32
)
ENGINE = MergeTree()
ORDER BY (tenant_id, version, practice_code, page_id, week_ending);

-- Tenant roll-up per week. Sums of page uniques are gross reach: people who follow several pages count more than once.
CREATE TABLE IF NOT EXISTS report_reach_tenant_weekly /*ON_CLUSTER*/
(
    tenant_id String,
    version UInt64,
    week_ending Date,
    pages UInt32,
    gross_reach Nullable(Float64),
    gross_engaged_users Nullable(Float64),
    views Nullable(Float64),
    engagements Nullable(Float64),
    followers Nullable(Float64),
    median_page_reach Nullable(Float64)
)
ENGINE = MergeTree()
ORDER BY (tenant_id, version, week_ending);

-- Who engages, by age band and gender, per practice and per tenant, with penetration into registered patients.
CREATE TABLE IF NOT EXISTS report_age_bands /*ON_CLUSTER*/
(
    tenant_id String,
    version UInt64,
    level String,
    practice_code String,
    source String,
    window_end Date,
    age_band String,
    female Nullable(Float64),
    male Nullable(Float64),
    unknown Nullable(Float64),
    people Nullable(Float64),
    share Nullable(Float64),
    registered Nullable(Float64),
    penetration Nullable(Float64),
    note String
)
ENGINE = MergeTree()
ORDER BY (tenant_id, version, level, practice_code, source);

-- What a campaign achieved: its posts' own figures, and the incremental effect on the pages against a counterfactual, with a 95% interval.
CREATE TABLE IF NOT EXISTS report_campaign_uplift /*ON_CLUSTER*/
(
    tenant_id String,
    version UInt64,
    campaign String,
    practice_code String,
    metric String,
    window_from Date,
    window_to Date,
    posts UInt32,
    post_lifetime Nullable(Float64),
    observed Nullable(Float64),
    counterfactual Nullable(Float64),
    effect Nullable(Float64),
    effect_lo Nullable(Float64),
    effect_hi Nullable(Float64),
    lift_pct Nullable(Float64),
    p_value Nullable(Float64),
    method String,
    note String
)
ENGINE = MergeTree()
ORDER BY (tenant_id, version, campaign, practice_code, metric);

-- Observed and counterfactual daily series around each campaign, for plotting.
CREATE TABLE IF NOT EXISTS report_campaign_series /*ON_CLUSTER*/
(
    tenant_id String,
    version UInt64,
    campaign String,
    practice_code String,
    metric String,
    day Date,
    observed Nullable(Float64),
    counterfactual Nullable(Float64)
)
ENGINE = MergeTree()
ORDER BY (tenant_id, version, campaign, practice_code, metric);

-- Posts ranked by reach, with engagement rate, type and topic.
CREATE TABLE IF NOT EXISTS report_post_performance /*ON_CLUSTER*/
(
    tenant_id String,
    version UInt64,
    practice_code String,
    page_id String,
    post_id String,
    created Date,
    post_type String,
    topic String,
    reach Nullable(Float64),
    views Nullable(Float64),
    engagements Nullable(Float64),
    engaged_users Nullable(Float64),
    video_views Nullable(Float64),
    engagement_rate Nullable(Float64),
    tenant_rank UInt32
)
ENGINE = MergeTree()
ORDER BY (tenant_id, version, practice_code, page_id, post_id);

-- Problems found in the stored data: gaps, stale pages, pages needing re-authorisation, impossible values.
CREATE TABLE IF NOT EXISTS report_data_quality /*ON_CLUSTER*/
(
    tenant_id String,
    version UInt64,
    practice_code String,
    page_id String,
    check_name String,
    day_from Date,
    day_to Date,
    count UInt32,
    detail String
)
ENGINE = MergeTree()
ORDER BY (tenant_id, version, practice_code, page_id, check_name);
