#!/usr/bin/env python3
"""DuckDB computing the same aggregations as the reach, age-band and data-quality pipelines, on the same Parquet
files, for the pipelines benchmark. Prints one JSON line (seconds, rows scanned, peak memory of this process).

    python3 benches/pipelines_duckdb.py <lake dir> <from> <to>
"""
import json
import resource
import sys
import time

import duckdb

root, start, end = sys.argv[1], sys.argv[2], sys.argv[3]
wanted = [("page_reach", "day"), ("page_reach", "week"), ("page_engaged_users", "week"), ("page_views", "day"),
          ("page_engagements", "day"), ("page_followers", "day"), ("page_engaged_by_age_gender", "days_28"),
          ("page_reach_by_age_gender", "days_28"), ("page_followers_by_age_gender", "day")]
pairs = " OR ".join(f"(metric = '{m}' AND period = '{p}')" for m, p in wanted)
con = duckdb.connect()
con.execute("SET threads = 2")
t0 = time.time()
con.execute(f"""
CREATE TEMP VIEW f AS
SELECT tenant, practice_code, page_id, metric, period, day, breakdown, value,
       CAST(day - DATE '1970-01-01' AS INTEGER) AS n
FROM read_parquet('{root}/page_insights/*/*/*.parquet', hive_partitioning = true)
WHERE day BETWEEN DATE '{start}' AND DATE '{end}' AND ({pairs})
""")
rows = con.execute("SELECT count(*) FROM f").fetchone()[0]
con.execute(f"""
CREATE TEMP TABLE weekly AS
SELECT tenant, practice_code, page_id, n + 6 - ((n + 3) % 7) AS week_end,
       SUM(value) FILTER (WHERE metric = 'page_views' AND period = 'day') AS views,
       SUM(value) FILTER (WHERE metric = 'page_engagements' AND period = 'day') AS engagements,
       COUNT(*) FILTER (WHERE metric = 'page_reach' AND period = 'day') AS days_with_data,
       FIRST(value) FILTER (WHERE metric = 'page_reach' AND period = 'week' AND n = n + 6 - ((n + 3) % 7)) AS reach,
       FIRST(value) FILTER (WHERE metric = 'page_engaged_users' AND period = 'week' AND n = n + 6 - ((n + 3) % 7)) AS engaged_users,
       FIRST(value) FILTER (WHERE metric = 'page_followers' AND period = 'day' AND n = n + 6 - ((n + 3) % 7)) AS followers
FROM f WHERE breakdown = ''
GROUP BY ALL
HAVING week_end BETWEEN CAST(DATE '{start}' - DATE '1970-01-01' AS INTEGER) + 6 AND CAST(DATE '{end}' - DATE '1970-01-01' AS INTEGER)
""")
out = 0
out += con.execute("""
SELECT count(*) FROM (
  SELECT w.*, reach / views AS rate,
         reach / lag(reach) OVER (PARTITION BY page_id ORDER BY week_end) - 1 AS change,
         0.6745 * (reach / followers - median(reach / followers) OVER (PARTITION BY tenant, week_end))
           / nullif(mad(reach / followers) OVER (PARTITION BY tenant, week_end), 0) AS score
  FROM weekly w)""").fetchone()[0]
out += con.execute("""
SELECT count(*) FROM (SELECT tenant, week_end, count(*), sum(reach), sum(engaged_users), sum(views), sum(engagements),
                             sum(followers), median(reach) FROM weekly GROUP BY ALL)""").fetchone()[0]
out += con.execute("""
SELECT count(*) FROM (
  SELECT tenant, practice_code, split_part(breakdown, '.', 2) AS band, split_part(breakdown, '.', 1) AS sex, sum(value)
  FROM (SELECT *, max(n) OVER (PARTITION BY tenant, page_id) AS last_n FROM f
        WHERE metric = 'page_engaged_by_age_gender' AND period = 'days_28' AND breakdown <> '')
  WHERE n = last_n GROUP BY ALL)""").fetchone()[0]
out += con.execute("""
SELECT count(*) FROM (
  SELECT d.tenant, d.page_id, max(d.n) - min(d.n) + 1 - count(*) AS missing,
         count(*) FILTER (WHERE v.value < d.value) AS unique_above_total
  FROM (SELECT * FROM f WHERE metric = 'page_reach' AND period = 'day') d
  LEFT JOIN (SELECT * FROM f WHERE metric = 'page_views' AND period = 'day') v USING (tenant, page_id, n)
  GROUP BY ALL)""").fetchone()[0]
secs = time.time() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"rows_scanned": rows, "report_rows": out, "seconds": round(secs, 2), "peak_rss_mib": round(peak)}))
