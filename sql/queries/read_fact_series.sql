-- Page insight facts of one tenant as series: one row per practice, page, metric, period and breakdown, its days and
-- values as arrays, the latest version of each identity. The same facts and filters as read_page_insights.sql; the
-- server deduplicates and groups them where the rows are, so a row crosses per series (a few thousand for a tenant's
-- year of 100 pages) instead of per value (about 630,000), and the client decodes no strings per value: a full jobs run
-- of 8 national tenants went from 29.9 s to 11.3 s (benches/results/clickhouse-jobs.md). The pipelines read through
-- this.
-- params: tenant_id, metrics (tuple), periods (tuple), from_day, to_day, any_page_filter (0/1), pages (tuple), sundays_only (0/1), or_from_day, any_practice_filter (0/1), practices (tuple)
-- example: 'north-staffs', ('page_reach', 'page_views'), ('day', 'week'), '2018-01-01', '2018-03-31', 1, ('100000000001'), 1, '2018-03-25', 0, ('')
SELECT latest_practice, page_id, metric, period, breakdown,
       groupArray(day) AS series_days, groupArray(latest_value) AS series_values
FROM (
    SELECT argMax(practice_code, version) AS latest_practice, page_id, metric, period, day, breakdown,
           argMax(value, version) AS latest_value
    FROM page_insights
    WHERE tenant_id = ?
      AND metric IN ?
      AND period IN ?
      AND day >= toDate(?) AND day <= toDate(?)
      AND (? = 0 OR page_id IN ?)
      AND (? = 0 OR toDayOfWeek(day) = 7 OR day >= toDate(?))
    GROUP BY page_id, metric, period, day, breakdown
    HAVING (? = 0 OR latest_practice IN ?)
)
GROUP BY latest_practice, page_id, metric, period, breakdown
