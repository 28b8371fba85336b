#!/usr/bin/env bash
# The pipelines job (reach, age bands, post performance, data quality, campaign uplift) over a national-scale year of
# facts (about 116 million rows and 440,000 posts with two campaigns, generated straight into the lake's layout),
# against DuckDB computing the same aggregations on the same files in the same session: three runs each, with campaign
# uplift and without, the engines alternating (this machine's speed drifts by a third within minutes, so each engine
# gets the same moments). Writes benches/results/pipelines-vs-duckdb.md: best of three (the issue's rule), medians,
# CPU seconds (user + system, every thread: the work done, less swayed by the machine) and peak memory.
#
#   bash benches/pipelines-vs-duckdb.sh [lake dir]     # default /tmp/pulse-national-lake (generated if missing)
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/common.sh
LAKE="${1:-/tmp/pulse-national-lake}"
python3 -c "import duckdb" 2>/dev/null || python3 -m pip install -q duckdb
bench_build gen_lake pipelines_bench
CAMPAIGNS=("${NATIONAL_CAMPAIGNS[@]}")
# A lake from before gen_lake settled each tenant keeps its posts and snapshots as parts, which every read merges row
# by row (an ingested lake has them compacted): not comparable, so it is generated again.
if [ -d "$LAKE/posts" ] && [ -n "$(find "$LAKE/posts" "$LAKE/post_insights" -name 'part-*.parquet' -print -quit)" ]; then
  echo "$LAKE holds posts or snapshots not yet compacted (generated before gen_lake settled each tenant): generating it again" >&2
  rm -rf "$LAKE"
fi
if [ ! -d "$LAKE/posts" ]; then
  rm -rf "$LAKE"
  GEN="$("${CARGO_TARGET_DIR:-target}"/release/gen_lake "$LAKE" "${CAMPAIGNS[@]}")"
  echo "$GEN"
else
  GEN="an earlier run; $(find "$LAKE/page_insights" -name '*.parquet' | wc -l) fact files"
fi
FROM=2025-11-21; TO=2026-11-20
RUNS=()
for round in 1 2 3; do
  for kind in uplift plain; do
    args=("$LAKE" "$FROM" "$TO")
    [ "$kind" = uplift ] && args+=("${CAMPAIGNS[@]}")
    P="$("${CARGO_TARGET_DIR:-target}"/release/pipelines_bench "${args[@]}")"; echo "polars $kind $round: $P" >&2
    D="$(python3 benches/pipelines_duckdb.py "${args[@]}")"; echo "duckdb $kind $round: $D" >&2
    RUNS+=("$kind" "$P" "$D")
  done
done
python3 - "$GEN" "$(du -sh "$LAKE" | cut -f1)" "${RUNS[@]}" <<'PY'
import json, sys, datetime, os, statistics
gen, size, rest = sys.argv[1], sys.argv[2], sys.argv[3:]
runs = {"uplift": ([], []), "plain": ([], [])}
for i in range(0, len(rest), 3):
    runs[rest[i]][0].append(json.loads(rest[i + 1]))
    runs[rest[i]][1].append(json.loads(rest[i + 2]))
def row(kind, goal):
    p, d = runs[kind]
    ps, ds = [r["seconds"] for r in p], [r["seconds"] for r in d]
    pc, dc = [r["cpu_seconds"] for r in p], [r["cpu_seconds"] for r in d]
    pm, dm = max(r["peak_rss_mib"] for r in p), max(r["peak_rss_mib"] for r in d)
    best = min(ps) / min(ds)
    return (f"| {kind} | {', '.join(f'{s:.2f}' for s in ps)} | {', '.join(f'{s:.2f}' for s in ds)} | "
            f"**{best:.2f}** (goal ≤ {goal}{', met' if best <= goal else ', NOT met'}) | "
            f"{statistics.median(ps) / statistics.median(ds):.2f} | {min(pc) / min(dc):.2f} | "
            f"{pm:.0f} / {dm:.0f} = **{pm / dm:.2f}** (goal ≤ 1{', met' if pm <= dm else ', NOT met'}) |")
p0 = runs["uplift"][0][0]
d0 = runs["uplift"][1][0]
phases = lambda r: ", ".join(f"{k} {v:.2f}" for k, v in r["phases"].items() if v >= 0.05)
md = f"""# Pipelines over a national year, against DuckDB

Recorded {datetime.date.today()} on this machine ({os.cpu_count()} cores) with `bash benches/pipelines-vs-duckdb.sh`
(issue 28, goal 1: plain aggregations ≤ 0.7× DuckDB's time with peak memory ≤ DuckDB's; with uplift ≤ 0.5×).
Data: 42 tenants × 100 pages × 365 days of page insight facts (day/week/28-day metrics and age/gender breakdowns,
116,508,000 rows) and about 440,000 posts with their lifetime snapshots, two campaigns (`#StrokeAware`, a video over
a 3-day weekend on 30 % of each tenant's pages; `#FluJab2026`, 7 days on 40 %), written into the lake's layout by
`gen_lake` ({gen}); {size} on disk. Both engines read the same files with two threads each; three runs of each, the
engines alternating.

Work, both sides: weekly reach per page with week-on-week change and robust outlier scores, the tenant roll-up, a
year of Sunday age-band windows from each page's breakdowns, post performance (latest lifetime figures, topic, rank),
data quality (gaps per metric, stale pages, impossible values), and ("uplift") each campaign's uplift on views,
reach, engagements and video views with the day-by-day chart series. polars: `pipelines_bench`, the job's `load` +
`compute` per tenant, report tables not written. DuckDB: `benches/pipelines_duckdb.py`, all tenants at once.

| run | polars s | DuckDB s | best / best | median / median | CPU s, best / best | peak MiB polars / DuckDB |
|---|---|---|---|---|---|---|
{row("plain", 0.7)}
{row("uplift", 0.5)}

Rows: polars loaded {p0['facts_loaded']:,} facts (totals + the Sunday and last-week breakdowns) and produced
{p0['report_rows']:,} report rows ({p0['uplift_rows']:,} uplift rows); DuckDB scanned {d0['rows_scanned']:,} rows
and produced {d0['report_rows']:,} (the totals are not reconciled table by table: the polars quality table has one row
per finding, DuckDB's one per page).

polars' phases in its first uplift run, seconds summed over tenants (phases on different threads overlap, so they add
up to more than the run): {phases(p0)}.

How the time came down, with profiles and what was tried and dropped: `pipelines-plain-profile.md`; earlier records
of this file are in its git history.
"""
open("benches/results/pipelines-vs-duckdb.md", "w").write(md)
print(md)
PY
