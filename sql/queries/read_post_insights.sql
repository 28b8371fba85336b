-- Post insight snapshots of one tenant in a snapshot-day range, latest version of each identity.
-- params: tenant_id, from_day, to_day, any_practice_filter (0/1), practices (tuple)
-- example: 'north-staffs', '2018-01-01', '2018-03-31', 1, ('M83001', 'M83002')
SELECT practice_code, page_id, post_id, metric, graph_metric, breakdown, snapshot_day, value, api_version, version
FROM post_insights FINAL
WHERE tenant_id = ?
  AND snapshot_day >= toDate(?) AND snapshot_day <= toDate(?)
  AND (? = 0 OR practice_code IN ?)
ORDER BY metric, snapshot_day, post_id, breakdown
