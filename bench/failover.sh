#!/usr/bin/env bash
# Failover side by side: apiserver-lb and HAProxy 2.6 (`check inter 1s fall 2 rise 2`, as is and
# tuned with `option redispatch` + `on-marked-down shutdown-sessions`) in front of the same three
# stand-in masters, each on a host of its own (network namespaces), through the same faults: a
# crashed master (SIGKILL) and a silently blackholed one (nftables DROP). Prints and writes a
# Markdown table: when the master was marked down, how many new client connections failed, when
# the long-lived connections to it were closed.
#
#   bench/failover.sh [--rounds N] [--out FILE] [--no-build]
#   bench/failover.sh --crashes N [--out FILE] [--no-build]
#
# With --crashes: a master SIGKILLed N times in a row (restarted at once, round robin over the three)
# under the same load, for apiserver-lb (replay_first_flight: always, the clients speak plain HTTP)
# and HAProxy (option redispatch, retries 3): how many new connections failed. Default FILE then:
# bench/results/crashes.md.
#
# Needs root (namespaces). Builds failover_compare with the test preset (asan): the figures are set
# by timers (1 s checks), not by CPU. About 1 minute per round. Default FILE: bench/results/failover.md.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
rounds=1 crashes=0 out="" build=1
while [[ $# -gt 0 ]]; do
  case "$1" in
    --rounds) rounds=$2; shift ;;
    --crashes) crashes=$2; shift ;;
    --out) out=$2; shift ;;
    --no-build) build=0 ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "failover.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
[[ -n $out ]] || { (( crashes )) && out=$here/results/crashes.md || out=$here/results/failover.md; }
[[ $(id -u) == 0 ]] || { echo "failover.sh: needs root (network namespaces)" >&2; exit 1; }

command -v haproxy >/dev/null || "$root/scripts/install-deps.sh" --bench
if (( build )); then
  (cd "$root" && cmake --preset asan >/dev/null && cmake --build --preset asan --target failover_compare)
fi

mkdir -p "$(dirname "$out")"
{
  echo "# Failover: apiserver-lb vs HAProxy, $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "Machine: $(nproc) CPUs, Linux $(uname -r). apiserver-lb $(git -C "$root" rev-parse --short HEAD)" \
       "(asan build); $(haproxy -v | head -1)."
  echo "Both: tcp checks every 1 s, fall 2, rise 2, check timeout 1 s, connect timeout 2 s, least connections;"
  echo "three masters on hosts of their own; 2 client threads opening a new connection per request;"
  if (( crashes )); then
    echo "A master SIGKILLed $crashes times in a row and restarted at once; apiserver-lb replays first flights"
    echo "(replay_first_flight: always), HAProxy has option redispatch and retries 3."
    echo
    "$root/build/asan/tests/failover_compare" --crashes "$crashes"
  else
    echo "6 long-lived connections (2 per master). Times are from the fault."
    echo
    "$root/build/asan/tests/failover_compare" --rounds "$rounds"
  fi
} | tee "$out"
