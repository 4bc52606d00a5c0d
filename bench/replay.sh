#!/usr/bin/env bash
# Whole-process comparison of `catchd replay` with bare libpcap read loops, on the same
# file, in the same run (see bench/README.md).
#
#   bench/replay.sh [ROUNDS]        (default 9; ROUNDS=1 for a quick look)
#
# Generates bench/out/big.pcap (1M packets, realistic mix), its first packet alone, and a
# 100 000-address watch list if missing, builds catchd and bench/pcaploop.c, then runs every variant ROUNDS
# times, interleaved (the 100k replay both with Zeek's connection life cycle, the default,
# with the stateless `starts` rule, and with catch-and-release of networks), and reports the median wall time of each whole process, its
# packets/s, and its ratio to each bare loop. Every run is pinned to one core except the
# two "on every core" runs, which give the drops phase with the log writer thread on a core
# of its own; those two alternate in a loop of their own after the others. Timings are
# wall clock on a shared machine: read the spread, not just the median.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-${ROUNDS:-9}}
OUT=bench/out
mkdir -p "$OUT"

need=()
command -v tcpdump >/dev/null || need+=(tcpdump)
command -v gcc >/dev/null || need+=(gcc)
[ -e /usr/include/pcap/pcap.h ] || need+=(libpcap-dev)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]}" >&2
  apt-get -o DPkg::Lock::Timeout=600 install -y -q "${need[@]}" >/dev/null
fi

cargo build --release -q --bin catchd --example pcapgen
gcc -O2 -Wall -o "$OUT/pcaploop" bench/pcaploop.c -lpcap
CATCHD=target/release/catchd
PCAP=$OUT/big.pcap
WATCH=$OUT/watch100k.csv
if [ ! -f "$PCAP" ] || [ ! -f "$WATCH" ]; then
  echo "generating $PCAP and $WATCH" >&2
  target/release/examples/pcapgen big "$PCAP" --packets 1000000 --watch 100000 --drops "$WATCH"
fi
PACKETS=$("$OUT/pcaploop" "$PCAP" | awk '{print $1}')
# Pin to one CPU when possible, so the runs compete less with everything else.
PIN=()
command -v taskset >/dev/null && PIN=(taskset -c "$(($(nproc) - 1))")

ONE=$OUT/one.pcap
[ -f "$ONE" ] || tcpdump -r "$PCAP" -c 1 -w "$ONE" 2>/dev/null

names=(tcpdump c_next_ex c_loop c_loop_bigbuf catchd_none catchd_100k catchd_100k_starts catchd_100k_nets
  catchd_one_none catchd_one_100k catchd_one_100k_nets)
