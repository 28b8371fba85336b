-- The days of one tenant's page insight facts fetched at or after a time: what an incremental pipelines run
-- recomputes. Rows a later fetch superseded count too (a revision changes its day either way).
-- params: tenant_id, fetched_since (unix seconds)
-- example: 'north-staffs', 1527811200
SELECT DISTINCT toString(day) AS day
FROM page_insights
WHERE tenant_id = ? AND toUInt32(fetched_at) >= ?
ORDER BY day
