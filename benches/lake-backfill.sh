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
FULL="$("${BENCH[@]}" --lake "$WORK/full" --copies 42)"; echo "$FULL"
CH="$("${BENCH[@]}" --clickhouse "$PULSE_BENCH_CLICKHOUSE_URL" --copies 42)"; echo "$CH"
# What an outside reader sees after the run: one file per partition (the run's end compacted the parts).
PARTS="$(find "$WORK/full" -name 'part-*.parquet' | wc -l)"
DATA="$(find "$WORK/full/page_insights" -name 'data.parquet' | wc -l)"
SIZE="$(du -sh "$WORK/full" | cut -f1)"
python3 - "$HALF" "$FULL" "$CH" "$DAYS" "$PARTS" "$DATA" "$SIZE" <<'PY'
import json, sys, datetime, os
h, f, c = (json.loads(a) for a in sys.argv[1:4])
days, parts, data, size = sys.argv[4], int(sys.argv[5]), int(sys.argv[6]), sys.argv[7]
row = lambda name, r: f"| {name} | {r['pages']:,} | {r['rows']:,} | {r['seconds']:.1f} | {r['rows_per_second']:,.0f} | {r['ingester_cpu_seconds']:.1f} | {r['peak_rss_mib']:.0f} |"
md = f"""# National backfill into the lake against ClickHouse

Recorded {datetime.date.today()} on this machine ({os.cpu_count()} cores) with `bash benches/lake-backfill.sh {days}`: the
national scenario, {days} days, simulator in a child process, the same session.

| store | pages | rows | wall seconds | rows/s | ingester CPU s | ingester peak memory (MiB) |
|---|---|---|---|---|---|---|
{row("lake, half (21 ICBs)", h)}
{row("lake, full (42 ICBs)", f)}
{row("ClickHouse 18.16, full", c)}

Doubling the pages multiplies the lake's wall time by **{f['seconds'] / h['seconds']:.2f}** (linear is 2); the full lake
backfill takes **{f['seconds'] / c['seconds']:.2f}×** the ClickHouse one (whose server does its sorting, compression and merges
on the same two cores, outside the ingester's CPU figure).

Writes append one part file per partition per batch; a partition of facts, posts or post insights is compacted when it
has 64 parts and when the run ends (other datasets at 16). Parts and compactions merge rows by identity in Arrow
batches, sorting the key columns in Arrow's row format; strings other than the key columns are written without
min/max statistics. After the run the full lake ({size}) has {data:,} `page_insights` partition files and {parts} part files left: what
DuckDB, polars or pyarrow read is one file per partition with one row per identity.

Before this (recorded 2026-12-02, the lake as it was until b7858ec: records merged in a `BTreeMap` keyed by strings, a
compaction every 16 parts, statistics on every column): lake full 97.9 s against ClickHouse 62.2 s, **1.57×**.
In this session (2026-12-06), single `--copies 8` runs (3.5M rows) took 26.5 s at b7858ec, 19.6 s with the Arrow
merge and 10.7 s with the statistics change too (single runs here vary by a quarter; the ratio above is the measure).
Compactions check every string of every file as a read would before they merge (each distinct value decoded once).
Same-day runs of this script, lake full against ClickHouse: 65.0 against 49.5 s (1.31×, Arrow merge, statistics on
every column), 57.9 against 53.1 s (1.09×, statistics on key columns), 83.9 against 55.0 s (1.53×, compaction
decoding every row to check it), then the table above (the check on distinct values); the ClickHouse reference moved
from 49.5 to 75.4 s on this shared machine, so only ratios within a run mean anything.

Before that (the lake, which read and rewrote the whole tenant-month partition on every batch; `ingest_bench
--lake` at commit d82cea7, same session, 2026-12-02): half 45.1 s, full 199.8 s: **×4.43** when the pages doubled.
"""
open("benches/results/lake-backfill.md", "w").write(md)
print(md)
PY
