#!/usr/bin/env bash
# A national-scale backfill: the simulator's national scenario, a year of daily data, into ClickHouse. Runs it at
# half the practices (21 ICBs) and at full size (42 ICBs) to show how wall time and peak memory grow when the number
# of practices doubles. Writes benches/results/national-backfill.md.
#
#   bash benches/national-backfill.sh [days]     # default 365
set -euo pipefail
cd "$(dirname "$0")/.."
DAYS="${1:-365}"
cargo build -q --release -p pulse-benches --bin ingest_bench
if [ -z "${PULSE_BENCH_CLICKHOUSE_URL:-}" ]; then
  PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  PULSE_BENCH_CLICKHOUSE_URL="$(bash .ci/clickhouse.sh "$PORT")"
fi
HALF="$("${CARGO_TARGET_DIR:-target}"/release/ingest_bench --clickhouse "$PULSE_BENCH_CLICKHOUSE_URL" --copies 21 --days "$DAYS")"
echo "$HALF"
FULL="$("${CARGO_TARGET_DIR:-target}"/release/ingest_bench --clickhouse "$PULSE_BENCH_CLICKHOUSE_URL" --copies 42 --days "$DAYS")"
echo "$FULL"
python3 - "$HALF" "$FULL" "$DAYS" <<'PY'
import json, sys, datetime, os
h, f, days = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3]
row = lambda r: f"| {r['practices']:,} | {r['pages']:,} | {r['requests']:,} | {r['rows']:,} | {r['seconds']:.1f} | {r['rows_per_second']:,.0f} | {r['peak_rss_mib']:.0f} |"
md = f"""# National-scale backfill

Recorded {datetime.date.today()} on this machine ({os.cpu_count()} cores, shared by the simulator, the ingester and
ClickHouse 18.16) with `bash benches/national-backfill.sh {days}`: the national scenario, {days} days of daily, weekly
and 28-day page insights plus posts with their lifetime insights, backfilled into ClickHouse.

| practices | pages | requests | rows | wall seconds | rows/s | peak memory (MiB) |
|---|---|---|---|---|---|---|
{row(h)}
{row(f)}

Doubling the practices multiplies wall time by **{f['seconds']/h['seconds']:.2f}** and peak memory by
**{f['peak_rss_mib']/h['peak_rss_mib']:.2f}**. Peak memory is of the whole process: the in-process simulator (which
serves the world) and the ingester (whose data in flight is bounded by the write batch, `flush_rows`, plus a
16-window queue to the writer).
"""
open("benches/results/national-backfill.md", "w").write(md)
print(md)
PY
