-- Practice Pulse core tables: the facts the ingester writes.
--
-- Every table is ReplacingMergeTree(version) with the record's identity as its sort key, tenant_id first, and is read
-- with FINAL: writing the same identity twice keeps one row (the highest version, i.e. the latest fetch), so
-- re-ingesting a window never doubles a figure. `day` columns are US-Pacific days (the API's end_time minus one day).
-- `/*ON_CLUSTER*/` is where a cluster deployment renders `ON CLUSTER <name>`; on one server it is a comment.

CREATE TABLE IF NOT EXISTS page_insights /*ON_CLUSTER*/
(
    tenant_id String,
    practice_code String,
    page_id String,
    metric String,
    graph_metric String,
    period String,
    day Date,
    breakdown String,
    value Float64,
    api_version String,
    fetched_at DateTime,
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(day)
ORDER BY (tenant_id, metric, period, day, page_id, breakdown);

CREATE TABLE IF NOT EXISTS posts /*ON_CLUSTER*/
(
    tenant_id String,
    practice_code String,
    page_id String,
    post_id String,
    created_time DateTime,
    post_type String,
    message String,
    permalink String,
    fetched_at DateTime,
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(created_time)
ORDER BY (tenant_id, page_id, post_id);

CREATE TABLE IF NOT EXISTS post_insights /*ON_CLUSTER*/
(
    tenant_id String,
    practice_code String,
    page_id String,
    post_id String,
    metric String,
    graph_metric String,
    breakdown String,
    snapshot_day Date,
    value Float64,
    api_version String,
    fetched_at DateTime,
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(snapshot_day)
ORDER BY (tenant_id, metric, snapshot_day, post_id, breakdown);

CREATE TABLE IF NOT EXISTS ingest_checkpoints /*ON_CLUSTER*/
(
    tenant_id String,
    practice_code String,
    page_id String,
    stream String,
    through_day Date,
    updated_at DateTime,
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (tenant_id, page_id, stream);

CREATE TABLE IF NOT EXISTS ingest_runs /*ON_CLUSTER*/
(
    tenant_id String,
    run_id String,
    practice_code String,
    started_at DateTime,
    finished_at DateTime,
    requests UInt64,
    retries UInt64,
    throttled_ms UInt64,
    rows_written UInt64,
    errors UInt64,
    pages_needing_reauth UInt32,
    status String,
    message String,
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (tenant_id, run_id, practice_code);
