#!/usr/bin/env python3
"""DuckDB computing the same aggregations as the pipelines job (reach, age bands, data quality, post performance and
campaign uplift with its placebo-in-time interval), on the same Parquet files, for the pipelines benchmark. Prints one
JSON line (seconds, rows scanned, peak memory of this process).

    python3 benches/pipelines_duckdb.py <lake dir> <from> <to> [--campaign 'name|#tag|start|days|share']...
"""
import json
import resource
import sys
import time

import duckdb

args, campaigns = [], []
it = iter(sys.argv[1:])
for a in it:
    if a == "--campaign":
        name, tag, cstart, days, _share = next(it).split("|")
        campaigns.append((name, tag, cstart, int(days)))
    else:
        args.append(a)
root, start, end = args
wanted = [("page_reach", "day"), ("page_reach", "week"), ("page_engaged_users", "week"), ("page_views", "day"),
          ("page_engagements", "day"), ("page_followers", "day"), ("page_engaged_users", "day"),
          ("page_video_views", "day"), ("page_engaged_by_age_gender", "days_28"),
          ("page_reach_by_age_gender", "days_28"), ("page_followers_by_age_gender", "day")]
pairs = " OR ".join(f"(metric = '{m}' AND period = '{p}')" for m, p in wanted)
# Post performance: each post's latest lifetime figures, its rule-based topic and its rank in the tenant by reach.
POSTS = """
SELECT count(*) FROM (
  WITH latest AS (
    SELECT tenant, post_id, metric, arg_max(value, snapshot_day) AS value
    FROM read_parquet('{root}/post_insights/*/*/*.parquet', hive_partitioning = true) WHERE breakdown = ''
    GROUP BY ALL),
  wide AS (
    SELECT p.tenant, p.post_id, p.page_id, p.post_type, lower(p.message) AS m,
           max(value) FILTER (WHERE metric = 'post_reach') AS reach,
           max(value) FILTER (WHERE metric = 'post_engaged_users') AS engaged_users,
           max(value) FILTER (WHERE metric = 'post_engagements') AS engagements
    FROM read_parquet('{root}/posts/*/*/*.parquet', hive_partitioning = true) p
    LEFT JOIN latest l USING (tenant, post_id) GROUP BY ALL)
  SELECT *,
    CASE WHEN {campaign_tags} THEN 'campaign'
         WHEN m LIKE '%missed%' OR m LIKE '%did not attend%' THEN 'dna_figures'
         WHEN m LIKE '%vaccin%' OR m LIKE '%flu%' OR m LIKE '%jab%' THEN 'vaccines'
         WHEN m LIKE '%opening hours%' OR m LIKE '%bank holiday%' THEN 'opening_hours'
         WHEN m LIKE '%ppg%' OR m LIKE '%patient participation%' THEN 'patient_group'
         WHEN m LIKE '%self-care%' OR m LIKE '%self care%' THEN 'self_care' ELSE 'other' END AS topic,
    CASE WHEN reach > 0 THEN coalesce(engaged_users, engagements) / reach END AS engagement_rate,
    row_number() OVER (PARTITION BY tenant ORDER BY reach DESC NULLS LAST, post_id) AS tenant_rank
  FROM wide)
"""

