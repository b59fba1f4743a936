#!/usr/bin/env bash
# What packaging/bgp ships, checked without installing anything (the behaviour itself is
# tests/e2e/bgp_test.cpp):
#   unit   systemd-analyze verify on the gate's unit, next to apiserver-lb's, and the settings the
#          graceful leave depends on (stopped before apiserver-lb, route down when the gate dies)
#   bird   the balancer template and the router example, as shipped and rendered, pass `bird -p`
#   gate   the gate parses, answers --help, and refuses bad arguments
# Usage: bgp_packaging_test.sh CASE SOURCE_DIR APISERVER_LB_BINARY. Exit 0 pass, 1 fail, 77 skip.
set -euo pipefail

case_name=$1 src=$2 binary=$3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

fail() { echo "FAIL: $*" >&2; exit 1; }
skip() { echo "SKIP: $*" >&2; exit 77; }
need() { command -v "$1" >/dev/null || skip "$1 is not installed (scripts/install-deps.sh installs ${2:-$1})"; }
export PATH=$PATH:/usr/sbin:/sbin

test_unit() {
  need systemd-analyze systemd
  local unit=$src/packaging/bgp/apiserver-lb-bgp-gate.service
  local root=$work/root
  mkdir -p "$root/usr/bin" "$root/bin" "$root/usr/sbin" "$root/usr/lib/apiserver-lb" "$root/lib/systemd/system"
  cp "$binary" "$root/usr/bin/apiserver-lb"
  cp "$(type -P kill)" "$root/bin/kill"
  cp "$(type -P ip)" "$root/usr/sbin/ip"
  cp "$src/packaging/bgp/apiserver-lb-bgp-gate" "$root/usr/lib/apiserver-lb/"
  cp -a /lib/systemd/system/. "$root/lib/systemd/system/" 2>/dev/null || true
  cp "$src/packaging/systemd/apiserver-lb.service" "$unit" "$root/lib/systemd/system/"
  local out
  out=$(systemd-analyze verify --root="$root" "$root/lib/systemd/system/apiserver-lb-bgp-gate.service" 2>&1) \
    || fail "systemd-analyze verify:"$'\n'"$out"
  [[ -z $out ]] || fail "systemd-analyze verify is not clean:"$'\n'"$out"
  echo "systemd-analyze verify: clean"
  local settings=(
    # Ordered after apiserver-lb, hence stopped before it: withdraw first, then the drain.
    "After=apiserver-lb.service bird.service" "BindsTo=apiserver-lb.service" "WantedBy=apiserver-lb.service"
    "ExecStopPost=-/usr/sbin/ip link set dev apilb-gate down" "Restart=always"
    "AmbientCapabilities=CAP_NET_ADMIN" "CapabilityBoundingSet=CAP_NET_ADMIN" "NoNewPrivileges=yes"
    "User=apiserver-lb"
  )
  for s in "${settings[@]}"; do grep -qxF -- "$s" "$unit" || fail "the gate's unit lacks $s"; done
  # The gate must leave before apiserver-lb's stop timeout would matter.
  grep -q -- "--leave-delay 2s" "$unit" || fail "ExecStart has no --leave-delay 2s"
  echo "PASS: unit"
}

test_bird() {
  need bird bird2
  bird -p -c "$src/packaging/bgp/bird.conf.template" || fail "bird.conf.template does not parse as shipped"
  bird -p -c "$src/packaging/bgp/router-bird.conf.example" || fail "router-bird.conf.example does not parse as shipped"
  # Rendered for a host, as the guide says: every define replaced, a second uplink enabled.
  sed -E 's/^define ROUTER_ID = .*/define ROUTER_ID = 192.0.2.22;/;
          s/^define SERVICE = .*/define SERVICE = 198.51.100.7\/32;/;
          s/^# (protocol bgp uplink2|    neighbor 10.0.0.2|})/\1/' \
    "$src/packaging/bgp/bird.conf.template" >"$work/bird.conf"
  grep -q '^protocol bgp uplink2' "$work/bird.conf" || fail "the template's second uplink did not uncomment"
  bird -p -c "$work/bird.conf" || { cat "$work/bird.conf" >&2; fail "the rendered template does not parse"; }
  # The gate's interface in the static route is the gate's default.
  grep -qF 'route SERVICE via "apilb-gate";' "$src/packaging/bgp/bird.conf.template" \
    || fail "the template's static route does not follow the interface apilb-gate"
  grep -qF 'merge paths on;' "$src/packaging/bgp/router-bird.conf.example" || fail "the router example has no merge paths on"
  echo "PASS: bird"
}

test_gate() {
  need python3
  local gate=$src/packaging/bgp/apiserver-lb-bgp-gate
  [[ -x $gate ]] || fail "$gate is not executable"
  python3 -c 'import ast, sys; ast.parse(open(sys.argv[1]).read())' "$gate" || fail "the gate does not parse"
  python3 "$gate" --help | grep -q -- "--leave-delay" || fail "--help does not list --leave-delay"
  if python3 "$gate" --admin nonsense 2>"$work/err"; then fail "--admin nonsense was accepted"; fi
  grep -q "want host:port" "$work/err" || fail "no clear message for a bad --admin: $(cat "$work/err")"
  if python3 "$gate" --rise 0 2>"$work/err"; then fail "--rise 0 was accepted"; fi
  echo "PASS: gate"
}

case $case_name in
  unit|bird|gate) "test_$case_name" ;;
  *) echo "usage: $0 unit|bird|gate SOURCE_DIR BINARY" >&2; exit 2 ;;
esac
