#!/usr/bin/env bash
# Start a throwaway ClickHouse server (Debian's clickhouse-server package) on loopback,
# with a config of its own in a temporary directory. Prints the HTTP URL on success.
#
#   bash .ci/clickhouse.sh [HTTP_PORT]     # default 18123; TCP port is HTTP_PORT+1
#   PULSE_CLICKHOUSE_DIR_FILE=f bash .ci/clickhouse.sh PORT   # also writes the server's directory (pid, logs) to f
#
# Installs the package with apt-get when it is missing (CI runs as root on a fresh machine).
set -euo pipefail
HTTP_PORT="${1:-18123}"
TCP_PORT=$((HTTP_PORT + 1))
if ! command -v clickhouse-server >/dev/null 2>&1; then
  echo "installing clickhouse-server from Debian's packages" >&2
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clickhouse-server clickhouse-client >/dev/null
fi
DIR="$(mktemp -d /tmp/pulse-clickhouse.XXXXXX)"
mkdir -p "$DIR/data" "$DIR/tmp" "$DIR/user_files" "$DIR/format_schemas" "$DIR/log"
cat > "$DIR/config.xml" <<XML
<?xml version="1.0"?>
<yandex>
  <logger><level>warning</level><log>$DIR/log/server.log</log><errorlog>$DIR/log/error.log</errorlog><console>0</console></logger>
  <http_port>$HTTP_PORT</http_port>
  <tcp_port>$TCP_PORT</tcp_port>
  <listen_host>127.0.0.1</listen_host>
  <path>$DIR/data/</path>
  <tmp_path>$DIR/tmp/</tmp_path>
  <user_files_path>$DIR/user_files/</user_files_path>
  <format_schema_path>$DIR/format_schemas/</format_schema_path>
  <mark_cache_size>268435456</mark_cache_size>
  <max_concurrent_queries>100</max_concurrent_queries>
  <users_config>$DIR/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <timezone>UTC</timezone>
</yandex>
XML
cat > "$DIR/users.xml" <<XML
<?xml version="1.0"?>
<yandex>
  <profiles><default><max_memory_usage>4000000000</max_memory_usage></default></profiles>
  <users><default><password></password><networks><ip>127.0.0.1</ip><ip>::1</ip></networks><profile>default</profile><quota>default</quota></default></users>
  <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors><result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time></interval></default></quotas>
</yandex>
XML
clickhouse-server --config-file="$DIR/config.xml" >"$DIR/log/stdout.log" 2>&1 &
echo $! > "$DIR/pid"
# A caller that needs to stop this server (a test killing it mid-ingest) asks where its pid file is.
if [ -n "${PULSE_CLICKHOUSE_DIR_FILE:-}" ]; then echo "$DIR" > "$PULSE_CLICKHOUSE_DIR_FILE"; fi
for _ in $(seq 1 120); do
  if curl -fsS "http://127.0.0.1:$HTTP_PORT/ping" >/dev/null 2>&1; then
    echo "http://127.0.0.1:$HTTP_PORT"
    exit 0
  fi
  sleep 0.5
done
echo "clickhouse-server did not answer on 127.0.0.1:$HTTP_PORT within 60 s; see $DIR/log" >&2
tail -n 20 "$DIR"/log/*.log >&2 || true
exit 1
