-- The snapshot days of one tenant's post insight snapshots fetched at or after a time: how far back an incremental
-- pipelines run reads snapshots to update post performance. Rows a later fetch superseded count too.
-- params: tenant_id, fetched_since (unix seconds)
-- example: 'north-staffs', 1527811200
SELECT DISTINCT toString(snapshot_day) AS day
FROM post_insights
WHERE tenant_id = ? AND toUInt32(fetched_at) >= ?
ORDER BY day
