#!/usr/bin/env bash
# The simulator's request rate on the national scenario, measured with wrk (Debian's package).
#
#   bash benches/sim-request-rate.sh [seconds]      # writes benches/results/sim-request-rate.md
#
# Requests are what the ingester sends: 30-day daily insights for 3 metrics on a rotating page (4,200 pages), plus
# a reference run against `debug_token` (no world generation) in the same session, so the result is a ratio too.
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/common.sh
SECS="${1:-15}"
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
bench_build pulse
WORK="$(mktemp -d)"
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
"${CARGO_TARGET_DIR:-target}"/release/pulse sim --scenario national --port "$PORT" --tokens-out "$WORK/tokens.toml" 2>"$WORK/sim.log" &
SIM=$!
trap 'kill $SIM 2>/dev/null || true' EXIT
for _ in $(seq 1 50); do curl -fsS "http://127.0.0.1:$PORT/_sim/truth" -o /dev/null 2>/dev/null && break; sleep 0.2; done
python3 - "$WORK/tokens.toml" "$WORK/insights.lua" <<'PY'
import sys, tomllib
tokens = tomllib.load(open(sys.argv[1], "rb"))
pages = list(tokens.items())
with open(sys.argv[2], "w") as f:
    f.write("local pages = {\n")
    for pid, tok in pages:
        f.write(f'  {{"{pid}", "{tok}"}},\n')
    f.write("}\n")
    f.write("""
local i = 0
request = function()
  i = i + 1
  local p = pages[(i % #pages) + 1]
  local month = (i % 11) + 1
  local path = string.format("/v25.0/%s/insights?metric=page_media_view,page_total_media_view_unique,page_post_engagements&period=day&since=2026-%02d-01&until=2026-%02d-01", p[1], month, month + 1)
  return wrk.format("GET", path, {["Authorization"] = "Bearer " .. p[2]})
end
""")
PY
FIRST_TOKEN="$(head -1 "$WORK/tokens.toml" | cut -d'"' -f4)"
echo "reference: debug_token" >&2
REF="$(wrk -t2 -c32 -d"${SECS}s" "http://127.0.0.1:$PORT/v25.0/debug_token?input_token=$FIRST_TOKEN" | tee /dev/stderr)"
echo "insights: 30 days x 3 metrics, rotating over all pages" >&2
RUN="$(wrk -t2 -c32 -d"${SECS}s" -s "$WORK/insights.lua" "http://127.0.0.1:$PORT" | tee /dev/stderr)"
rate() { echo "$1" | awk '/Requests\/sec/ {print $2}'; }
REF_RATE="$(rate "$REF")"; RUN_RATE="$(rate "$RUN")"
RATIO="$(python3 -c "print(f'{$RUN_RATE/$REF_RATE:.2f}')")"
PAGES="$(grep -c . "$WORK/tokens.toml")"
ROWS_PER_REQ=90
ROWS="$(python3 -c "print(int($RUN_RATE*$ROWS_PER_REQ))")"
cat > benches/results/sim-request-rate.md <<MD
# Simulator request rate (national scenario)

Recorded $(date -u +%Y-%m-%d) on this machine ($(nproc) cores) with \`bash benches/sim-request-rate.sh $SECS\`.
wrk: 2 threads, 32 connections, ${SECS}s per run, simulator and wrk on the same 2 cores.

| run | requests/s |
|---|---|
| reference: \`debug_token\` (no world generation) | $REF_RATE |
| insights: 30 days × 3 metrics (day), rotating over $PAGES pages | $RUN_RATE |
| ratio insights / reference | $RATIO |

Each insights response carries 90 values, so the simulator serves about $ROWS fact rows per second. The ingester's
throughput into ClickHouse (issue 4) is compared with this number: the simulator must never be the bottleneck.

<details><summary>wrk output</summary>

\`\`\`
$REF
\`\`\`

\`\`\`
$RUN
\`\`\`
</details>
MD
echo "recorded benches/results/sim-request-rate.md: $RUN_RATE req/s (reference $REF_RATE, ratio $RATIO)"
