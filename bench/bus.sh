#!/usr/bin/env bash
# Event-bus benchmark (see bench/README.md): a publishing and a receiving process, both
# on catchd's bus module (bench/bus_flood.rs), through `catchd proxy` on loopback.
# Events are catch_release_encountered(addr) in broker-bin-v1, each stamped with its
# send time, so the receiver measures one-way latency.
#
#   bench/bus.sh                    1M events at 200k/s and 250k/s, then unpaced;
#                                   10k events at 1k/s for latency
#   COUNT=2000000 bench/bus.sh
set -euo pipefail
cd "$(dirname "$0")/.."
COUNT=${COUNT:-1000000}
cargo build --release -q --bin catchd
cargo bench --locked --bench bus_flood --no-run -q 2>/dev/null
FLOOD=$(ls -t target/release/deps/bus_flood-* | grep -v '\.d$' | head -1)
CATCHD=$PWD/target/release/catchd
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
XPUB=tcp://127.0.0.1:$(port)
XSUB=tcp://127.0.0.1:$(port)
"$CATCHD" proxy --xpub "$XPUB" --xsub "$XSUB" 2>/dev/null &
PROXY=$!
trap 'kill $PROXY 2>/dev/null; wait $PROXY 2>/dev/null || true' EXIT
sleep 0.3

run() { # count rate
  local out
  out=$(mktemp)
  "$FLOOD" recv "$XPUB" "$1" >"$out" &
  local r=$!
  until grep -q ready "$out"; do sleep 0.05; done
  local sent
  sent=$("$FLOOD" send "$XSUB" "$1" "$2" 2>&1)
  wait $r
  printf '%-9s %-10s %s; sender: %s\n' "$1" "${2/#0/unpaced}" "$(tail -1 "$out")" "$sent"
  rm -f "$out"
}

echo "events    rate/s     result"
run 10000 1000
run "$COUNT" 200000
run "$COUNT" 250000
run "$COUNT" 0
