#!/usr/bin/env bash
# Start a throwaway ClickHouse cluster on loopback: one ZooKeeper (Debian's `zookeeper` package) and
# 2 shards x 2 replicas of Debian's clickhouse-server, each with its own ports, data directory, macros and the
# cluster definition `pulse` (internal_replication: the Replicated tables copy rows between a shard's replicas).
#
#   bash .ci/clickhouse-cluster.sh [BASE_PORT]     # default 19000; prints the cluster directory
#
# Ports: ZooKeeper BASE_PORT; node n (1..4) HTTP BASE_PORT+10n, TCP +10n+1, interserver +10n+2.
# The directory holds `nodes.tsv` (shard, replica, http_url, tcp_port, node directory: pid, config, logs), `zk/`
# and `stop.sh`. Tests read it through PULSE_TEST_CLICKHOUSE_CLUSTER_DIR; each node can be stopped and started
# again with the `start.sh` in its directory.
#
# Installs the packages with apt-get when they are missing (CI runs as root on a fresh machine).
set -euo pipefail
BASE="${1:-19000}"
need=()
command -v clickhouse-server >/dev/null 2>&1 || need+=(clickhouse-server clickhouse-client)
[ -f /usr/share/java/zookeeper.jar ] || need+=(zookeeper)
if [ "${#need[@]}" -gt 0 ]; then
  echo "installing ${need[*]} from Debian's packages" >&2
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
DIR="$(mktemp -d /tmp/pulse-cluster.XXXXXX)"