# Campaign uplift, as pipelines/src/campaign.rs computes it: per participating page, a ratio to the controls' daily
# mean fitted on the 56 days before the window with the page's weekday pattern (or the page's own weekday means with
# too few controls); placebo windows on the same weekday in up to 40 weeks before, clear of the other campaigns; the
# bias-corrected estimate, the conformal interval, the p-value; per page and day-by-day for the chart.
UPLIFT = ["""
CREATE TEMP TABLE cs AS
SELECT tenant, page_id, practice_code, metric, n, value FROM f
WHERE period = 'day' AND breakdown = '' AND metric IN ('page_views', 'page_reach', 'page_engagements', 'page_video_views')
""", """
CREATE TEMP TABLE matched AS
SELECT p.tenant, c.cname, p.page_id, p.post_id
FROM read_parquet('""" + "{root}" + """/posts/*/*/*.parquet', hive_partitioning = true) p JOIN camp c
  ON p.post_type = 'video' AND contains(lower(p.message), lower(c.tag))
 AND CAST(CAST(p.created_time AS DATE) - DATE '1970-01-01' AS INTEGER) BETWEEN c.s - 1 AND c.s + c.days - 1
""", """
CREATE TEMP TABLE treated AS SELECT DISTINCT tenant, cname, page_id FROM matched
""", """
CREATE TEMP TABLE controls AS
SELECT d.tenant, c.cname, d.page_id FROM (SELECT DISTINCT tenant, page_id FROM cs) d CROSS JOIN camp c
WHERE NOT EXISTS (SELECT 1 FROM treated t WHERE t.tenant = d.tenant AND t.cname = c.cname AND t.page_id = d.page_id)
""", """
CREATE TEMP TABLE mode AS
SELECT t.tenant, t.cname, coalesce(x.n, 0) >= greatest(t.n, 10) AS ctl
FROM (SELECT tenant, cname, count(*) AS n FROM treated GROUP BY ALL) t
LEFT JOIN (SELECT tenant, cname, count(*) AS n FROM controls GROUP BY ALL) x USING (tenant, cname)
""", """
CREATE TEMP TABLE cmean AS
SELECT cs.tenant, x.cname, cs.metric, cs.n, avg(cs.value) AS cm
FROM cs JOIN controls x USING (tenant, page_id) GROUP BY ALL
""", """
CREATE TEMP TABLE windows AS
WITH first AS (SELECT t.tenant, t.cname, cs.metric, min(cs.n) AS first FROM cs JOIN treated t USING (tenant, page_id) GROUP BY ALL)
SELECT f.tenant, f.cname, f.metric, c.s, c.days, k, c.s - 7 * k AS ws
FROM first f JOIN camp c USING (cname), range(0, 41) r(k)
WHERE c.s - f.first >= 56 AND (k = 0 OR (
      c.s - 7 * k >= greatest(f.first, c.s - 280) AND c.s - 7 * k - 56 >= f.first AND c.s - 7 * k + c.days - 1 < c.s
  AND NOT EXISTS (SELECT 1 FROM camp x WHERE x.cname <> c.cname
                  AND NOT (c.s - 7 * k + c.days - 1 < x.s OR c.s - 7 * k - 56 > x.s + x.days - 1 + 28))))
""", """
CREATE TEMP TABLE fit AS
WITH rows AS (
  SELECT w.tenant, w.cname, w.metric, w.k, w.ws, t.page_id, v.n, (v.n + 3) % 7 AS wd, v.value AS y, m.cm
  FROM windows w JOIN treated t USING (tenant, cname)
  JOIN cs v ON v.tenant = w.tenant AND v.page_id = t.page_id AND v.metric = w.metric AND v.n BETWEEN w.ws - 56 AND w.ws - 1
  LEFT JOIN cmean m ON m.tenant = w.tenant AND m.cname = w.cname AND m.metric = w.metric AND m.n = v.n),
page AS (
  SELECT tenant, cname, metric, k, page_id, count(*) AS days, avg(y) AS overall,
         sum(y) FILTER (WHERE cm IS NOT NULL) / nullif(sum(cm), 0) AS scale
  FROM rows GROUP BY ALL HAVING count(*) >= 28),
wday AS (
  SELECT r.tenant, r.cname, r.metric, r.k, r.page_id, r.wd, avg(r.y) AS own,
         sum(r.y) FILTER (WHERE r.cm IS NOT NULL) AS num, sum(r.cm) AS den
  FROM rows r GROUP BY ALL)
SELECT p.tenant, p.cname, p.metric, p.k, p.page_id, p.scale, d.wd,
       coalesce(d.own, p.overall) AS own,
       CASE WHEN p.scale * d.den > 0 THEN d.num / (p.scale * d.den) ELSE 1 END AS factor
FROM page p JOIN range(0, 7) w(wd) ON true
LEFT JOIN wday d ON d.tenant = p.tenant AND d.cname = p.cname AND d.metric = p.metric AND d.k = p.k
  AND d.page_id = p.page_id AND d.wd = w.wd
""", """
CREATE TEMP TABLE effects AS
WITH days AS (
  SELECT w.tenant, w.cname, w.metric, w.k, w.ws, w.days, f.page_id, w.ws + i AS n, f.scale, f.factor, f.own, md.ctl
  FROM windows w JOIN mode md USING (tenant, cname) JOIN range(0, 400) r(i) ON i < w.days
  JOIN fit f ON f.tenant = w.tenant AND f.cname = w.cname AND f.metric = w.metric AND f.k = w.k AND f.wd = (w.ws + i + 3) % 7
  WHERE NOT md.ctl OR f.scale IS NOT NULL)
SELECT d.tenant, d.cname, d.metric, d.k, d.page_id, sum(v.value) AS o,
       sum(CASE WHEN d.ctl THEN d.scale * m.cm * d.factor ELSE d.own END) AS c
FROM days d
LEFT JOIN cs v ON v.tenant = d.tenant AND v.page_id = d.page_id AND v.metric = d.metric AND v.n = d.n
LEFT JOIN cmean m ON m.tenant = d.tenant AND m.cname = d.cname AND m.metric = d.metric AND m.n = d.n
GROUP BY ALL
HAVING count(v.value) = any_value(d.days) AND (NOT any_value(d.ctl) OR count(m.cm) = any_value(d.days))
""", """
CREATE TEMP TABLE placebo AS
WITH actual AS (SELECT tenant, cname, metric, count(*) AS pages FROM effects WHERE k = 0 GROUP BY ALL),
win AS (SELECT e.tenant, e.cname, e.metric, e.k, count(*) AS pages, sum(o - c) AS err FROM effects e WHERE k > 0 GROUP BY ALL)
SELECT w.* FROM win w JOIN actual a USING (tenant, cname, metric) WHERE w.pages = a.pages
""", """
CREATE TEMP TABLE uplift AS
WITH total AS (SELECT tenant, cname, metric, sum(o) AS o, sum(c) AS c, sum(o) - sum(c) AS raw FROM effects WHERE k = 0 GROUP BY ALL),
errs AS (SELECT tenant, cname, metric, list_sort(list(err)) AS e, count(*) AS m, median(err) AS bias FROM placebo GROUP BY ALL),
pv AS (SELECT t.tenant, t.cname, t.metric, count(*) FILTER (WHERE abs(p.err - e.bias) >= abs(t.raw - e.bias)) AS beyond
       FROM total t JOIN errs e USING (tenant, cname, metric) JOIN placebo p USING (tenant, cname, metric) GROUP BY ALL),
kk AS (SELECT *, least(greatest(floor((m + 1) * 0.025 + 1e-9)::INTEGER, 1), m) AS kq FROM errs)
SELECT t.tenant, t.cname, 'ALL' AS page_id, t.metric, t.o AS observed,
       CASE WHEN k.m >= 19 THEN t.c + k.bias ELSE t.c END AS counterfactual,
       CASE WHEN k.m >= 19 THEN t.raw - k.bias ELSE t.raw END AS effect,
       CASE WHEN k.m >= 19 THEN t.raw - k.e[k.m - k.kq + 1] END AS lo,
       CASE WHEN k.m >= 19 THEN t.raw - k.e[k.kq] END AS hi,
       CASE WHEN k.m >= 19 THEN 1 - 2.0 * k.kq / (k.m + 1) END AS level,
       CASE WHEN k.m >= 19 THEN (1 + pv.beyond) / (k.m + 1) END AS p_value,
       (SELECT sum(l.value) FROM matched mt JOIN (
          SELECT tenant, post_id, metric, arg_max(value, snapshot_day) AS value
          FROM read_parquet('""" + "{root}" + """/post_insights/*/*/*.parquet', hive_partitioning = true)
          WHERE breakdown = '' GROUP BY ALL) l USING (tenant, post_id)
        WHERE mt.tenant = t.tenant AND mt.cname = t.cname AND l.metric = replace(t.metric, 'page_', 'post_')) AS post_lifetime
FROM total t LEFT JOIN kk k USING (tenant, cname, metric) LEFT JOIN pv USING (tenant, cname, metric)
UNION ALL
SELECT a.tenant, a.cname, a.page_id, a.metric, a.o, a.c, a.o - a.c,
       CASE WHEN pe.m >= 19 THEN a.o - a.c - pe.e[pe.m - pe.kq + 1] END,
       CASE WHEN pe.m >= 19 THEN a.o - a.c - pe.e[pe.kq] END,
       CASE WHEN pe.m >= 19 THEN 1 - 2.0 * pe.kq / (pe.m + 1) END, NULL, NULL
FROM effects a LEFT JOIN (
  SELECT e.tenant, e.cname, e.metric, e.page_id, list_sort(list(e.o - e.c)) AS e, count(*) AS m,
         least(greatest(floor((count(*) + 1) * 0.025 + 1e-9)::INTEGER, 1), count(*)) AS kq
  FROM effects e JOIN placebo p USING (tenant, cname, metric, k) WHERE e.k > 0 GROUP BY ALL) pe
  USING (tenant, cname, metric, page_id)
WHERE a.k = 0
""", """
CREATE TEMP TABLE uplift_series AS
WITH pages AS (SELECT DISTINCT tenant, cname, metric, page_id FROM effects WHERE k = 0),
days AS (SELECT p.*, w.ws + i AS n, md.ctl FROM pages p JOIN windows w USING (tenant, cname, metric) JOIN mode md USING (tenant, cname)
         JOIN range(-28, 400) r(i) ON i <= w.days - 1 + 14 WHERE w.k = 0)
SELECT d.tenant, d.cname, d.metric, d.n, coalesce(sum(v.value), 0) AS observed,
       coalesce(sum(CASE WHEN d.ctl THEN f.scale * m.cm * f.factor ELSE f.own END), 0) AS counterfactual
FROM days d
JOIN fit f ON f.tenant = d.tenant AND f.cname = d.cname AND f.metric = d.metric AND f.k = 0 AND f.page_id = d.page_id AND f.wd = (d.n + 3) % 7
LEFT JOIN cs v ON v.tenant = d.tenant AND v.page_id = d.page_id AND v.metric = d.metric AND v.n = d.n
LEFT JOIN cmean m ON m.tenant = d.tenant AND m.cname = d.cname AND m.metric = d.metric AND m.n = d.n
GROUP BY ALL
"""]

