-- One row per pipelines run and report variant: the range it computed, when, and what it wrote. Written as a report
-- slice after the run's tables, so readers can say which run and range they are showing.
-- Columns mirror REPORT_RUNS in crates/pulse-store/src/report.rs (the conformance suite checks they agree).

CREATE TABLE IF NOT EXISTS report_runs /*ON_CLUSTER*/
(
    tenant_id String,
    version UInt64,
    run_id String,
    variant String,
    range_from Date,
    range_to Date,
    computed_at String,
    facts Int64,
    rows Int64
)
ENGINE = MergeTree()
ORDER BY (tenant_id, version, run_id);

-- The views of migration 3 showed every tenant's rows to whoever could select from them, with nothing on the server
-- enforcing a row policy. They are replaced by per-tenant views (sql/tenant_views.sql), created by `pulse migrate`
-- for each configured tenant.
DROP TABLE IF EXISTS page_insights_latest /*ON_CLUSTER*/;

DROP TABLE IF EXISTS post_insights_latest /*ON_CLUSTER*/;
