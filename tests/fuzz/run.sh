#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (their own build directory) and runs each for SECONDS
# (default 20) on its checked-in seed corpus, tests/fuzz/corpus/<target>/. Fails on a crash, a leak,
# a timeout or a broken property, printing the path of the input that did it; replay it with
#   build/fuzz/fuzz_<target> <that file>
# New inputs go to <build>/corpus/<target>/, never into the checked-in corpus (copy interesting
# ones there by hand, with `fuzz_<target> -merge=1 tests/fuzz/corpus/<target> <build>/corpus/<target>`).
#   tests/fuzz/run.sh [SECONDS]      APILB_FUZZ_BUILD_DIR overrides the build directory (build/fuzz)
#                                    APILB_FUZZ_TARGETS="config feed" runs only those targets
# Exits 77 (ctest: skipped) when clang++ is missing.
set -euo pipefail
seconds=${1:-20}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=${APILB_FUZZ_BUILD_DIR:-$root/build/fuzz}
read -r -a targets <<<"${APILB_FUZZ_TARGETS:-config feed address duration readyz admin_http slice}"

if ! command -v clang++ >/dev/null; then
  echo "fuzz: clang++ not found (scripts/install-deps.sh installs clang and libclang-rt-14-dev): skipped"
  exit 77
fi
cmake -S "$here" -B "$build" -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" -j2 -- --no-print-directory >/dev/null

# Leaks are bugs here too, whatever the caller's ASAN_OPTIONS say.
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=1"
failed=()
for t in "${targets[@]}"; do
  work="$build/corpus/$t"
  crashes="$build/crashes/$t"
  log="$build/$t.log"
  mkdir -p "$work" "$crashes"
  flags=(-max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
         -artifact_prefix="$crashes/")
  [[ -f "$here/$t.dict" ]] && flags+=(-dict="$here/$t.dict")
  status=0
  "$build/fuzz_$t" "${flags[@]}" "$work" "$here/corpus/$t" >"$log" 2>&1 || status=$?
  # The last status line ("#N  DONE  cov: C ft: F corp: ...") and the final stats.
  last=$(grep -E '^#[0-9]+' "$log" | tail -n 1 || true)
  cov=$(sed -nE 's/.* cov: ([0-9]+).*/\1/p' <<<"$last")
  ft=$(sed -nE 's/.* ft: ([0-9]+).*/\1/p' <<<"$last")
  corp=$(sed -nE 's/.* corp: ([0-9]+).*/\1/p' <<<"$last")
  runs=$(sed -nE 's/^stat::number_of_executed_units: ([0-9]+)/\1/p' "$log")
  speed=$(sed -nE 's/^stat::average_exec_per_sec: +([0-9]+)/\1/p' "$log")
  if [[ $status -eq 0 ]]; then
    printf 'fuzz_%-11s ok    %8s runs in %ss, %6s exec/s, cov %s, ft %s, corpus %s\n' \
      "$t" "${runs:-?}" "$seconds" "${speed:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}"
  else
    failed+=("$t")
    echo "fuzz_$t FAILED (exit $status); the end of $log:"
    tail -n 60 "$log" | sed 's/^/  | /'
    grep -E 'Test unit written to|artifact_prefix' "$log" | sed 's/^/fuzz_'"$t"': /' || true
  fi
done
if [[ ${#failed[@]} -gt 0 ]]; then
  echo "fuzz: ${#failed[@]} target(s) failed: ${failed[*]}; inputs are under $build/crashes/"
  exit 1
fi
