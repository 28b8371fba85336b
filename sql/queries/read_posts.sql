-- Posts of one tenant created in a day range (Pacific days of created_time are approximated by UTC here and
-- filtered exactly by the caller). The range is on created_time itself, not toDate(created_time), so the server skips
-- the months outside it (18.16 does not prune partitions through toDate): a tenant's last two weeks of posts on 18.16
-- by curl, 0.06 s through toDate, 0.01 s on the column.
-- params: tenant_id, from_day, to_day, any_practice_filter (0/1), practices (tuple)
-- example: 'north-staffs', '2018-01-01', '2018-03-31', 0, ('')
SELECT practice_code, page_id, post_id, created_time, post_type, message, permalink, version
FROM posts FINAL
WHERE tenant_id = ?
  AND created_time >= toDateTime(toDate(?)) AND created_time < toDateTime(toDate(?) + 1)
  AND (? = 0 OR practice_code IN ?)
ORDER BY page_id, post_id