# --- ZooKeeper, standalone -----------------------------------------------------------------------------------------
ZK_PORT="$BASE"
mkdir -p "$DIR/zk/data" "$DIR/zk/conf"
cat > "$DIR/zk/conf/zoo.cfg" <<CFG
tickTime=500
initLimit=10
syncLimit=5
dataDir=$DIR/zk/data
clientPort=$ZK_PORT
clientPortAddress=127.0.0.1
admin.enableServer=false
4lw.commands.whitelist=ruok,stat
CFG
cat > "$DIR/zk/conf/log4j.properties" <<'CFG'
log4j.rootLogger=WARN, FILE
log4j.appender.FILE=org.apache.log4j.FileAppender
log4j.appender.FILE.File=${zk.log}
log4j.appender.FILE.layout=org.apache.log4j.PatternLayout
log4j.appender.FILE.layout.ConversionPattern=%d %p %c: %m%n
CFG
CP="$DIR/zk/conf:/usr/share/java/zookeeper.jar"
for jar in /usr/share/java/*.jar; do CP="$CP:$jar"; done
java -Xmx256m -Dzk.log="$DIR/zk/zookeeper.log" -Dlog4j.configuration="file:$DIR/zk/conf/log4j.properties" \
  -cp "$CP" org.apache.zookeeper.server.quorum.QuorumPeerMain "$DIR/zk/conf/zoo.cfg" >"$DIR/zk/stdout.log" 2>&1 &
echo $! > "$DIR/zk/pid"
for _ in $(seq 1 60); do
  if [ "$( (exec 3<>"/dev/tcp/127.0.0.1/$ZK_PORT" && printf ruok >&3 && timeout 2 cat <&3) 2>/dev/null)" = "imok" ]; then break; fi
  sleep 0.5
done

# --- four clickhouse-server nodes ----------------------------------------------------------------------------------
remote_servers="<pulse>"
for shard in 1 2; do
  remote_servers+="<shard><internal_replication>true</internal_replication>"
  for replica in 1 2; do
    n=$(( (shard - 1) * 2 + replica ))
    remote_servers+="<replica><host>127.0.0.1</host><port>$((BASE + 10 * n + 1))</port></replica>"
  done
  remote_servers+="</shard>"
done
remote_servers+="</pulse>"

: > "$DIR/nodes.tsv"
starting=()
for shard in 1 2; do
  for replica in 1 2; do
    n=$(( (shard - 1) * 2 + replica ))
    HTTP=$((BASE + 10 * n)); TCP=$((HTTP + 1)); INTER=$((HTTP + 2))
    NODE="$DIR/node$n"
    mkdir -p "$NODE/data" "$NODE/tmp" "$NODE/user_files" "$NODE/format_schemas" "$NODE/log"
    cat > "$NODE/config.xml" <<XML
<?xml version="1.0"?>
<yandex>
  <logger><level>warning</level><log>$NODE/log/server.log</log><errorlog>$NODE/log/error.log</errorlog><console>0</console></logger>
  <http_port>$HTTP</http_port>
  <tcp_port>$TCP</tcp_port>
  <interserver_http_port>$INTER</interserver_http_port>
  <interserver_http_host>127.0.0.1</interserver_http_host>
  <listen_host>127.0.0.1</listen_host>
  <path>$NODE/data/</path>
  <tmp_path>$NODE/tmp/</tmp_path>
  <user_files_path>$NODE/user_files/</user_files_path>
  <format_schema_path>$NODE/format_schemas/</format_schema_path>
  <mark_cache_size>134217728</mark_cache_size>
  <max_concurrent_queries>100</max_concurrent_queries>
  <users_config>$NODE/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <timezone>UTC</timezone>
  <remote_servers>$remote_servers</remote_servers>
  <zookeeper><node><host>127.0.0.1</host><port>$ZK_PORT</port></node><session_timeout_ms>10000</session_timeout_ms></zookeeper>
  <macros><shard>$shard</shard><replica>r$replica</replica><cluster>pulse</cluster></macros>
  <distributed_ddl><path>/clickhouse/task_queue/ddl</path></distributed_ddl>
</yandex>
XML
    cat > "$NODE/users.xml" <<XML
<?xml version="1.0"?>
<yandex>
  <profiles><default><max_memory_usage>2000000000</max_memory_usage><log_queries>1</log_queries></default></profiles>
  <users><default><password></password><networks><ip>127.0.0.1</ip><ip>::1</ip></networks><profile>default</profile><quota>default</quota></default></users>
  <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors><result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time></interval></default></quotas>
</yandex>
XML
    cat > "$NODE/start.sh" <<SH
#!/usr/bin/env bash
# Starts this node (again) and waits for it to answer.
clickhouse-server --config-file="$NODE/config.xml" >>"$NODE/log/stdout.log" 2>&1 &
echo \$! > "$NODE/pid"
for _ in \$(seq 1 120); do
  curl -fsS "http://127.0.0.1:$HTTP/ping" >/dev/null 2>&1 && exit 0
  sleep 0.25
done
echo "node $n (shard $shard replica $replica) did not answer on 127.0.0.1:$HTTP; see $NODE/log" >&2
exit 1
SH
    bash "$NODE/start.sh" &
    starting+=($!)
    printf '%s\t%s\t%s\t%s\t%s\n' "$shard" "$replica" "http://127.0.0.1:$HTTP" "$TCP" "$NODE" >> "$DIR/nodes.tsv"
  done
done
wait "${starting[@]}"

cat > "$DIR/stop.sh" <<SH
#!/usr/bin/env bash
# Stops every node and ZooKeeper, and waits until they are gone (SIGKILL after 20 s).
pids=\$(cat "$DIR"/node*/pid "$DIR"/zk/pid 2>/dev/null)
kill \$pids 2>/dev/null || true
for _ in \$(seq 1 40); do
  alive=0; for p in \$pids; do kill -0 "\$p" 2>/dev/null && alive=1; done
  [ "\$alive" = 0 ] && exit 0
  sleep 0.5
done
kill -9 \$pids 2>/dev/null || true
SH

# The cluster is up when every node sees ZooKeeper and the four replicas of the definition.
for _ in $(seq 1 60); do
  ok=1
  while IFS=$'\t' read -r _ _ url _ _; do
    got="$(curl -fsS "$url/?query=SELECT%20count()%20FROM%20system.clusters%20WHERE%20cluster%3D'pulse'" 2>/dev/null || true)"
    zk="$(curl -fsS "$url/?query=SELECT%20count()%20FROM%20system.zookeeper%20WHERE%20path%3D'/'" 2>/dev/null || true)"
    [ "$got" = "4" ] && [ -n "$zk" ] && [ "$zk" != "0" ] || ok=0
  done < "$DIR/nodes.tsv"
  [ "$ok" = 1 ] && { echo "$DIR"; exit 0; }
  sleep 0.5
done
echo "the ClickHouse cluster in $DIR did not come up; logs:" >&2
tail -5 "$DIR"/zk/*.log "$DIR"/node*/log/*.log >&2 || true
exit 1
