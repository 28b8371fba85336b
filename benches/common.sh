# Shared by the benchmark scripts (sourced): a free loopback port, and the ClickHouse to measure against.
#
#   source benches/common.sh
#   URL="$(bench_clickhouse_url)"   # PULSE_BENCH_CLICKHOUSE_URL, or a server started with .ci/clickhouse.sh

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

bench_clickhouse_url() {
  if [ -n "${PULSE_BENCH_CLICKHOUSE_URL:-}" ]; then
    echo "$PULSE_BENCH_CLICKHOUSE_URL"
  else
    bash .ci/clickhouse.sh "$(free_port)"
  fi
}
