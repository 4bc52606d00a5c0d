#!/usr/bin/env bash
# Whole-process load test of `catchd serve` (the BHR API) over loopback with wrk, with
# durable writes (SQLite WAL, synchronous=FULL, an answer only after its commit).
#
#   bench/bhr_api.sh                   defaults: 10 s per scenario, 64 connections, 2 threads
#   DURATION=30s CONNS=128 bench/bhr_api.sh
#   CATCHD=/other/catchd bench/bhr_api.sh   the same with another build
#
# Three phases on one database:
#   1. reads with about 1,500 expected blocks, as in the original's measurements:
#      stats, queue (200 rows), query of a /24 holding 256 blocks, expected_blocks,
#      list.csv
#   2. writes: block (a new /128 each, the form bhr-client's block() sends), mblock of 100
#      new records (JSON, as mblock()), and one network requested again and again
#      (a duplicate each time)
#   3. stats and queue again on the registry phase 2 grew
# For each: requests/s, p50 and p99 latency, and the ratio to the original BHR
# (bhr.md §11.3: Django + PostgreSQL on the same kind of 2-core machine; best of its runs).
# wrk runs on the same two cores as the server: the numbers are for the pair.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10s}
CONNS=${CONNS:-64}
THREADS=${THREADS:-2}

need=()
command -v wrk >/dev/null || need+=(wrk)
command -v curl >/dev/null || need+=(curl)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]}" >&2
  sudo=()
  [ "$(id -u)" = 0 ] || sudo=(sudo)
  "${sudo[@]}" apt-get -o DPkg::Lock::Timeout=600 install -y -q "${need[@]}" >/dev/null
fi

# CATCHD=/path/to/catchd compares another build (an older commit's) on the same machine.
if [ -z "${CATCHD:-}" ]; then
  cargo build --release -q --bin catchd
  CATCHD=$PWD/target/release/catchd
fi
work=$(mktemp -d)
pid=
cleanup() {
  if [ -n "$pid" ]; then
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

DB=$work/bench.db
BLOCKER=$("$CATCHD" user add bench-blocker --role blocker --db "$DB")
MANAGER=$("$CATCHD" user add bench-manager --role manager --db "$DB")
"$CATCHD" serve --listen 127.0.0.1:0 --db "$DB" 2>"$work/serve.log" &
pid=$!
for _ in $(seq 100); do
  grep -q "Serving the BHR API on" "$work/serve.log" && break
  sleep 0.1
done
ADDR=$(sed -n 's|.*Serving the BHR API on http://\([^/]*\)/bhr/api/.*|\1|p' "$work/serve.log")
[ -n "$ADDR" ] || { cat "$work/serve.log" >&2; exit 1; }
URL=http://$ADDR
echo "catchd serve on $URL; wrk -t$THREADS -c$CONNS -d$DURATION" >&2

results=()
# run NAME SCRIPT PATH TOKEN: one wrk scenario; records "name|rps|p50|p99|errors".
run() {
  local name=$1 script=$2 path=$3 token=$4 out rps p50 p99 errors
  out=$(TOKEN=$token wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --timeout 10s --latency \
    -s "$script" "$URL$path" 2>&1)
  echo "$out" >"$work/$name.wrk"
  rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
  p50=$(awk '/^ +50%/ {print $2}' <<<"$out")
  p99=$(awk '/^ +99%/ {print $2}' <<<"$out")
  errors=$(awk '/Non-2xx or 3xx responses:/ {printf "non-2xx %s ", $5}
                /Socket errors:/ {$1 = $2 = ""; printf "socket%s ", $0}' <<<"$out")
  if grep -q "unexpected status" <<<"$out"; then
    errors="$errors$(grep -m1 'unexpected status' <<<"$out" | cut -c1-200)"
  fi
  results+=("$name|$rps|$p50|$p99|${errors:--}")
  printf '%-16s %10s req/s  p50 %-9s p99 %-9s %s\n' "$name" "$rps" "$p50" "$p99" "$errors" >&2
}
expected() { curl -sf "$URL/bhr/api/stats" | sed -n 's/.*"expected":\([0-9]*\).*/\1/p'; }

# 1. About 1,500 expected blocks (256 of them in 203.0.113.0/24; not 192.0.2.0/24, which
#    may hold this host's own address, never blocked).
python3 - "$URL" "$BLOCKER" <<'PY'
import json, sys, urllib.request
url, token = sys.argv[1], sys.argv[2]
def mblock(recs):
    req = urllib.request.Request(url + "/bhr/api/mblock", data=json.dumps(recs).encode(),
        headers={"Authorization": "Token " + token, "Content-Type": "application/json"})
    urllib.request.urlopen(req).read()
mblock([{"cidr": "203.0.113.%d" % i, "source": "seed", "why": "w", "duration": "1d"} for i in range(256)])
for k in range(13):
    mblock([{"cidr": "10.%d.%d.1" % (k, i), "source": "seed", "why": "w", "duration": "1d"}
            for i in range(100)])
PY
SMALL=$(expected)
run stats bench/wrk/get.lua /bhr/api/stats ""
run queue bench/wrk/get.lua /bhr/api/queue/bench-poll "$MANAGER"
run query-256 bench/wrk/get.lua /bhr/api/query/203.0.113.0/24 "$BLOCKER"
run expected_blocks bench/wrk/get.lua /bhr/api/expected_blocks/ "$BLOCKER"
run list.csv bench/wrk/get.lua /bhr/list.csv "$BLOCKER"

# 2. Durable writes.
run block bench/wrk/block.lua /bhr/api/block "$BLOCKER"
run mblock bench/wrk/mblock.lua /bhr/api/mblock "$BLOCKER"
curl -sf -o /dev/null -H "Authorization: Token $BLOCKER" \
  -d 'cidr=198.51.100.7&source=dup&why=x&duration=3600' "$URL/bhr/api/block"
run block-duplicate bench/wrk/duplicate.lua /bhr/api/block "$BLOCKER"

# 3. Reads on the grown registry.
LARGE=$(expected)
run stats-large bench/wrk/get.lua /bhr/api/stats ""
rows=$(curl -sf -H "Authorization: Token $MANAGER" "$URL/bhr/api/queue/bench-poll" | grep -o '"id":' | wc -l)
[ "$rows" = 200 ] || { echo "queue returned $rows rows, not 200" >&2; exit 1; }
run queue-large bench/wrk/get.lua /bhr/api/queue/bench-poll "$MANAGER"

dbsize=$(du -ch "$DB"* | awk '/total/ {print $1}')
kill "$pid"
wait "$pid" || true
pid=

declare -A ref=([stats]=109 [queue]=59 [query-256]=32 [expected_blocks]=16 [list.csv]=31
  [block]=87 [mblock]=3.2 [block-duplicate]=93 [stats-large]=109 [queue-large]=59)
echo
echo "| scenario | requests/s | p50 | p99 | original BHR | ratio |"
echo "|---|---:|---:|---:|---:|---:|"
for r in "${results[@]}"; do
  IFS='|' read -r name rps p50 p99 errors <<<"$r"
  ratio=$(awk -v a="$rps" -v b="${ref[$name]}" 'BEGIN { printf "%.0f×", a / b }')
  echo "| $name | $rps | $p50 | $p99 | ${ref[$name]} | $ratio |"
done
echo
echo "expected blocks: $SMALL in phase 1, $LARGE in phase 3; database files at the end: $dbsize"
bad=$(printf '%s\n' "${results[@]}" | awk -F'|' '$5 != "-" {print $1 ": " $5}')
echo "errors: ${bad:-none}"
