#!/usr/bin/env bash
# ThreadSanitizer run (GCC, Debug -O1) of the tests that exercise several threads: the forwarder's
# workers, the control thread (supervisor, reload, feed, signals), the admin server's thread, and
# every end-to-end test of the real binary (whose races TSan reports from the child process).
# Builds only what those tests need (the tsan build preset), runs the tsan test preset, and fails
# when any process wrote a race report, also one whose test passed anyway. Extra arguments go to
# ctest (e.g. -R Reload). README "Testing" says what it costs.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cmake --preset tsan >/dev/null
cmake --build --preset tsan
reports=$PWD/build/tsan/tsan-reports
rm -rf "$reports"
mkdir -p "$reports"
# Every process (tests and the binaries they start) writes its reports to a file of its own;
# the preset's halt_on_error=1 still stops a process at its first race.
status=0
APILB_TSAN_OPTIONS="log_path=$reports/report" ctest --preset tsan "$@" || status=$?
shopt -s nullglob
found=("$reports"/report.*)
if (( ${#found[@]} > 0 )); then
  echo "tsan: ${#found[@]} process(es) reported a data race or another thread error:" >&2
  for f in "${found[@]}"; do echo "=== $f" >&2; cat "$f" >&2; done
  exit 1
fi
exit "$status"
