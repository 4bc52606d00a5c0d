#!/usr/bin/env bash
# What hostile clients cost a `catchd serve`: memory and whether others are still served.
# Run against this build, and (OLD=/path/to/catchd) another one in the same run.
#
#   bench/abuse.sh                       this build only
#   OLD=/work/old-target/release/catchd bench/abuse.sh
#
# Scenarios, each on a fresh database (bench/abuse_probe.py drives them):
#   passwords  400 wrong HTTP Basic passwords at concurrency 200: peak RSS (VmHWM), and
#              the RSS left after
#   readers    30 000 blocks, then 60 clients that request /bhr/api/blocks/ and never read:
#              RSS growth while they wait
#   idle       the server started with `ulimit -n 1024`, 1 100 idle connections, then a
#              normal request: answered or not (30 s)
# The numbers go to stdout as a Markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q --bin catchd
NEW=$PWD/target/release/catchd
builds=("new=$NEW")
[ -n "${OLD:-}" ] && builds+=("old=$OLD")
echo "| build | scenario | result |"
echo "|---|---|---|"
for b in "${builds[@]}"; do
  name=${b%%=*}
  bin=${b#*=}
  for scenario in passwords readers idle; do
    work=$(mktemp -d)
    result=$(python3 bench/abuse_probe.py "$bin" "$work" "$scenario" 2>"$work/err" || echo "failed: $(tail -1 "$work/err")")
    echo "| $name | $scenario | $result |"
    rm -rf "$work"
  done
done
