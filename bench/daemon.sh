#!/usr/bin/env bash
# Whole-daemon benchmark of `catchd run` with live capture over a veth pair (see
# bench/README.md). Needs root (network namespaces).
#
#   bench/daemon.sh                 defaults: 1 000 000 watched addresses
#   WATCH=100000 bench/daemon.sh
#
# 1. drops WATCH addresses (bench/out/watch<N>.csv, 4 000 of them sources in big.pcap) plus
#    300 probe addresses through the catch-and-release API, in lists of 20 000, with
#    intervals 1s,1h,24h,7d: after a second every address is released and watched;
# 2. memory: the daemon's resident set with everything watched;
# 3. latency: for each probe address, one UDP datagram from a network namespace over the
#    veth pair, until a block manager's long poll of queue/<ident> returns its new block;
# 4. throughput: tcpreplay --topspeed of bench/out/big.pcap (1M packets) out of the
#    namespace while the daemon captures with everything watched; captured vs sent, and
#    libpcap's kernel and interface drop counters.
set -euo pipefail
cd "$(dirname "$0")/.."
WATCH=${WATCH:-1000000}
OUT=bench/out
mkdir -p "$OUT"

need=()
command -v tcpreplay >/dev/null || need+=(tcpreplay)
command -v python3 >/dev/null || need+=(python3)
command -v curl >/dev/null || need+=(curl)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]}" >&2
  apt-get -o DPkg::Lock::Timeout=600 install -y -q "${need[@]}" >/dev/null
fi
cargo build --release -q --bin catchd --example pcapgen
CATCHD=$PWD/target/release/catchd
[ -f "$OUT/big.pcap" ] || target/release/examples/pcapgen big "$OUT/big.pcap" --packets 1000000
WATCHCSV=$OUT/watch$WATCH.csv
if [ ! -f "$WATCHCSV" ]; then
  target/release/examples/pcapgen big "$OUT/tiny.pcap" --packets 1 --watch "$WATCH" --drops "$WATCHCSV"
  rm -f "$OUT/tiny.pcap"
fi

work=$(mktemp -d)
NS=cdbench$$
RIF=cdbr$$
NIF=cdbn$$
pid=
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  ip netns del "$NS" 2>/dev/null || true
  ip link del "$RIF" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

ip netns add "$NS"
ip link add "$RIF" type veth peer name "$NIF"
ip link set "$NIF" netns "$NS"
echo 1 >"/proc/sys/net/ipv6/conf/$RIF/disable_ipv6"
ip link set "$RIF" up
ip -n "$NS" link set lo up
ip -n "$NS" addr add 10.250.255.254/16 dev "$NIF"
ip -n "$NS" link set "$NIF" up
ip -n "$NS" neigh add 10.250.255.1 lladdr "$(cat /sys/class/net/$RIF/address)" dev "$NIF" nud permanent
# The probe addresses, so that the namespace can send from them.
for i in $(seq 0 299); do
  echo "addr add 10.250.$((1 + i / 250)).$((1 + i % 250))/32 dev $NIF"
done | ip -n "$NS" -batch -

DB=$work/bench.db
TOKEN=$("$CATCHD" user add bench --role user --db "$DB")
cat >"$work/catchd.toml" <<EOF
[capture]
interfaces = ["$RIF"]
buffer_size = 134217728
[cnr]
intervals = "1s,1h,24h,7d"
EOF
"$CATCHD" run --config "$work/catchd.toml" --db "$DB" --log-dir "$work/logs" \
  --listen 127.0.0.1:0 2>"$work/run.log" &
pid=$!
for _ in $(seq 100); do
  grep -q "catchd running" "$work/run.log" && break
  sleep 0.1
done
ADDR=$(sed -n 's|.*BHR API on http://\([^/]*\)/bhr/api/.*|\1|p' "$work/run.log")
[ -n "$ADDR" ] || { cat "$work/run.log" >&2; exit 1; }
URL=http://$ADDR
rss() { awk '/VmRSS/ {printf "%.0f MB", $2 / 1024}' "/proc/$pid/status"; }
metric() { curl -sf "$URL/metrics" | awk -v m="$1" '$1 ~ "^"m {print $2; exit}'; }
echo "catchd run on $URL, capturing on $RIF; resident at start: $(rss)"

# 1. The watch list and the probes.
python3 - "$work/probes.csv" <<'PY'
import sys
with open(sys.argv[1], "w") as f:
    f.write("ts,addr,location\n")
    for i in range(300):
        f.write(",10.250.%d.%d,probe\n" % (1 + i // 250, 1 + i % 250))
PY
python3 bench/daemon_probe.py drop "$URL" "$TOKEN" "$WATCHCSV"
python3 bench/daemon_probe.py drop "$URL" "$TOKEN" "$work/probes.csv"
sleep 2
WATCHED=$(metric catchd_cnr_watched)
echo "watched: $WATCHED; resident with all watched (registry holding their blocks too): $(rss)"

# 3. Latency, with nothing else going on.
python3 bench/daemon_probe.py latency "$URL" "$TOKEN" "$NS" 10.250.255.1 300 10.250

# 4. Throughput.
before=$(metric 'catchd_capture_packets_total')
ip netns exec "$NS" tcpreplay -i "$NIF" --topspeed "$OUT/big.pcap" 2>&1 | grep -E "Actual|Rated|Failed" || true
sleep 3
after=$(metric 'catchd_capture_packets_total')
echo "captured $((after - before)) packets; kernel drops $(metric catchd_capture_kernel_drops_total), interface drops $(metric catchd_capture_interface_drops_total), channel drops $(metric catchd_capture_channel_drops_total)"
echo "sightings sent to the engine: $(metric catchd_capture_sightings_total); SEEN_AGAIN: $(curl -sf "$URL/metrics" | awk '/action="SEEN_AGAIN"/ {print $2}')"
echo "resident at the end: $(rss)"
