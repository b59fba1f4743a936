#!/usr/bin/env bash
# Checks the formatting, builds apiserver-lb from scratch with ASan+UBSan (GCC, Debug) and runs
# the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/check-format.sh
cmake --preset asan >/dev/null
cmake --build --preset asan
ctest --preset asan "$@"
