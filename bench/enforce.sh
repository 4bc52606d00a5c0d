#!/usr/bin/env bash
# Enforcement benchmark (see bench/README.md). Needs root: everything runs in a network
# namespace the script creates and deletes, so the host's firewall is never touched.
#
#   bench/enforce.sh              10 000 blocks, 30 latency samples, nftables and iptables
#   COUNT=50000 bench/enforce.sh
set -euo pipefail
cd "$(dirname "$0")/.."
COUNT=${COUNT:-10000}
SAMPLES=${SAMPLES:-30}
need=()
for t in nft:nftables iptables:iptables python3:python3; do
  command -v "${t%%:*}" >/dev/null || need+=("${t##*:}")
done
if [ ${#need[@]} -gt 0 ]; then
  apt-get -o DPkg::Lock::Timeout=600 install -y -q "${need[@]}" >/dev/null
fi
cargo build --release -q --bin catchd
CATCHD=$PWD/target/release/catchd

for backend in nftables iptables; do
  work=$(mktemp -d)
  NS=cdenf$$
  ip netns add "$NS"
  ip -n "$NS" link set lo up
  pids=()
  cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
    ip netns del "$NS" 2>/dev/null || true
    rm -rf "$work"
  }
  trap cleanup EXIT
  ADMIN=$("$CATCHD" user add adm --role admin --db "$work/db")
  MGR=$("$CATCHD" user add fw --role manager --db "$work/db")
  ip netns exec "$NS" "$CATCHD" serve --db "$work/db" --listen 127.0.0.1:8000 2>"$work/serve.log" &
  pids+=($!)
  until ip netns exec "$NS" python3 -c 'import urllib.request; urllib.request.urlopen("http://127.0.0.1:8000/bhr/api/stats")' 2>/dev/null; do sleep 0.1; done
  ip netns exec "$NS" "$CATCHD" manager --server http://127.0.0.1:8000 --token "$MGR" --ident fw \
    --backend "$backend" 2>"$work/manager.log" &
  pids+=($!)
  until grep -q Reconciled "$work/manager.log"; do sleep 0.1; done
  echo "== $backend"
  ip netns exec "$NS" python3 bench/enforce_probe.py http://127.0.0.1:8000 "$ADMIN" "$MGR" "$backend" "$COUNT" "$SAMPLES"
  cleanup
  trap - EXIT
done
