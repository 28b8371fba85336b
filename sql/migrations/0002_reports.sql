-- Report tables written by the pipelines. A tenant's slice is replaced as a whole: rows are inserted under a new
-- version, then report_slices points the tenant at that version; readers follow the pointer, so they see the old
-- slice or the new one, never a mix. Superseded versions are deleted afterwards.

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

CREATE TABLE IF NOT EXISTS report_reach_weekly /*ON_CLUSTER*/
(
    tenant_id String,
    version UInt64,
    practice_code String,
    page_id String,
    week_ending Date,
    reach Nullable(Float64),
    views Nullable(Float64),
    engagements Nullable(Float64),
    followers Nullable(Float64),
    engagement_rate Nullable(Float64),
    days_with_data UInt32
)
ENGINE = MergeTree()
PARTITION BY toYYYYMM(week_ending)
ORDER BY (tenant_id, version, practice_code, page_id, week_ending);