# The unpinned pair runs in a loop of its own, after the others: right after a 1M-packet
# run pinned to one core, the other core of this virtual machine was slow to get going
# again, and an unpinned run that needs both cores took up to 1.6 times as long (see
# bench/README.md, 2026-12-05).
names_all=(catchd_one_none_all catchd_one_100k_all)
declare -A label=(
  [tcpdump]="tcpdump -r FILE -w /dev/null"
  [c_next_ex]="C pcap_next_ex loop"
  [c_loop]="C pcap_loop"
  [c_loop_bigbuf]="C pcap_loop, 1 MiB stdio buffer"
  [catchd_none]="catchd replay, nothing watched"
  [catchd_100k]="catchd replay, 100k watched"
  [catchd_100k_starts]="catchd replay, 100k watched, --sightings starts"
  [catchd_100k_nets]="catchd replay, 100k watched + their networks"
  [catchd_one_none]="catchd replay, first packet only, nothing watched"
  [catchd_one_100k]="catchd replay, first packet only, 100k watched"
  [catchd_one_100k_nets]="catchd replay, first packet only, 100k watched + their networks"
  [catchd_one_none_all]="same, nothing watched, on every core"
  [catchd_one_100k_all]="same, 100k watched, on every core"
)
# Catch-and-release of networks on the same watch list: every /29 (IPv6 /125) holding 5 of
# its addresses is dropped too, which makes 12 166 watched networks next to the 100k
# addresses (the summary's "networks" line says how many).
NETS=(--net-prefix4 29 --net-prefix6 125 --net-threshold 5)
run() {
  case $1 in
    tcpdump) "${PIN[@]}" tcpdump -r "$PCAP" -w /dev/null 2>/dev/null ;;
    c_next_ex) "${PIN[@]}" "$OUT/pcaploop" "$PCAP" >/dev/null ;;
    c_loop) "${PIN[@]}" "$OUT/pcaploop" --loop "$PCAP" >/dev/null ;;
    c_loop_bigbuf) "${PIN[@]}" "$OUT/pcaploop" --loop --bigbuf "$PCAP" >/dev/null ;;
    catchd_none) "${PIN[@]}" "$CATCHD" replay "$PCAP" --log-dir "$OUT/logs" --no-progress >/dev/null ;;
    catchd_100k) "${PIN[@]}" "$CATCHD" replay "$PCAP" --drops "$WATCH" --log-dir "$OUT/logs" \
      --no-progress >"$OUT/last-100k.txt" ;;
    catchd_100k_starts) "${PIN[@]}" "$CATCHD" replay "$PCAP" --drops "$WATCH" --log-dir "$OUT/logs" \
      --sightings starts --no-progress >/dev/null ;;
    catchd_100k_nets) "${PIN[@]}" "$CATCHD" replay "$PCAP" --drops "$WATCH" "${NETS[@]}" \
      --log-dir "$OUT/logs" --no-progress >"$OUT/last-100k-nets.txt" ;;
    catchd_one_none) "${PIN[@]}" "$CATCHD" replay "$ONE" --log-dir "$OUT/logs" --no-progress >/dev/null ;;
    catchd_one_100k) "${PIN[@]}" "$CATCHD" replay "$ONE" --drops "$WATCH" --log-dir "$OUT/logs" \
      --no-progress >/dev/null ;;
    catchd_one_100k_nets) "${PIN[@]}" "$CATCHD" replay "$ONE" --drops "$WATCH" "${NETS[@]}" \
      --log-dir "$OUT/logs" --no-progress >/dev/null ;;
    # Not pinned: the log lines are formatted and written on a thread of their own (as
    # Zeek's log writers are), which runs beside the engine when there is a core for it.
    catchd_one_none_all) "$CATCHD" replay "$ONE" --log-dir "$OUT/logs" --no-progress >/dev/null ;;
    catchd_one_100k_all) "$CATCHD" replay "$ONE" --drops "$WATCH" --log-dir "$OUT/logs" \
      --no-progress >/dev/null ;;
  esac
}

declare -A times
# Runs variant $1 once and adds its wall time to times[$1]. Each replay starts from an
# empty log directory: cutting the 40 MB of logs the previous variant left (and the kernel
# writing them back) would otherwise be charged to whichever variant happens to run next.
timed() {
  rm -rf "$OUT/logs"
  local t0=$EPOCHREALTIME
  run "$1"
  local t1=$EPOCHREALTIME
  times[$1]+="$(echo "$t1 - $t0" | bc -l) "
}
phase=()
nets_phase=()
for ((r = 1; r <= ROUNDS; r++)); do
  for n in "${names[@]}"; do
    timed "$n"
  done
  # The 100k replay's own split: time applying the drops vs time on packets.
  phase+=("$(awk '/^timing/ {print $2, $6}' "$OUT/last-100k.txt")")
  nets_phase+=("$(awk '/^timing/ {print $2, $6}' "$OUT/last-100k-nets.txt")")
  echo "round $r/$ROUNDS done" >&2
done
# The pair takes a tenth of a second a round and varies most: three times the rounds.
for ((r = 1; r <= 3 * ROUNDS; r++)); do
  for n in "${names_all[@]}"; do
    timed "$n"
  done
done
echo "unpinned rounds done" >&2
names+=("${names_all[@]}")

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
range() { tr ' ' '\n' | grep -v '^$' | sort -g | awk 'NR==1{lo=$1} {hi=$1} END {printf "%.3f-%.3f", lo, hi}'; }
declare -A med
for n in "${names[@]}"; do med[$n]=$(echo "${times[$n]}" | median); done
drop_med=$(printf '%s\n' "${phase[@]}" | awk '{print $1}' | tr '\n' ' ' | median)
pkt_med=$(printf '%s\n' "${phase[@]}" | awk '{print $2}' | tr '\n' ' ' | median)
nets_pkt_med=$(printf '%s\n' "${nets_phase[@]}" | awk '{print $2}' | tr '\n' ' ' | median)
nets_count=$(awk '/^networks/ {print $2}' "$OUT/last-100k-nets.txt")

