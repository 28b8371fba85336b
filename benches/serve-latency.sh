#!/usr/bin/env bash
# The analyst API's query endpoint at 100 concurrent clients over a national year of reports, on the lake and on
# ClickHouse, cached and uncached, against the same query run directly in DuckDB and ClickHouse. Writes
# benches/results/serve-latency.md.
#
#   bash benches/serve-latency.sh [lake dir]     # default /tmp/pulse-national-lake (generated if missing)
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/common.sh
LAKE="${1:-/tmp/pulse-national-lake}"
BIN="${CARGO_TARGET_DIR:-target}/release"
python3 -c "import duckdb" 2>/dev/null || python3 -m pip install -q duckdb
bench_build gen_lake serve_bench pulse
if [ ! -f "$LAKE/_pulse_lake.json" ]; then "$BIN/gen_lake" "$LAKE"; fi
FROM=2025-11-21; TO=2026-11-20
# A config for the generated world: 42 tenants of 100 practices (gen_lake's codes and page ids), list sizes 3,000-15,000.
python3 - "$LAKE" <<'PY'
import sys
lake = sys.argv[1]
toml = ['[store]\nbackend = "lake"\nlake_dir = "."\n']
for t in range(1, 43):
    tid = f"icb-{t:02}"
    rows = ["code,name,list_size,page_id,page_kind"]
    for p in range(1, 101):
        page = 100_000_000_000 + (t - 1) * 100 + (p - 1)
        rows.append(f"A{t:02}{p:03},Practice {t:02}-{p:03},{3000 + (t * 7919 + p * 104729) % 12000},{page},official")
    open(f"{lake}/practices-{tid}.csv", "w").write("\n".join(rows) + "\n")
    toml.append(f'[[tenant]]\nid = "{tid}"\nname = "ICB {t:02}"\npractices_csv = "practices-{tid}.csv"\n')
open(f"{lake}/pulse.toml", "w").write("\n".join(toml))
PY
START=$(date +%s); "$BIN/pulse" jobs run --config "$LAKE/pulse.toml" --from "$FROM" --to "$TO" --variant main >/dev/null
JOBS_S=$(( $(date +%s) - START ))
LAKE_RUN="$("$BIN/serve_bench" "$LAKE/pulse.toml")"; echo "$LAKE_RUN"
DUCK="$(python3 benches/serve_reference.py duckdb "$LAKE" "$FROM" "$TO" "$LAKE")"; echo "$DUCK"
PULSE_BENCH_CLICKHOUSE_URL="$(bench_clickhouse_url)"
CH_RUN="$("$BIN/serve_bench" "$LAKE/pulse.toml" --clickhouse "$PULSE_BENCH_CLICKHOUSE_URL")"; echo "$CH_RUN"
CH="$(python3 benches/serve_reference.py clickhouse "$PULSE_BENCH_CLICKHOUSE_URL" "$FROM" "$TO" "$LAKE")"; echo "$CH"
CH_VERSION="$(curl -fsS "$PULSE_BENCH_CLICKHOUSE_URL/?query=SELECT%20version()")"
python3 - "$LAKE_RUN" "$DUCK" "$CH_RUN" "$CH" "$JOBS_S" "$CH_VERSION" <<'PY'
import json, sys, datetime, os
lake, duck, ch, chd = [json.loads(x) for x in sys.argv[1:5]]
jobs_s, ch_version = sys.argv[5], sys.argv[6]
def amp(r, name):
    a = r["amplification"]
    out = []
    for kind, k in a["kinds"].items():
        statuses = ", ".join(f"{n}× {st}" for st, n in k["statuses"].items())
        out.append(f"| {name} | {kind} | {k['p50_ms']:.1f} | {k['p99_ms']:.1f} | {statuses} | {a['rss_after_mib']:.0f} / {a['rss_before_mib']:.0f} MiB = {a['rss_ratio']:.2f}× |")
    return "\n".join(out)
def rows(r, ref, name):
    out = []
    for mode, goal in (("cached", 50), ("uncached", 300), ("store", None)):
        m = r[mode]
        ok = "–" if goal is None else ("met" if m["p99_ms"] < goal and m["errors"] == 0 else "**not met**")
        goal_text = f"< {goal} ms: {ok}" if goal else "reference"
        out.append(f"| {name} | {mode} | {m['p50_ms']:.1f} | {m['p99_ms']:.1f} | {m['max_ms']:.1f} | {m['requests_per_second']:,.0f} | {m['errors']} | {goal_text} | {m['one_client_p50_ms']:.2f} | {m['one_client_p50_ms'] / ref['p50_ms']:.2f} | {m['rss_after_mib']:.0f} |")
    return "\n".join(out)
