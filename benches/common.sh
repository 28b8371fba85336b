# Shared by the benchmark scripts (sourced): building their programs, a free loopback port, and the ClickHouse to
# measure against.
#
#   source benches/common.sh
#   bench_build ingest_bench pulse     # release builds of these binaries
#   URL="$(bench_clickhouse_url)"   # PULSE_BENCH_CLICKHOUSE_URL, or a server started with .ci/clickhouse.sh

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

bench_clickhouse_url() {
  if [ -n "${PULSE_BENCH_CLICKHOUSE_URL:-}" ]; then
    echo "$PULSE_BENCH_CLICKHOUSE_URL"
  else
    bash .ci/clickhouse.sh "$(free_port)"
  fi
}

# Release builds of the named binaries with the whole workspace's features, so a build directory shared with
# `cargo test --release --workspace` is reused as it is (`-p <crate>` would rebuild arrow, parquet and polars for a
# different feature set).
bench_build() {
  local bins=()
  for b in "$@"; do bins+=(--bin "$b"); done
  cargo build -q --release --workspace "${bins[@]}"
}

# The campaigns of the generated national year (`gen_lake`): name|#tag|first day|days|share of each tenant's pages
# taking part.
NATIONAL_CAMPAIGNS=(--campaign 'Stroke awareness|#StrokeAware|2026-10-03|3|0.3' --campaign 'Flu jab drive|#FluJab2026|2026-09-14|7|0.4')
