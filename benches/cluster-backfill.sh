#!/usr/bin/env bash
# The national backfill into one ClickHouse server and into a cluster of the same server (ZooKeeper + 2 shards x 2
# replicas on loopback, `.ci/clickhouse-cluster.sh`), in the same session, same world, same ingester settings.
# Writes benches/results/cluster-backfill.md with both runs, their ratio, and where the rows landed.
#
#   bash benches/cluster-backfill.sh [days] [copies]     # default 365 days, 42 ICBs (the full national scenario)
#
# Reuses PULSE_BENCH_CLICKHOUSE_URL / PULSE_BENCH_CLUSTER_DIR when set; otherwise starts its own.
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/common.sh
DAYS="${1:-365}"
COPIES="${2:-42}"
TARGET="${CARGO_TARGET_DIR:-target}"
bench_build ingest_bench
PULSE_BENCH_CLICKHOUSE_URL="$(bench_clickhouse_url)"
if [ -z "${PULSE_BENCH_CLUSTER_DIR:-}" ]; then
  PULSE_BENCH_CLUSTER_DIR="$(bash .ci/clickhouse-cluster.sh 29000)"
fi
DB="pulse_cluster_bench_$$"
SINGLE="$("$TARGET/release/ingest_bench" --clickhouse "$PULSE_BENCH_CLICKHOUSE_URL" --copies "$COPIES" --days "$DAYS" --database "${DB}_single")"
echo "$SINGLE"
CLUSTER="$("$TARGET/release/ingest_bench" --cluster-dir "$PULSE_BENCH_CLUSTER_DIR" --copies "$COPIES" --days "$DAYS" --database "${DB}_cluster")"
echo "$CLUSTER"
# Where the rows are: each node's local facts table, and how many tenants each shard holds.
PLACEMENT=""
while IFS=$'\t' read -r shard replica url _ _; do
  rows="$(curl -fsS "$url/" --data-binary "SELECT count() FROM ${DB}_cluster.page_insights_local")"
  tenants="$(curl -fsS "$url/" --data-binary "SELECT uniqExact(tenant_id) FROM ${DB}_cluster.page_insights_local")"
  PLACEMENT+="| $shard | $replica | $url | $rows | $tenants |"$'\n'
done < "$PULSE_BENCH_CLUSTER_DIR/nodes.tsv"
python3 - "$SINGLE" "$CLUSTER" "$DAYS" "$COPIES" "$PLACEMENT" <<'PY'
import json, sys, datetime, os
s, c, days, copies, placement = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
row = lambda r: f"| {r['store']} | {r['pages']:,} | {r['requests']:,} | {r['rows']:,} | {r['seconds']:.1f} | {r['rows_per_second']:,.0f} | {r['peak_rss_mib']:.0f} |"
md = f"""# National backfill: one ClickHouse server vs a cluster

Recorded {datetime.date.today()} on this machine ({os.cpu_count()} cores) with `bash benches/cluster-backfill.sh {days} {copies}`:
the national scenario ({copies} ICBs), {days} days of page insights and posts, backfilled by the same ingester
settings into one ClickHouse 18.16 server, then into a cluster of the same server on loopback (ZooKeeper and
2 shards x 2 replicas: four server processes and ZooKeeper sharing the same {os.cpu_count()} cores with the simulator
and the ingester), in the same session.

| store | pages | requests | rows | wall seconds | rows/s | peak memory (MiB) |
|---|---|---|---|---|---|---|
{row(s)}
{row(c)}

The cluster run took **{c['seconds']/s['seconds']:.2f}x** the single server's wall time for the same rows. On one
machine the cluster cannot be faster: every row is written once by the ingester and once more by replication, and
five server processes share two cores. What it buys is capacity and failure tolerance on separate machines, where
each shard takes only its tenants' writes (a tenant's rows go to its shard's replica directly, over HTTP) and a
replica can be lost mid-ingest without losing an acknowledged row (tested in CI: `cargo test -p pulse-ingest
--release --test ingest cluster_`).

Where the rows landed (each node's `page_insights_local`; a shard's two replicas hold the same rows):

| shard | replica | node | fact rows | tenants |
|---|---|---|---|---|
{placement.strip()}
"""
open("benches/results/cluster-backfill.md", "w").write(md)
print(md)
PY
