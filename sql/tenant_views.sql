-- Per-tenant analyst views, created by `pulse migrate` for every configured tenant (`{tenant}` is a validated
-- tenant id: lowercase letters, digits, `-` and `_`). Each shows one tenant's rows, one row per identity (the
-- latest fetch), so a SUM over it never counts a re-ingested value twice. Give an analyst SELECT on their tenant's
-- views only (current ClickHouse: GRANT SELECT ON pulse.`tenant_stoke_page_insights` TO analyst_stoke), never on
-- the tables underneath: the tables hold every tenant.

CREATE VIEW IF NOT EXISTS `tenant_{tenant}_page_insights` /*ON_CLUSTER*/ AS
SELECT practice_code, page_id, metric, graph_metric, period, day, breakdown, value, api_version, fetched_at
FROM page_insights FINAL
WHERE tenant_id = '{tenant}';

CREATE VIEW IF NOT EXISTS `tenant_{tenant}_post_insights` /*ON_CLUSTER*/ AS
SELECT practice_code, page_id, post_id, metric, graph_metric, breakdown, snapshot_day, value, api_version, fetched_at
FROM post_insights FINAL
WHERE tenant_id = '{tenant}';
