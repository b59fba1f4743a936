#!/usr/bin/env bash
# Fails (listing the files) when a tracked C++ file is not formatted as .clang-format says.
# `scripts/check-format.sh --fix` formats them in place.
set -euo pipefail
cd "$(dirname "$0")/.."
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  mapfile -t files < <(git ls-files '*.cpp' '*.hpp')
else  # an export without .git: the same files, found
  mapfile -t files < <(find base config healthcheck lb admin control cli tests bench \( -name '*.cpp' -o -name '*.hpp' \) | sort)
fi
if [[ "${1:-}" == "--fix" ]]; then
  clang-format -i "${files[@]}"
  exit 0
fi
bad=()
for f in "${files[@]}"; do
  clang-format --dry-run -Werror "$f" >/dev/null 2>&1 || bad+=("$f")
done
if (( ${#bad[@]} )); then
  echo "check-format: not formatted (run scripts/check-format.sh --fix): ${bad[*]}" >&2
  exit 1
fi
echo "check-format: ${#files[@]} files formatted as .clang-format says"
