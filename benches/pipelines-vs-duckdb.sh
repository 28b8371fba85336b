#!/usr/bin/env bash
# All of the reach, age-band and data-quality pipelines over a national-scale year of facts (about 116 million rows,
# generated straight into the lake's Parquet layout), against DuckDB computing the same aggregations on the same
# files in the same run. Writes benches/results/pipelines-vs-duckdb.md.
#
#   bash benches/pipelines-vs-duckdb.sh [lake dir]     # default /tmp/pulse-national-lake (generated if missing)
set -euo pipefail
cd "$(dirname "$0")/.."
LAKE="${1:-/tmp/pulse-national-lake}"
python3 -c "import duckdb" 2>/dev/null || python3 -m pip install -q duckdb
cargo build -q --release -p pulse-benches --bin gen_lake
cargo build -q --release -p pulse-pipelines --bin pipelines_bench
if [ ! -f "$LAKE/_pulse_lake.json" ]; then
  GEN="$("${CARGO_TARGET_DIR:-target}"/release/gen_lake "$LAKE")"
  echo "$GEN"
else
  GEN='{"rows": "(existing lake)"}'
fi
FROM=2025-11-21; TO=2026-11-20
POLARS="$("${CARGO_TARGET_DIR:-target}"/release/pipelines_bench "$LAKE" "$FROM" "$TO")"; echo "polars: $POLARS"
DUCK="$(python3 benches/pipelines_duckdb.py "$LAKE" "$FROM" "$TO")"; echo "duckdb: $DUCK"
POLARS2="$("${CARGO_TARGET_DIR:-target}"/release/pipelines_bench "$LAKE" "$FROM" "$TO")"; echo "polars (again): $POLARS2"
DUCK2="$(python3 benches/pipelines_duckdb.py "$LAKE" "$FROM" "$TO")"; echo "duckdb (again): $DUCK2"
python3 - "$GEN" "$POLARS" "$DUCK" "$POLARS2" "$DUCK2" "$(du -sh "$LAKE" | cut -f1)" <<'PY'
import json, sys, datetime, os
gen, p1, d1, p2, d2, size = sys.argv[1], *[json.loads(x) for x in sys.argv[2:6]], sys.argv[6]
p = min(p1["seconds"], p2["seconds"]); d = min(d1["seconds"], d2["seconds"])
md = f"""# Pipelines over a national year, against DuckDB

Recorded {datetime.date.today()} on this machine ({os.cpu_count()} cores) with `bash benches/pipelines-vs-duckdb.sh`.
Data: 42 tenants × 100 pages × 365 days of page insight facts (day/week/28-day metrics and age/gender breakdowns),
written straight into the lake's Parquet layout by `gen_lake` ({gen}); {size} on disk. Both engines read the same
files, two threads each, best of two runs.

| engine | rows scanned | seconds | peak memory (MiB) |
|---|---|---|---|
| polars pipelines (`pipelines_bench`: reach weekly + outliers, tenant roll-up, age bands, data quality; tenant by tenant) | {p1['rows_scanned']:,} | {p:.1} | {float(max(p1['peak_rss_mib'], p2['peak_rss_mib'])):.0f} |
| DuckDB, the same aggregations in SQL (`benches/pipelines_duckdb.py`) | {d1['rows_scanned']:,} | {d:.1} | {float(max(d1['peak_rss_mib'], d2['peak_rss_mib'])):.0f} |
| **ratio polars / DuckDB** | | **{p/d:.2}** (goal ≤ 1.0) | |

Runs: polars {p1['seconds']}s and {p2['seconds']}s; DuckDB {d1['seconds']}s and {d2['seconds']}s. Campaign uplift is
not in this comparison (the generated year has no campaigns); its cost is per campaign, not per row.
"""
open("benches/results/pipelines-vs-duckdb.md", "w").write(md)
print(md)
PY
