#!/usr/bin/env bash
# The BHR API on PostgreSQL, one and two nodes, against SQLite, in one run (root: it runs
# a private PostgreSQL cluster as user postgres, with fsync on, like a real server).
#
#   bench/pg.sh                 10 s per scenario, 64 connections
#   DURATION=30s bench/pg.sh
#
# Scenarios: new-block POSTs (a new /128 each), then queue polls (200 rows). With two
# nodes, one wrk drives each node at once (32 connections each) and the rates are added.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
DURATION=${DURATION:-10s}
CONNS=${CONNS:-64}
# shellcheck source=../x
source "$root/x"
cd "$root"
command -v wrk >/dev/null || apt-get -o DPkg::Lock::Timeout=600 install -y -q wrk >/dev/null
cargo build --release -q --bin catchd
CATCHD=$PWD/target/release/catchd
pg_start
# fsync on for the benchmark (pg_start's cluster is the test one: fsync default on).
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  pg_stop
  rm -rf "$work"
}
trap cleanup EXIT

start_node() { # db extra-args... -> sets ADDR (the node's address)
  local log
  log=$(mktemp -p "$work")
  "$CATCHD" serve --listen 127.0.0.1:0 --db "$@" >/dev/null 2>"$log" &
  pids+=($!)
  for _ in $(seq 100); do grep -q "Serving the BHR API on" "$log" && break; sleep 0.1; done
  ADDR=$(sed -n 's|.*Serving the BHR API on http://\([^/]*\)/bhr/api/.*|\1|p' "$log")
  [ -n "$ADDR" ] || { cat "$log" >&2; exit 1; }
}

rate() { awk '/^Requests\/sec:/ {print $2}'; }
p99() { awk '/^ +99%/ {print $2}'; }

wrk_run() { # script path token conns url... -> "rps p99" (rates summed over urls)
  local script=$1 path=$2 token=$3 conns=$4
  shift 4
  local outs=() i=0
  for u in "$@"; do
    TOKEN=$token wrk -t1 -c"$conns" -d"$DURATION" --timeout 10s --latency -s "$script" \
      "$u$path" >"$work/out$i" 2>&1 &
    outs+=($!)
    i=$((i + 1))
  done
  wait "${outs[@]}"
  local total=0 worst=
  for j in $(seq 0 $((i - 1))); do
    total=$(echo "$total + $(rate <"$work/out$j")" | bc -l)
    worst="$worst $(p99 <"$work/out$j")"
  done
  printf '%.0f %s' "$total" "$worst"
}

printf '%-22s %14s %-12s %14s %-12s\n' store "blocks/s" "p99" "queue polls/s" "p99"
for mode in sqlite pg1 pg2; do
  case $mode in
    sqlite) db=$work/bench.db; extra=() ;;
    pg1) "$PG_BIN/psql" -q "$PG_URL" -c "CREATE DATABASE b1"
         db=${PG_URL%/*}/b1; extra=() ;;
    pg2) "$PG_BIN/psql" -q "$PG_URL" -c "CREATE DATABASE b2"
         db=${PG_URL%/*}/b2
         printf '[server]\ncluster = true\n' >"$work/cluster.toml"
         extra=(--config "$work/cluster.toml") ;;
  esac
  blocker=$("$CATCHD" user add bench-blocker --role blocker --db "$db")
  manager=$("$CATCHD" user add bench-manager --role manager --db "$db")
  start_node "$db" "${extra[@]}"
  urls=("http://$ADDR")
  conns=$CONNS
  if [ "$mode" = pg2 ]; then
    start_node "$db" "${extra[@]}"
    urls+=("http://$ADDR")
    conns=$((CONNS / 2))
  fi
  read -r brate bp99 <<<"$(wrk_run bench/wrk/block.lua /bhr/api/block "$blocker" "$conns" "${urls[@]}")"
  read -r qrate qp99 <<<"$(wrk_run bench/wrk/get.lua /bhr/api/queue/bench-manager "$manager" "$conns" "${urls[@]}")"
  name=$mode
  case $mode in sqlite) name="SQLite, 1 node" ;; pg1) name="PostgreSQL, 1 node" ;; pg2) name="PostgreSQL, 2 nodes" ;; esac
  printf '%-22s %14s %-12s %14s %-12s\n' "$name" "$brate" "$bp99" "$qrate" "$qp99"
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  pids=()
done
