#!/usr/bin/env bash
# BGP black-holing benchmark (see bench/README.md, "BGP"). Needs root: a border router
# (BIRD) in a network namespace the script creates and deletes, ExaBGP peering with it
# from the root namespace, and `catchd serve` as the BHR server. For each block manager,
# catchd's (`catchd manager --backend exabgp`) and the original's algorithm
# (bench/bgp_original.py: bhr-client's BlockManager writing bhr-client-exabgp's lines),
# run as ExaBGP's process in the same run: single blocks from the API call to the route in
# the router's kernel (p50/p99), then COUNT blocks (blocks/s, p50/p99).
#
#   bench/bgp.sh                  10 000 blocks, 20 single samples
#   COUNT=2000 SAMPLES=10 bench/bgp.sh
#   CATCHD_FLAGS="--batch 200" CATCHD_ENV="RUST_LOG=catchd=warn" bench/bgp.sh
#                                 (catchd's manager with other flags or environment)
set -euo pipefail
cd "$(dirname "$0")/.."
COUNT=${COUNT:-10000}
SAMPLES=${SAMPLES:-20}
need=()
command -v exabgp >/dev/null || need+=(exabgp)
command -v bird >/dev/null || need+=(bird2)
python3 -c 'import ensurepip' 2>/dev/null || need+=(python3-venv)
if [ ${#need[@]} -gt 0 ]; then
  apt-get -o DPkg::Lock::Timeout=600 install -y -q "${need[@]}" >/dev/null
fi
VENV=$PWD/target/tmp/bhr-client-venv
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q 'bhr-client[cli]==1.6'
fi
cargo build --release -q --bin catchd
CATCHD=$PWD/target/release/catchd

RTR=cdbgpb$$
HOSTIF=cdbgph$$
run_one() { # name, process command line, extra environment
  local name=$1 process=$2 extra_env=$3 work
  work=$(mktemp -d)
  chmod 755 "$work"
  pids=()
  cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
    ip netns del "$RTR" 2>/dev/null || true
    ip link del "$HOSTIF" 2>/dev/null || true
    rm -rf "$work"
  }
  trap cleanup EXIT
  ip netns add "$RTR"
  ip link add "$HOSTIF" type veth peer name rtr0
  ip link set rtr0 netns "$RTR"
  ip addr add 10.212.0.2/24 dev "$HOSTIF"
  ip link set "$HOSTIF" up
  ip -n "$RTR" addr add 10.212.0.1/24 dev rtr0
  ip -n "$RTR" link set rtr0 up
  ip -n "$RTR" link set lo up
  cat >"$work/bird.conf" <<EOT
router id 10.212.0.1;
protocol device {}
filter to_kernel { if (65535, 666) ~ bgp_community then dest = RTD_BLACKHOLE; accept; }
protocol kernel { ipv4 { import none; export filter to_kernel; }; }
protocol bgp exa { local 10.212.0.1 as 65001; neighbor 10.212.0.2 as 65001; direct;
  ipv4 { import where (65535, 666) ~ bgp_community; export none; }; }
EOT
  ip netns exec "$RTR" bird -f -c "$work/bird.conf" -s "$work/bird.ctl" &
  pids+=($!)
  ADMIN=$("$CATCHD" user add adm --role admin --db "$work/db")
  MGR=$("$CATCHD" user add bgp --role manager --db "$work/db")
  "$CATCHD" serve --db "$work/db" --listen 127.0.0.1:18099 2>"$work/serve.log" &
  pids+=($!)
  until python3 -c 'import urllib.request; urllib.request.urlopen("http://127.0.0.1:18099/bhr/api/stats")' 2>/dev/null; do sleep 0.1; done
  cat >"$work/exabgp.conf" <<EOT
process bhr { run $process; encoder text; }
neighbor 10.212.0.1 { router-id 10.212.0.2; local-address 10.212.0.2; local-as 65001; peer-as 65001;
  family { ipv4 unicast; } api { processes [ bhr ]; } }
EOT
  env exabgp.daemon.user=root exabgp.log.destination=stdout exabgp.api.cli=false $extra_env \
    BHR_HOST=http://127.0.0.1:18099 BHR_TOKEN="$MGR" BHR_IDENT=bgp \
    exabgp "$work/exabgp.conf" >"$work/exabgp.log" 2>&1 &
  pids+=($!)
  until birdc -s "$work/bird.ctl" show protocols 2>/dev/null | grep -q Established; do sleep 0.2; done
  echo "== $name"
  python3 bench/bgp_probe.py http://127.0.0.1:18099 "$ADMIN" "$RTR" "$COUNT" "$SAMPLES"
  cleanup
  trap - EXIT
}

echo "$(date -u +%Y-%m-%d), $(nproc) cores, $(exabgp --version 2>&1 | head -1), $(bird --version 2>&1)"
run_one "catchd manager --backend exabgp" "$CATCHD manager --backend exabgp ${CATCHD_FLAGS:-}" "${CATCHD_ENV:-}"
run_one "original algorithm (bhr-client BlockManager, batches of 50)" \
  "$VENV/bin/python $PWD/bench/bgp_original.py" "exabgp.api.ack=false"
