#!/usr/bin/env bash
# Log-scan benchmark (see bench/README.md): `catchd scan` against fail2ban-regex (Debian's
# fail2ban, stock sshd filter) on the same generated sshd auth.log, in one run.
#
#   bench/scan.sh                 200 000 lines, 3 000 attackers, 3 runs each
#   LINES=1000000 RUNS=5 bench/scan.sh
set -euo pipefail
cd "$(dirname "$0")/.."
LINES=${LINES:-200000}
ATTACKERS=${ATTACKERS:-3000}
RUNS=${RUNS:-3}
command -v fail2ban-regex >/dev/null || \
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends fail2ban >/dev/null
cargo build --release -q --bin catchd --example authlog
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for fmt in classic rfc3339; do
  target/release/examples/authlog "$LINES" "$ATTACKERS" "$fmt" > "$work/auth-$fmt.log"
done
cpu() { # command... -> user+sys seconds of the best of $RUNS runs
  local best=
  for _ in $(seq "$RUNS"); do
    local t
    /usr/bin/time -o "$work/t" -f '%U %S' "$@" >/dev/null 2>&1
    t=$(awk '{print $1+$2}' "$work/t")
    if [ -z "$best" ] || awk "BEGIN{exit !($t < $best)}"; then best=$t; fi
  done
  echo "$best"
}
printf '%-9s %-28s %10s %14s\n' format tool cpu_s lines/cpu_s
for fmt in classic rfc3339; do
  f="$work/auth-$fmt.log"
  c=$(cpu target/release/catchd scan --dry-run "$f")
  b=$(cpu fail2ban-regex --print-no-missed "$f" sshd)
  printf '%-9s %-28s %10.3f %14.0f\n' "$fmt" "catchd scan (bundled jails)" "$c" "$(echo "$LINES / $c" | bc -l)"
  printf '%-9s %-28s %10.3f %14.0f\n' "$fmt" "fail2ban-regex sshd" "$b" "$(echo "$LINES / $b" | bc -l)"
  printf '%-9s ratio: catchd is %.1fx fail2ban in lines per CPU-second\n' "$fmt" "$(echo "$b / $c" | bc -l)"
done
echo "matches: catchd $(target/release/catchd scan --dry-run --jail sshd "$work/auth-classic.log" 2>&1 >/dev/null | sed 's/.*lines, //; s/ in .*//')"
echo "matches: fail2ban $(fail2ban-regex --print-no-missed "$work/auth-classic.log" sshd | grep '^Lines:')"
