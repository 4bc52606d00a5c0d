#!/usr/bin/env bash
# Side by side: `catchd replay` against `zeek -b -r` with only NetControl, catch-and-release
# and the debug plugin loaded, on the same trace and the same drops, each pinned to one
# core, in the same run (see bench/README.md, "catchd and Zeek").
#
#   bench/zeek.sh [ROUNDS]          (default 3)
#
# The trace is bench/out/big.pcap (1M packets, made by bench/replay.sh's generator if
# missing). Drops: the first 100, and all 100 000, addresses of bench/out/watch100k.csv,
# made at the first packet (Zeek: direct calls in a `network_time_init` handler, written
# into the driver script). For each side: whole-process wall time and peak memory
# (median of ROUNDS), the same on a one-packet trace with the same drops (start-up, the
# driver's parse and the drops themselves), and the packet phase (the difference), as
# ratios catchd/Zeek. Whether the two wrote the same lines (sorted) is reported too. They
# could differ where Zeek's connection life cycle (connection_attempt 5 s after an
# unanswered SYN, one UDP connection per 5-tuple, connection_pending at the end) makes
# sightings that catchd's per-packet rule does not (see tests/it/zeek/). With the default
# ladder nothing is released within this 62 s trace, so here they agree.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-${ROUNDS:-3}}
OUT=bench/out
mkdir -p "$OUT"

ZEEK=${ZEEK:-$(command -v zeek || echo /opt/zeek/bin/zeek)}
if [ ! -x "$ZEEK" ]; then
  for d in ../shared/zeek /work/shared/zeek; do
    [ -x "$d/install.sh" ] && ZEEK=$("$d/install.sh") && break
  done
fi
[ -x "$ZEEK" ] || { echo "bench/zeek.sh: no Zeek (set ZEEK=/path/to/zeek)" >&2; exit 2; }
command -v /usr/bin/time >/dev/null || apt-get -o DPkg::Lock::Timeout=600 install -y -q time >/dev/null

cargo build --release -q --bin catchd --example pcapgen
CATCHD=$PWD/target/release/catchd
PCAP=$PWD/$OUT/big.pcap
WATCH=$OUT/watch100k.csv
if [ ! -f "$PCAP" ] || [ ! -f "$WATCH" ]; then
  echo "generating $PCAP and $WATCH" >&2
  target/release/examples/pcapgen big "$PCAP" --packets 1000000 --watch 100000 --drops "$WATCH"
fi
ONE=$PWD/$OUT/one.pcap
[ -f "$ONE" ] || tcpdump -r "$PCAP" -c 1 -w "$ONE" 2>/dev/null
PIN=()
command -v taskset >/dev/null && PIN=(taskset -c "$(($(nproc) - 1))")
LADDER="10m,1h,24h,7d"

# drops CSV (ts empty: at the first packet) → a Zeek driver calling the same drops.
driver() {
  {
    echo '@load base/frameworks/netcontrol'
    echo '@load policy/frameworks/netcontrol/catch-and-release'
    echo 'event NetControl::init() { NetControl::activate(NetControl::create_debug(T), 0); }'
    echo 'event network_time_init() {'
    tail -n +2 "$1" | awk -F, '{ a = $2; if (index(a, ":")) a = "[" a "]";
      printf "  NetControl::drop_address_catch_release(%s, \"%s\");\n", a, $3 }'
    echo '}'
  } >"$2"
}

# Runs "$@" in directory $1, printing "wall_s peak_kib".
measure() {
  local dir=$1
  shift
  rm -rf "$dir" && mkdir -p "$dir"
  (cd "$dir" && /usr/bin/time -f "%e %M" -o time.txt "${PIN[@]}" "$@" >/dev/null 2>&1)
  cat "$dir/time.txt"
}

median() { sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }

# The logs without #open/#close, for comparing.
body() { grep -v '^#open\|^#close' "$1" 2>/dev/null || true; }

report=$OUT/zeek-results.md
{
  echo "| drops | trace | catchd s | Zeek s | catchd/Zeek time | catchd MiB | Zeek MiB | same lines (sorted) |"
  echo "|---:|---|---:|---:|---:|---:|---:|---|"
} >"$report"

for n in 100 100000; do
  drops=$PWD/$OUT/drops$n.csv
  head -n $((n + 1)) "$WATCH" >"$drops"
  zdriver=$PWD/$OUT/driver$n.zeek
  driver "$drops" "$zdriver"
  for trace in "$PCAP" "$ONE"; do
    name=$(basename "$trace")
    ct=() cm=() zt=() zm=()
    for _ in $(seq "$ROUNDS"); do
      read -r t m < <(measure "$OUT/c$n" "$CATCHD" replay --no-progress --intervals "$LADDER" \
        --drops "$drops" --log-dir . "$trace")
      ct+=("$t") cm+=("$m")
      read -r t m < <(measure "$OUT/z$n" "$ZEEK" -b -r "$trace" "$zdriver")
      zt+=("$t") zm+=("$m")
    done
    c=$(printf '%s\n' "${ct[@]}" | median)
    z=$(printf '%s\n' "${zt[@]}" | median)
    cmem=$(printf '%s\n' "${cm[@]}" | median)
    zmem=$(printf '%s\n' "${zm[@]}" | median)
    same=yes
    for log in netcontrol_catch_release netcontrol netcontrol_drop; do
      if ! diff -q <(body "$OUT/c$n/$log.log" | sort) <(body "$OUT/z$n/$log.log" | sort) >/dev/null; then
        d=$(diff <(body "$OUT/c$n/$log.log" | sort) <(body "$OUT/z$n/$log.log" | sort) | grep -c '^[<>]' || true)
        same="no ($log: $d lines differ)"
        break
      fi
    done
    printf '| %s | %s | %.2f | %.2f | %.3f | %d | %d | %s |\n' "$n" "$name" "$c" "$z" \
      "$(awk -v a="$c" -v b="$z" 'BEGIN { print a / b }')" $((cmem / 1024)) $((zmem / 1024)) "$same" >>"$report"
    echo "$n drops on $name: catchd ${c}s, Zeek ${z}s" >&2
  done
done
cat "$report"
