-- Posts of one tenant created in a day range (Pacific days of created_time are approximated by UTC here and
-- filtered exactly by the caller).
-- params: tenant_id, from_day, to_day, any_practice_filter (0/1), practices (tuple)
-- example: 'north-staffs', '2018-01-01', '2018-03-31', 0, ('')
SELECT practice_code, page_id, post_id, created_time, post_type, message, permalink, version
FROM posts FINAL
WHERE tenant_id = ?
  AND toDate(created_time) >= toDate(?) AND toDate(created_time) <= toDate(?)
  AND (? = 0 OR practice_code IN ?)
ORDER BY page_id, post_id
