#!/usr/bin/env bash
# The event bus with a real Zeek on it (see bench/README.md, "The bus with Zeek"): events
# per second and one-way latency of NetControl::catch_release_encountered(addr) through
# `catchd proxy` on loopback, for each pair of publisher and subscriber among a Zeek
# node (ZeroMQ backend, bench/zeek-bus/*.zeek) and catchd's bus module
# (bench/bus_flood.rs, the code of `catchd run --bus`). Every event carries its send time
# as network-timestamp metadata, which the subscriber subtracts from its receive time.
#
#   bench/zeek_bus.sh               10k events at 1k/s (latency), 100k at 20k/s and
#   COUNT=200000 bench/zeek_bus.sh  100k/s, and 100k unpaced, for each of the four pairs
set -euo pipefail
cd "$(dirname "$0")/.."
COUNT=${COUNT:-100000}
ZEEK=${ZEEK:-$(command -v zeek || echo /opt/zeek/bin/zeek)}
[ -x "$ZEEK" ] || { echo "bench/zeek_bus.sh: no Zeek (set ZEEK=/path/to/zeek)" >&2; exit 2; }
cargo build --release -q --bin catchd
cargo bench --locked --bench bus_flood --no-run -q 2>/dev/null
FLOOD=$(ls -t target/release/deps/bus_flood-* | grep -v '\.d$' | head -1)
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
export BUS_XPUB=tcp://127.0.0.1:$(port)
export BUS_XSUB=tcp://127.0.0.1:$(port)
target/release/catchd proxy --xpub "$BUS_XPUB" --xsub "$BUS_XSUB" 2>/dev/null &
PROXY=$!
trap 'kill $PROXY 2>/dev/null; wait $PROXY 2>/dev/null || true' EXIT
sleep 0.3
Z=$PWD/bench/zeek-bus

# sub: zeek|catchd; pub: zeek|catchd; count; rate (0: unpaced)
run() {
  local sub=$1 pub=$2 n=$3 rate=$4 out sent r
  out=$(mktemp)
  if [ "$sub" = zeek ]; then
    (cd "$Z" && BENCH_COUNT=$n exec "$ZEEK" -b sub.zeek) >"$out" 2>/dev/null &
  else
    "$FLOOD" recv "$BUS_XPUB" "$n" >"$out" &
  fi
  r=$!
  for _ in $(seq 100); do grep -q ready "$out" && break; sleep 0.1; done
  sleep 0.5
  if [ "$pub" = zeek ]; then
    sent=$(cd "$Z" && BENCH_COUNT=$n BENCH_RATE=$rate "$ZEEK" -b pub.zeek 2>&1 | grep sent)
  else
    sent=$("$FLOOD" send "$BUS_XSUB" "$n" "$rate" 2>&1)
  fi
  wait $r || true
  printf '| %s → %s | %s | %s | %s | %s |\n' "$pub" "$sub" "$n" "${rate/#0/unpaced}" \
    "$(grep received "$out" | tail -1)" "$sent"
  rm -f "$out"
}

echo "$(date -u +%Y-%m-%d), $(nproc) cores, $("$ZEEK" --version 2>&1 | head -1)"
echo
echo "| publisher → subscriber | events | rate/s | subscriber | publisher |"
echo "|---|---|---|---|---|"
for pair in "zeek zeek" "catchd zeek" "zeek catchd" "catchd catchd"; do
  set -- $pair
  run "$1" "$2" 10000 1000
  run "$1" "$2" "$COUNT" 20000
  run "$1" "$2" "$COUNT" 100000
  run "$1" "$2" "$COUNT" 0
done
