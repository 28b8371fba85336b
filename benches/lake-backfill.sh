#!/usr/bin/env bash
# The national backfill (a year) into the embedded lake at half and full size, and into one ClickHouse server at full
# size, in the same session: does the lake's write cost grow linearly with what is written? (It used to rewrite a
# whole tenant-month partition on every batch: quadratic.) The simulator runs in a child process. Writes
# benches/results/lake-backfill.md.
#
#   bash benches/lake-backfill.sh [days]     # default 365
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/common.sh
DAYS="${1:-365}"
bench_build ingest_bench
PULSE_BENCH_CLICKHOUSE_URL="$(bench_clickhouse_url)"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
BENCH=("${CARGO_TARGET_DIR:-target}"/release/ingest_bench --days "$DAYS" --graph process)
HALF="$("${BENCH[@]}" --lake "$WORK/half" --copies 21)"; echo "$HALF"
# The full size three times on each side, alternating (the machine's speed drifts): the issue's best of three.
FULLS=(); CHS=()
for round in 1 2 3; do
  rm -rf "$WORK/full"
  FULLS+=("$("${BENCH[@]}" --lake "$WORK/full" --copies 42)"); echo "${FULLS[-1]}"
  CHS+=("$("${BENCH[@]}" --clickhouse "$PULSE_BENCH_CLICKHOUSE_URL" --copies 42)"); echo "${CHS[-1]}"
done
# What an outside reader sees after the run: one file per partition (the run's end compacted the parts).
PARTS="$(find "$WORK/full" -name 'part-*.parquet' | wc -l)"
DATA="$(find "$WORK/full/page_insights" -name 'data.parquet' | wc -l)"
SIZE="$(du -sh "$WORK/full" | cut -f1)"
python3 - "$HALF" "$DAYS" "$PARTS" "$DATA" "$SIZE" "${FULLS[@]}" "${CHS[@]}" <<'PY'
import json, sys, datetime, os, statistics
h = json.loads(sys.argv[1])
days, parts, data, size = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
runs = [json.loads(a) for a in sys.argv[6:]]
fulls, chs = runs[:len(runs) // 2], runs[len(runs) // 2:]
best = lambda rs: min(rs, key=lambda r: r['seconds'])
f, c = best(fulls), best(chs)
median = lambda rs: statistics.median(r['seconds'] for r in rs)
times = lambda rs: ", ".join(f"{r['seconds']:.1f} ({r['peak_rss_mib']:.0f} MiB)" for r in rs)
row = lambda name, r: f"| {name} | {r['pages']:,} | {r['rows']:,} | {r['seconds']:.1f} | {r['rows_per_second']:,.0f} | {r['ingester_cpu_seconds']:.1f} | {r['peak_rss_mib']:.0f} |"
md = f"""# National backfill into the lake against ClickHouse

Recorded {datetime.date.today()} on this machine ({os.cpu_count()} cores) with `bash benches/lake-backfill.sh {days}`: the
national scenario, {days} days, simulator in a child process, the same session; the full size three times on each
side, alternating, the fastest of each shown.

| store | pages | rows | wall seconds | rows/s | ingester CPU s | ingester peak memory (MiB) |
|---|---|---|---|---|---|---|
{row("lake, half (21 ICBs), one run", h)}
{row("lake, full (42 ICBs), best of three", f)}
{row("ClickHouse 18.16, full, best of three", c)}

The three full runs, seconds (ingester peak memory): lake {times(fulls)}; ClickHouse {times(chs)}.

Best of three, the full lake backfill takes **{f['seconds'] / c['seconds']:.2f}×** the ClickHouse one; by the medians
({median(fulls):.1f} against {median(chs):.1f} s), **{median(fulls) / median(chs):.2f}×**. (ClickHouse's server does its sorting,
compression and merges on the same two cores, outside the ingester's CPU figure.) Doubling the pages multiplies the
lake's wall time by **{f['seconds'] / h['seconds']:.2f}** (linear is 2; one half-size run against the best full one).

Writes append one part file per partition per batch; a partition of facts, posts or post insights is compacted when it
has 64 parts and when the run ends (other datasets at 16). Parts and compactions merge rows by identity in Arrow
batches, sorting the key columns in Arrow's row format; strings other than the key columns are written without
min/max statistics. The run's end compacts a tenant's partitions on as many threads as there are cores (at most 4),
the largest first, and a partition whose only file is one part in compacted form has it renamed, not rewritten. After the run the full lake ({size}) has {data:,} `page_insights` partition files and {parts} part files left: what
DuckDB, polars or pyarrow read is one file per partition with one row per identity.

Before this (recorded 2026-12-02, the lake as it was until b7858ec: records merged in a `BTreeMap` keyed by strings, a
compaction every 16 parts, statistics on every column): lake full 97.9 s against ClickHouse 62.2 s, **1.57×**.
In this session (2026-12-06), single `--copies 8` runs (3.5M rows) took 26.5 s at b7858ec, 19.6 s with the Arrow
merge and 10.7 s with the statistics change too (single runs here vary by a quarter; the ratio above is the measure).
Compactions check every string of every file as a read would before they merge (each distinct value decoded once).
Same-day runs of this script, lake full against ClickHouse: 65.0 against 49.5 s (1.31×, Arrow merge, statistics on
every column), 57.9 against 53.1 s (1.09×, statistics on key columns), 83.9 against 55.0 s (1.53×, compaction
decoding every row to check it), then the table above (the check on distinct values); the ClickHouse reference moved
from 49.5 to 75.4 s on this shared machine, so only ratios within a run mean anything. On 2026-12-06 the script ran
each side once: lake full 79.7 s against ClickHouse 75.4 s, **1.06×**.

On 2026-12-07, the session of the table above, the code before the run's end compacted in parallel and renamed lone
parts (4a271e4) took 69.2 s for the full lake in one run (1.03× the best ClickHouse run above). Its peak memory
was 714 MiB, against 388 MiB recorded for the same code on 2026-12-06: the peak moves with how batch writes and
compactions overlap, and runs are single samples of it. The end compacts up to min(cores, 4) partitions at once, the
largest first, so on more cores the peak can hold that many partitions (a national facts partition: about 34,000
rows). Before,
the run's end compacted one partition at a time while the simulator, done, left the other core idle. At `--copies 8`
about a sixth of the facts partitions and a quarter of the posts partitions had one part at the end. Single
`--copies 8` runs, alternating, were too noisy to separate the two changes: 11.3–15.5 s before, 9.9–11.6 s after.

Before that (the lake, which read and rewrote the whole tenant-month partition on every batch; `ingest_bench
--lake` at commit d82cea7, same session, 2026-12-02): half 45.1 s, full 199.8 s: **×4.43** when the pages doubled.
"""
open("benches/results/lake-backfill.md", "w").write(md)
print(md)
PY
