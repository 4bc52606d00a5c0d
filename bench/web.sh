#!/usr/bin/env bash
# Whole-process load test of the web pages of `catchd serve` over loopback with wrk, next
# to the API answers that carry the same rows (the pages render the same registry reads
# as HTML, so the API is their natural yardstick; the original BHR's pages were not
# measured, bhr.md §11.3).
#
#   bench/web.sh                       defaults: 10 s per scenario, 64 connections, 2 threads
#
# About 1,500 expected blocks, 256 of them in 192.0.2.0/24 (as bench/bhr_api.sh):
#   limited-query-256  /bhr/limited/query?query=192.0.2.0/24    vs  /bhr/api/query/192.0.2.0/24
#   limited-query-text /bhr/limited/query?query=scanner (a substring of why over every block)
#   list               /bhr/list, signed in (manual, local and 50 automated)  vs /bhr/list.csv
#   stats              /bhr/stats                                vs  /bhr/api/stats
# wrk runs on the same two cores as the server: the numbers are for the pair.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10s}
CONNS=${CONNS:-64}
THREADS=${THREADS:-2}
command -v wrk >/dev/null || {
  sudo=()
  [ "$(id -u)" = 0 ] || sudo=(sudo)
  "${sudo[@]}" apt-get -o DPkg::Lock::Timeout=600 install -y -q wrk curl >/dev/null
}

cargo build --release -q --bin catchd
CATCHD=$PWD/target/release/catchd
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
cat >"$work/c.toml" <<'TOML'
[bhr]
unauthenticated_limited_query = true
TOML
BLOCKER=$("$CATCHD" user add bench-blocker --role blocker --db "$DB")
echo bench-password | "$CATCHD" user add bench-person --role user --password-stdin --db "$DB" >/dev/null
"$CATCHD" serve --listen 127.0.0.1:0 --db "$DB" --config "$work/c.toml" 2>"$work/serve.log" &
pid=$!
for _ in $(seq 100); do
  grep -q "Serving the BHR API on" "$work/serve.log" && break
  sleep 0.1
done
ADDR=$(sed -n 's|.*Serving the BHR API on http://\([^/]*\)/bhr/api/.*|\1|p' "$work/serve.log")
[ -n "$ADDR" ] || { cat "$work/serve.log" >&2; exit 1; }
URL=http://$ADDR
echo "catchd serve on $URL; wrk -t$THREADS -c$CONNS -d$DURATION" >&2

python3 - "$URL" "$BLOCKER" <<'PY'
import json, sys, urllib.request
url, token = sys.argv[1], sys.argv[2]
def mblock(recs):
    req = urllib.request.Request(url + "/bhr/api/mblock", data=json.dumps(recs).encode(),
        headers={"Authorization": "Token " + token, "Content-Type": "application/json"})
    urllib.request.urlopen(req).read()
mblock([{"cidr": "192.0.2.%d" % i, "source": "seed", "why": "ssh scanner <%d>" % i, "duration": "1d"} for i in range(256)])
for k in range(13):
    mblock([{"cidr": "10.%d.%d.1" % (k, i), "source": "cli" if i % 10 == 0 else "seed",
             "why": "w", "duration": "1d"} for i in range(100)])
PY

# A session: the sign-in form's CSRF cookie and field, then the session cookie.
jar=$work/jar
curl -sf -c "$jar" -b "$jar" "$URL/accounts/login/" -o "$work/login.html"
csrf=$(sed -n 's/.*name="csrfmiddlewaretoken" value="\([0-9a-f]*\)".*/\1/p' "$work/login.html" | head -1)
curl -sf -c "$jar" -b "$jar" -o /dev/null \
  -d "csrfmiddlewaretoken=$csrf&username=bench-person&password=bench-password" "$URL/accounts/login/"
SESSION=$(awk '$6 == "catchd_session" {print "catchd_session=" $7}' "$jar")
[ -n "$SESSION" ] || { echo "sign-in failed" >&2; exit 1; }

results=()
run() {
  local name=$1 script=$2 path=$3 out rps p50 p99 errors
  out=$(wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --timeout 10s --latency -s "$script" "$URL$path" 2>&1)
  rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
  p50=$(awk '/^ +50%/ {print $2}' <<<"$out")
  p99=$(awk '/^ +99%/ {print $2}' <<<"$out")
  errors=$(awk '/Non-2xx or 3xx responses:/ {printf "non-2xx %s ", $5}' <<<"$out")
  grep -q "unexpected status" <<<"$out" && errors="$errors$(grep -m1 'unexpected status' <<<"$out" | cut -c1-200)"
  results+=("$name|$rps|$p50|$p99|${errors:--}")
  printf '%-20s %10s req/s  p50 %-9s p99 %-9s %s\n' "$name" "$rps" "$p50" "$p99" "$errors" >&2
}
bytes() { curl -s -o /dev/null -w '%{size_download}' -H "Cookie: $SESSION" -H "Authorization: Token $2" "$URL$1"; }

run limited-query-256 bench/wrk/get.lua "/bhr/limited/query?query=192.0.2.0/24"
TOKEN=$BLOCKER run api-query-256 bench/wrk/get.lua /bhr/api/query/192.0.2.0/24
run limited-query-text bench/wrk/get.lua "/bhr/limited/query?query=scanner"
COOKIE=$SESSION run list bench/wrk/get.lua /bhr/list
TOKEN=$BLOCKER run list.csv bench/wrk/get.lua /bhr/list.csv
run stats bench/wrk/get.lua /bhr/stats
run api-stats bench/wrk/get.lua /bhr/api/stats

echo
echo "| scenario | requests/s | p50 | p99 |"
echo "|---|---:|---:|---:|"
declare -A rate
for r in "${results[@]}"; do
  IFS='|' read -r name rps p50 p99 errors <<<"$r"
  rate[$name]=$rps
  echo "| $name | $rps | $p50 | $p99 |"
done
echo
ratio() { awk -v a="${rate[$1]}" -v b="${rate[$2]}" 'BEGIN { printf "%.2f", a / b }'; }
echo "page / API: query-256 $(ratio limited-query-256 api-query-256)×, list vs list.csv $(ratio list list.csv)×, stats $(ratio stats api-stats)×"
echo "bytes: limited query-256 $(bytes '/bhr/limited/query?query=192.0.2.0/24' x), list $(bytes /bhr/list x), api query-256 $(bytes /bhr/api/query/192.0.2.0/24 "$BLOCKER")"
bad=$(printf '%s\n' "${results[@]}" | awk -F'|' '$5 != "-" {print $1 ": " $5}')
echo "errors: ${bad:-none}"