md = f"""# Analyst API latency at 100 concurrent clients

Recorded {datetime.date.today()} on this machine ({os.cpu_count()} cores, shared by the server, the 100 clients and,
for the second store, ClickHouse {ch_version}) with `bash benches/serve-latency.sh`.

Data: a national year of facts (`gen_lake`: 42 tenants × 100 practices × 365 days), reports computed by
`pulse jobs run` ({jobs_s} s for all tenants). Each request is a tenant-year practice table: reach, engaged users,
views, engagement rate and penetration by practice over {lake['range'][0]} to {lake['range'][1]} (100 rows out of
5,200 weekly rows), with the tenant's key, round-robin over the 42 tenants; {lake['requests']:,} requests from
{lake['clients']} concurrent clients per row. *Cached*: the answer cache on (warmed with one query per tenant);
*uncached*: the answer cache off, so every request is computed, from the tenant's report slice the service keeps
between jobs runs (`[server] report_cache_mb`, default 256), warmed the same way: the first question per tenant after
a jobs run reads its slice (one client, one per tenant: p50 {lake['uncached']['first_p50_ms']:.1f} ms, max
{lake['uncached']['first_max_ms']:.1f} ms on the lake; p50 {ch['uncached']['first_p50_ms']:.1f} ms, max
{ch['uncached']['first_max_ms']:.1f} ms on ClickHouse; questions arriving while a slice is read wait for that one
read); *store*: both off, every request reads the report from the store (the lake) or has ClickHouse add it up (one
GROUP BY), as `report_cache_mb = 0` serves. The memory column is the process (server and clients) after the phase. The
last two columns before it run
the same query one at a time through the API, and its ratio to the same aggregation run directly in the engine
(DuckDB over the lake's report Parquet file; ClickHouse over the copied report table; both one query at a time,
session): the API's one-client time over the bare engine's (authentication, key check, access scope, watermark read,
JSON; below 1 when the service answers from memory).

What the goal covers. The 300 ms goal for a question not asked before is met with the slices the service keeps (the
default), once each tenant's slice has been read after a jobs run; the store path, which `report_cache_mb = 0` and a
slice too large to keep still use, does not meet it on ClickHouse (the *store* row). Not measured here: the cold burst
of 100 clients arriving right after a jobs run, when each tenant's first questions wait for its one slice read.

| store | mode | p50 ms | p99 ms | max ms | requests/s | errors | goal (p99) | one client p50 ms | ratio to the engine directly | memory MiB |
|---|---|---|---|---|---|---|---|---|---|---|
{rows(lake, duck, "lake")}
{rows(ch, chd, "ClickHouse")}

Engine directly, one query at a time: DuckDB p50 {duck['p50_ms']:.2f} ms (p99 {duck['p99_ms']:.2f}); ClickHouse
p50 {chd['p50_ms']:.2f} ms (p99 {chd['p99_ms']:.2f}) over HTTP.

Where the time goes. At 100 concurrent clients on two cores shared with the load generator, latency is queueing:
p50 ≈ clients / throughput (Little's law), so it follows the per-request CPU. Cached requests cost the key check and
a cache lookup (the data watermark is re-read from the store at most once a second per tenant). Uncached requests on
the lake and on ClickHouse aggregate the tenant's 5,200 weekly rows in Rust from the slice kept in memory, so both
stores cost the same once each tenant's slice is read (`crates/pulse-query/tests/slice_cache.rs` checks answers from a
kept slice equal answers from the store, for every report the query API reads). Without slices (*store*), the lake
reads the Parquet file for every request, and ClickHouse runs one GROUP BY returning the 100 practice rows
(`crates/pulse-query/tests/query_pushdown.rs` checks it answers what the service's own aggregation answers): one
client pays about twice the bare GROUP BY (key check, watermark, JSON both ways), and at 100 clients ClickHouse
18.16's own cost per query (about 6 ms, on two cores shared with the service and the clients) bounds throughput, so
p99 is several hundred milliseconds: that is what the slices take away.

Amplification (issue 22): 1,000 requests from 4 clients through the cached server, a third each of a `contains` filter
with 100,000 values (over the body limit: 413 from its declared length, before the body is read; a client still
writing may see the connection closed instead, status 0), with 501 values (400: at most 500), and the largest query
allowed (500 values of 200 bytes, each request different), answered. Memory: the process (server and clients) after
a first 100 such requests and after 1,000 more.

| store | kind | p50 ms | p99 ms | statuses | memory after / before |
|---|---|---|---|---|---|
{amp(lake, "lake")}
{amp(ch, "ClickHouse")}

Raw: lake `{json.dumps(lake)}`; ClickHouse `{json.dumps(ch)}`.
"""
open("benches/results/serve-latency.md", "w").write(md)
print(md)
PY
