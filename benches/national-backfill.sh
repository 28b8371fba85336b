#!/usr/bin/env bash
# A national-scale backfill: the simulator's national scenario, a year of daily data, into ClickHouse, followed by the
# next day's incremental run. Runs it at half the practices (21 ICBs) and at full size (42 ICBs) to show how wall time
# and peak memory grow when the number of practices doubles. The simulator runs in a child process
# (`ingest_bench --graph process`), so the peak memory measured is the ingester's alone. Also counts Graph calls per
# page-year (backfill) and per page (daily run) against the API's minimum, and estimates a real backfill's wall time
# under Meta's limits. Writes benches/results/national-backfill.md.
#
#   bash benches/national-backfill.sh [days]     # default 365
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/common.sh
DAYS="${1:-365}"
bench_build ingest_bench
PULSE_BENCH_CLICKHOUSE_URL="$(bench_clickhouse_url)"
URL="$PULSE_BENCH_CLICKHOUSE_URL"
BENCH=("${CARGO_TARGET_DIR:-target}"/release/ingest_bench --clickhouse "$URL" --days "$DAYS" --graph process --then-daily)
HALF="$("${BENCH[@]}" --copies 21)"
echo "$HALF"
FULL="$("${BENCH[@]}" --copies 42)"
echo "$FULL"
DB="$(echo "$FULL" | python3 -c 'import json,sys; print(json.load(sys.stdin)["database"])')"
q() { curl -fsS "$URL/" --data-binary "$1"; }
# Posts per page in the backfilled year (the posts listing returns up to 100 per call), and daily engagements per
# page (Meta's per-page call limit is 4,800 x engaged users per 24 hours; engagements bound engaged users from above).
POSTS="$(q "SELECT quantiles(0.5, 0.99, 1)(n) FROM (SELECT page_id, count() AS n FROM $DB.posts FINAL GROUP BY page_id) FORMAT TSV")"
ENGAGED="$(q "SELECT quantiles(0, 0.01, 0.5)(v) FROM (SELECT page_id, min(value) AS v FROM $DB.page_insights FINAL WHERE metric = 'page_engagements' AND period = 'day' AND breakdown = '' GROUP BY page_id) FORMAT TSV")"
ZERO_DAYS="$(q "SELECT countIf(value = 0), count() FROM $DB.page_insights FINAL WHERE metric = 'page_engagements' AND period = 'day' AND breakdown = '' FORMAT TSV")"
python3 - "$HALF" "$FULL" "$DAYS" "$POSTS" "$ENGAGED" "$ZERO_DAYS" <<'PY'
import json, sys, datetime, os, math
h, f, days = json.loads(sys.argv[1]), json.loads(sys.argv[2]), int(sys.argv[3])
posts = [float(x) for x in sys.argv[4].strip("[]\n").split(",")]
engaged = [float(x) for x in sys.argv[5].strip("[]\n").split(",")]
zero_days, all_days = (int(x) for x in sys.argv[6].split())
g = lambda r: r["graph_process"]["peak_rss_mib"]
row = lambda r: (f"| {r['practices']:,} | {r['pages']:,} | {r['requests']:,} | {r['rows']:,} | {r['seconds']:.1f} | "
                 f"{r['rows_per_second']:,.0f} | {r['peak_rss_mib']:.0f} | {g(r):.0f} |")
years = days / 365
per_page_year = lambda r: r["requests"] / r["pages"] / years
windows = math.ceil(days / 90)
# The minimum: one insights call per 90-day window for every metric and period, and the posts listing at 100 a call
# (the median page; the last listing page also says there is no more).
min_calls = windows + math.ceil(posts[0] / 100)
daily_min = 2
pages = f["pages"]
backfill_calls = f["requests"]
def wall(latency, concurrency):
    return backfill_calls * latency / concurrency
md = f"""# National-scale backfill

Recorded {datetime.date.today()} on this machine ({os.cpu_count()} cores, shared by the simulator, the ingester and
ClickHouse 18.16) with `bash benches/national-backfill.sh {days}`: the national scenario, {days} days of daily, weekly
and 28-day page insights plus posts with their lifetime insights, backfilled into ClickHouse, then the next day's
incremental run. The simulator runs in a child process (`ingest_bench --graph process`), so **the ingester's peak
memory is measured alone**; the simulator's is beside it.

| practices | pages | requests | rows | wall seconds | rows/s | ingester peak memory (MiB) | simulator process peak (MiB) |
|---|---|---|---|---|---|---|---|
{row(h)}
{row(f)}

Doubling the practices multiplies wall time by **{f['seconds']/h['seconds']:.2f}** and the ingester's peak memory by
**{f['peak_rss_mib']/h['peak_rss_mib']:.2f}** (goal ≤ 1.1). What the ingester holds is bounded by the write batch
(`flush_rows`; one batch being written while the next fills) and a 16-window queue to the writer, not by the number of
pages.

## Graph calls: what a backfill and a daily run cost, against the API's minimum

| run | calls | per page | minimum the API allows | 
|---|---|---|---|
| backfill of {days} days ({pages:,} pages) | {backfill_calls:,} | **{per_page_year(f):.2f} per page-year** | {min_calls} per page-year: {windows} × 90-day windows with every metric and period in one call, + {math.ceil(posts[0] / 100)} posts listing call(s) (median page: {posts[0]:.0f} posts; 99th percentile {posts[1]:.0f}, largest {posts[2]:.0f}, at 100 per call) |
| next day's incremental ({pages:,} pages) | {f['daily']['requests']:,} | **{f['daily']['requests'] / pages:.2f}** | {daily_min}: one insights call for the lookback days (every metric and period), one posts listing for the young posts |

Before this change the same backfill took 71,792 calls (17.0 per page-year: one call per period per window, 3 × 5 + 2)
and a daily run 4 per page. Batch requests (up to 50 calls in one HTTP request) do not lower this count: Meta counts
each call in a batch against the limits, and each page's token would have to travel inside the batch body's
`relative_url`s; they save round trips only.

## Estimated wall time of a real national backfill under Meta's limits

Meta's per-page limit for calls with a page token is 4,800 × the page's daily engaged users per 24 hours. The current
API no longer reports engaged users; its daily engagements (`page_post_engagements`, stored as `page_engagements`) are
an upper bound. In the simulated national year, over pages, the quietest day's engagements are {engaged[0]:.0f} at the
lowest (1st percentile {engaged[1]:.0f}, median {engaged[2]:.0f}); {zero_days:,} of {all_days:,} page-days had none. A page that needs
{per_page_year(f):.0f} calls for a year uses {per_page_year(f) / 4800 * 100:.2f} % of the quota of a page with one engaged user,
so the per-page limit does not bind (a page with no engaged users at all for a day would get no quota that day: its
calls are then retried after Meta's `estimated_time_to_regain_access`, as the rate budget does). What binds is the
latency of each call and the ingester's concurrency: {backfill_calls:,} calls at

| latency per call | 8 in flight (default) | 32 in flight |
|---|---|---|
| 0.5 s | {wall(0.5, 8) / 60:.0f} min | {wall(0.5, 32) / 60:.0f} min |
| 1.5 s | {wall(1.5, 8) / 60:.0f} min | {wall(1.5, 32) / 60:.0f} min |

(at the previous 71,792 calls: {71792 * 0.5 / 8 / 60:.0f} and {71792 * 1.5 / 8 / 60:.0f} min with 8 in flight). The app-level limit
(200 calls per hour per user) applies only to user and app tokens, which the ingester does not use.
"""
open("benches/results/national-backfill.md", "w").write(md)
print(md)
PY
