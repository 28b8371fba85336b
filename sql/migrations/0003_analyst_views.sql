-- Views for analysts pointing SQL tools at ClickHouse: one row per identity (the latest fetch), so a SUM over them
-- never counts a re-ingested value twice. Grant analysts these views with a row policy on tenant_id.

CREATE VIEW IF NOT EXISTS page_insights_latest /*ON_CLUSTER*/ AS
SELECT tenant_id, practice_code, page_id, metric, graph_metric, period, day, breakdown, value, api_version, fetched_at
FROM page_insights FINAL;

CREATE VIEW IF NOT EXISTS post_insights_latest /*ON_CLUSTER*/ AS
SELECT tenant_id, practice_code, page_id, post_id, metric, graph_metric, breakdown, snapshot_day, value, api_version, fetched_at
FROM post_insights FINAL;