con = duckdb.connect()
con.execute("SET threads = 2")
con.execute("SET TimeZone = 'UTC'")
t0 = time.time()
# CPU time (user + system, every thread of this process) from here on: the work done, less swayed than wall-clock
# time by what else the machine is doing.
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
cpu0 = cpu()
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
# Age bands, as `age_bands::age_bands` keeps them: every Sunday's 28-day window in the range (each from the best
# source it has: engaged, then reached, then followers), per practice and per tenant, with each band's share and the
# small-cell suppression; then each page's latest window (below).
out += con.execute("""
SELECT count(*) FROM (
  WITH cells AS (
    SELECT tenant, n, practice_code, split_part(breakdown, '.', 2) AS band,
           CASE metric WHEN 'page_engaged_by_age_gender' THEN 0 WHEN 'page_reach_by_age_gender' THEN 1 ELSE 2 END AS src,
           sum(value) FILTER (WHERE split_part(breakdown, '.', 1) = 'F') AS female,
           sum(value) FILTER (WHERE split_part(breakdown, '.', 1) = 'M') AS male,
           sum(value) FILTER (WHERE split_part(breakdown, '.', 1) = 'U') AS unknown
    FROM f
    WHERE breakdown <> '' AND n % 7 = 3 AND (
          (metric IN ('page_engaged_by_age_gender', 'page_reach_by_age_gender') AND period = 'days_28')
       OR (metric = 'page_followers_by_age_gender' AND period = 'day'))
    GROUP BY ALL),
  best AS (SELECT tenant, n, min(src) AS src FROM cells GROUP BY ALL),
  kept AS (SELECT c.* FROM cells c JOIN best b USING (tenant, n, src)),
  levels AS (
    SELECT tenant, n, practice_code, band, female, male, unknown FROM kept
    UNION ALL
    SELECT tenant, n, 'ALL', band, sum(female), sum(male), sum(unknown) FROM kept GROUP BY ALL),
  people AS (SELECT *, coalesce(female, 0) + coalesce(male, 0) + coalesce(unknown, 0) AS people FROM levels)
  SELECT tenant, n, practice_code, band,
         CASE WHEN people >= 10 THEN female END, CASE WHEN people >= 10 THEN male END,
         CASE WHEN people >= 10 THEN unknown END, CASE WHEN people >= 10 THEN people END,
         CASE WHEN people >= 10 THEN people / nullif(sum(people) OVER (PARTITION BY tenant, n, practice_code), 0) END
  FROM people)""").fetchone()[0]
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
# A post mentioning any campaign's tag is a campaign post, as `posts::topic` decides with the jobs' campaign tags.
campaign_tags = " OR ".join(f"contains(m, lower('{t}'))" for _, t, _, _ in campaigns) or "false"
out += con.execute(POSTS.format(root=root, campaign_tags=campaign_tags)).fetchone()[0]
if campaigns:
    values = ", ".join(f"('{n}', '{t}', CAST(DATE '{s}' - DATE '1970-01-01' AS INTEGER), {d})" for n, t, s, d in campaigns)
    con.execute(f"CREATE TEMP TABLE camp AS SELECT * FROM (VALUES {values}) v(cname, tag, s, days)")
    for q in UPLIFT:
        con.execute(q.replace("{root}", root))
    out += con.execute("SELECT count(*) FROM uplift").fetchone()[0]
    out += con.execute("SELECT count(*) FROM uplift_series").fetchone()[0]
secs = time.time() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
cpu_secs = cpu() - cpu0
print(json.dumps({"rows_scanned": rows, "report_rows": out, "seconds": round(secs, 2), "cpu_seconds": round(cpu_secs, 2), "peak_rss_mib": round(peak)}))