{
  echo "## catchd replay vs bare libpcap loops"
  echo
  echo "$(date -u +%Y-%m-%d), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs),"
  echo "$PACKETS packets ($(du -m "$PCAP" | cut -f1) MB), $ROUNDS interleaved rounds ($((3 * ROUNDS)) for the two runs on every core, in a loop of their own), whole-process wall time."
  echo
  echo "| variant | median s | range s | packets/s | vs C next_ex | vs C loop | vs C loop+1MiB |"
  echo "|---|---|---|---|---|---|---|"
  for n in "${names[@]}"; do
    m=${med[$n]}
    printf '| %s | %.3f | %s | %.2fM | %.2f | %.2f | %.2f |\n' "${label[$n]}" "$m" \
      "$(echo "${times[$n]}" | range)" "$(echo "$PACKETS / $m / 1000000" | bc -l)" \
      "$(echo "${med[c_next_ex]} / $m" | bc -l)" "$(echo "${med[c_loop]} / $m" | bc -l)" \
      "$(echo "${med[c_loop_bigbuf]} / $m" | bc -l)"
  done
  echo
  # Measured from outside the process, as the issue defines them: the packet phase is the
  # whole replay minus the same drops on a one-packet trace; the drops phase is the
  # one-packet replay with the drops minus the one without.
  pp=$(echo "${med[catchd_100k]} - ${med[catchd_one_100k]}" | bc -l)
  dp=$(echo "${med[catchd_one_100k]} - ${med[catchd_one_none]}" | bc -l)
  printf 'From outside: packet phase (100k watched minus its first-packet-only run) %.3f s: %.2fM packets/s,\n' \
    "$pp" "$(echo "$PACKETS / $pp / 1000000" | bc -l)"
  printf '%.2f of C loop; drops phase (first-packet-only run with minus without the drops) %.3f s: %.0fk drops/s\n' \
    "$(echo "${med[c_loop]} / $pp" | bc -l)" "$dp" "$(echo "100000 / $dp / 1000" | bc -l)"
  dpa=$(echo "${med[catchd_one_100k_all]} - ${med[catchd_one_none_all]}" | bc -l)
  printf 'pinned to one core; on all %s cores (the log writer beside the engine) %.3f s: %.0fk drops/s.\n' \
    "$(nproc)" "$dpa" "$(echo "100000 / $dpa / 1000" | bc -l)"
  npp=$(echo "${med[catchd_100k_nets]} - ${med[catchd_one_100k_nets]}" | bc -l)
  printf 'With the networks (%s dropped next to the addresses): packet phase from outside %.3f s: %.2fM packets/s,\n' \
    "$nets_count" "$npp" "$(echo "$PACKETS / $npp / 1000000" | bc -l)"
  printf '%.2f of C loop (%.2f of the run without networks); by its own summary %.3f s on the packets, %.2f of C loop.\n' \
    "$(echo "${med[c_loop]} / $npp" | bc -l)" "$(echo "$pp / $npp" | bc -l)" "$nets_pkt_med" \
    "$(echo "${med[c_loop]} / $nets_pkt_med" | bc -l)"
  echo
  printf 'catchd replay with 100k watched, split by its own summary: %.3f s applying the 100 000 drops\n' "$drop_med"
  printf '(500 000 Zeek log lines), %.3f s on the packets: %.2fM packets/s, %.2f of C loop, %.2f of C loop+1MiB.\n' \
    "$pkt_med" "$(echo "$PACKETS / $pkt_med / 1000000" | bc -l)" \
    "$(echo "${med[c_loop]} / $pkt_med" | bc -l)" "$(echo "${med[c_loop_bigbuf]} / $pkt_med" | bc -l)"
} | tee "$OUT/replay-results.md"
