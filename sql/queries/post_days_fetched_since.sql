-- The created days (UTC) of one tenant's posts fetched at or after a time: how far back an incremental pipelines
-- run reads posts to update post performance. Rows a later fetch superseded count too.
-- params: tenant_id, fetched_since (unix seconds)
-- example: 'north-staffs', 1527811200
SELECT DISTINCT toString(toDate(created_time)) AS day
FROM posts
WHERE tenant_id = ? AND toUInt32(fetched_at) >= ?
ORDER BY day
