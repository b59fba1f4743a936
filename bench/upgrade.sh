#!/usr/bin/env bash
# Upgrades side by side: apiserver-lb's `upgrade` (listening sockets handed over with SCM_RIGHTS)
# and HAProxy 2.6's reload with its listeners handed over (`expose-fd listeners`, `-x`, `-sf`),
# N times each in a row in front of the same two echo targets under the same load: two client
# threads opening a new connection per round trip and eight long-lived streams. Prints and writes a
# Markdown table: failed new connections, streams cut, and the longest time a new connection took.
#
#   bench/upgrade.sh [--upgrades N] [--out FILE] [--no-build]
#
# Builds upgrade_compare with the test preset (asan). Default N: 200; FILE: bench/results/upgrades.md.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
upgrades=200 out=$here/results/upgrades.md build=1
while [[ $# -gt 0 ]]; do
  case "$1" in
    --upgrades) upgrades=$2; shift ;;
    --out) out=$2; shift ;;
    --no-build) build=0 ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "upgrade.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done

command -v haproxy >/dev/null || "$root/scripts/install-deps.sh" --bench
if (( build )); then
  (cd "$root" && cmake --preset asan >/dev/null && cmake --build --preset asan --target upgrade_compare)
fi

mkdir -p "$(dirname "$out")"
{
  echo "# Upgrades under load: apiserver-lb vs HAProxy, $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "Machine: $(nproc) CPUs, Linux $(uname -r). apiserver-lb $(git -C "$root" rev-parse --short HEAD)" \
       "(asan build); $(haproxy -v | head -1)."
  echo "$upgrades upgrades each, one after the other once the previous one serves; 2 client threads opening a"
  echo "new connection per echo round trip, 8 streams each echoing every 10 ms for 0.2-1.5 s; one worker each."
  echo "\"longest\": the longest connect + round trip of a new connection during the run."
  echo
  "$root/build/asan/tests/upgrade_compare" --upgrades "$upgrades"
} | tee "$out"
