#!/usr/bin/env bash
# The main job, end to end on one machine: builds apiserver-lb (Release), starts three stand-in
# kube-apiservers (TLS) on loopback, puts the balancer in front of them, sends client connections
# through it and shows which apiserver answered each; then kills one apiserver and shows the
# clients carrying on against the other two.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cmake --preset release >/dev/null
cmake --build --preset release --target apiserver-lb apiserver-standin >/dev/null
bin=build/release/tests; lbbin=build/release/cli

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# wait_for FILE REGEX: prints the first capture group once a line in FILE matches (10 s deadline).
wait_for() {
  for _ in $(seq 200); do
    if m=$(grep -oE "$2" "$1" 2>/dev/null | head -n 1) && [[ -n "$m" ]]; then
      sed -E "s/.*$2.*/\1/" <<<"$m"
      return 0
    fi
    sleep 0.05
  done
  echo "demo: timed out waiting for '$2' in $1:" >&2
  cat "$1" >&2
  return 1
}

targets=()
for name in apiserver-1 apiserver-2 apiserver-3; do
  "$bin/apiserver-standin" --listen 127.0.0.1:0 --name "$name" >"$work/$name.log" 2>&1 &
  pids+=($!)
  port=$(wait_for "$work/$name.log" "listening on 127\.0\.0\.1:([0-9]+)")
  targets+=(--target "127.0.0.1:$port")
  echo "started $name on 127.0.0.1:$port (TLS, self-signed)"
done
standin_pids=("${pids[@]}")

"$lbbin/apiserver-lb" run --listen 127.0.0.1:0 --admin "" "${targets[@]}" \
  >"$work/lb.log" 2>&1 &
pids+=($!)
lb_port=$(wait_for "$work/lb.log" "listening on 127\.0\.0\.1:([0-9]+)")
echo "apiserver-lb listening on 127.0.0.1:$lb_port"
echo
sed 's/^/  lb| /' "$work/lb.log"

ask() {
  for i in $(seq "$1"); do
    printf '  client %d -> %s\n' "$i" \
      "$(curl -sk --max-time 5 "https://127.0.0.1:$lb_port/" || echo "FAILED")"
  done
}
echo
echo "== 6 TLS client connections through the balancer (TLS passes through untouched):"
ask 6

echo
echo "== killing apiserver-2 (SIGKILL): new connections go to the other two"
{ kill -9 "${standin_pids[1]}" && wait "${standin_pids[1]}"; } 2>/dev/null || true
ask 6
echo
echo "== balancer log:"
sed 's/^/  lb| /' "$work/lb.log"
