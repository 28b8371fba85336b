#!/usr/bin/env bash
# End-to-end ingest throughput (simulator -> ingester -> ClickHouse) against a raw insert of the same rows with
# `clickhouse-client ... FORMAT RowBinary`, in the same session, as a ratio. Writes benches/results/ingest-throughput.md.
#
#   bash benches/ingest-throughput.sh [pages] [days]        # default 400 pages x 365 days of the national scenario
set -euo pipefail
cd "$(dirname "$0")/.."
PAGES="${1:-400}"
DAYS="${2:-365}"
cargo build -q --release -p pulse-benches --bin ingest_bench
if [ -z "${PULSE_BENCH_CLICKHOUSE_URL:-}" ]; then
  PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  PULSE_BENCH_CLICKHOUSE_URL="$(bash .ci/clickhouse.sh "$PORT")"
fi
URL="$PULSE_BENCH_CLICKHOUSE_URL"
TCP_PORT=$(( ${URL##*:} + 1 ))
q() { curl -fsS "$URL/" --data-binary "$1"; }
RESULT="$(./target/release/ingest_bench --clickhouse "$URL" --pages "$PAGES" --days "$DAYS")"
echo "$RESULT"
DB="$(echo "$RESULT" | python3 -c 'import json,sys; print(json.load(sys.stdin)["database"])')"
ROWS="$(q "SELECT count() FROM $DB.page_insights")"
WORK="$(mktemp -d)"
q "SELECT * FROM $DB.page_insights FORMAT RowBinary" > "$WORK/rows.bin"
q "CREATE TABLE $DB.page_insights_raw AS $DB.page_insights"
START=$(date +%s.%N)
clickhouse-client --host 127.0.0.1 --port "$TCP_PORT" --query "INSERT INTO $DB.page_insights_raw FORMAT RowBinary" < "$WORK/rows.bin"
END=$(date +%s.%N)
RAW_SECS="$(python3 -c "print($END - $START)")"
RAW_ROWS="$(q "SELECT count() FROM $DB.page_insights_raw")"
python3 - "$RESULT" "$ROWS" "$RAW_ROWS" "$RAW_SECS" "$PAGES" "$DAYS" "$(du -h "$WORK/rows.bin" | cut -f1)" <<'PY'
import json, sys, datetime, os
r = json.loads(sys.argv[1]); rows = int(sys.argv[2]); raw_rows = int(sys.argv[3]); raw_secs = float(sys.argv[4])
pages, days, size = sys.argv[5], sys.argv[6], sys.argv[7]
raw_rate = raw_rows / raw_secs
# Compare like with like: the page insight facts the run stored, per second of the whole run.
e2e_rate = rows / r["seconds"]
ratio = e2e_rate / raw_rate
md = f"""# Ingest throughput into ClickHouse

Recorded {datetime.date.today()} on this machine ({os.cpu_count()} cores; simulator, ingester and ClickHouse 18.16 share them)
with `bash benches/ingest-throughput.sh {pages} {days}`.

| run | rows | seconds | rows/s |
|---|---|---|---|
| end to end: simulator → HTTP → parse → RowBinary insert (national scenario, {r['pages']} pages × {days} days, {r['requests']:,} requests, {r['megabytes']:.0f} MB of JSON): page insight facts stored | {rows:,} | {r['seconds']:.1f} | {e2e_rate:,.0f} |
| reference: `clickhouse-client ... FORMAT RowBinary` of the same rows ({size}) | {raw_rows:,} | {raw_secs:.2f} | {raw_rate:,.0f} |
| **ratio end-to-end / raw** | | | **{ratio:.2f}** (goal ≥ 0.8) |

The run also wrote {r['rows'] - rows:,} post and post-snapshot rows ({r['rows']:,} rows in all, {r['rows_per_second']:,.0f}
rows/s). Peak memory of the ingest process: {r['peak_rss_mib']:.0f} MiB.
"""
open("benches/results/ingest-throughput.md", "w").write(md)
print(md)
PY
