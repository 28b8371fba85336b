-- Page insight facts of one tenant: the latest version of each identity, filtered on the sort key (the practice on the
-- latest version, below). The latest version is picked by GROUP BY on the identity with argMax(.., version), not FINAL,
-- which is slower on 18.16: a Sundays-only read of a year of age-band breakdowns (one tenant, 100 pages) took 1.67 s
-- with FINAL and 0.59 s grouped (the same 43.6 MB of RowBinary out; benches/results/clickhouse-jobs.md). The pipelines
-- read through read_fact_series.sql. The practice filter is on the latest version's practice (HAVING), as FINAL applied
-- it. Not sorted here (18.16 cannot skip a sort by reading in key order): the store sorts the rows it decoded, cheaper
-- than the server. Rows of one identity with equal versions come from one fetch; which of them argMax keeps is not
-- defined (FINAL kept the last inserted).
-- params: tenant_id, metrics (tuple), periods (tuple), from_day, to_day, any_page_filter (0/1), pages (tuple), sundays_only (0/1), or_from_day, any_practice_filter (0/1), practices (tuple)
-- example: 'north-staffs', ('page_reach', 'page_views'), ('day', 'week'), '2018-01-01', '2018-03-31', 1, ('100000000001'), 1, '2018-03-25', 0, ('')
SELECT argMax(practice_code, version) AS latest_practice, page_id, metric,
       argMax(graph_metric, version) AS latest_graph_metric, period, day, breakdown,
       argMax(value, version) AS latest_value, argMax(api_version, version) AS latest_api_version,
       max(version) AS latest_version
FROM page_insights
WHERE tenant_id = ?
  AND metric IN ?
  AND period IN ?
  AND day >= toDate(?) AND day <= toDate(?)
  AND (? = 0 OR page_id IN ?)
  AND (? = 0 OR toDayOfWeek(day) = 7 OR day >= toDate(?))
GROUP BY page_id, metric, period, day, breakdown
HAVING (? = 0 OR latest_practice IN ?)
