#!/usr/bin/env bash
# Installs the Debian 12 packages apiserver-lb builds, tests and benchmarks with.
# Idempotent and quiet when everything is already there. Needs root (or sudo) only to install.
set -euo pipefail

packages=(
  build-essential cmake pkg-config
  libboost1.81-dev libyaml-cpp-dev libspdlog-dev prometheus-cpp-dev
  libgtest-dev libgmock-dev libbenchmark-dev libssl-dev
  liburing-dev nlohmann-json3-dev                  # the io_uring engine; discovery's JSON
  openssl curl iproute2 procps nftables
  dpkg-dev file systemd keepalived python3-yaml   # packaging tests: cpack DEB, unit, VRRP, manifest
  bird2 python3                                    # BGP ECMP: tests/e2e/bgp_test.cpp, packaging/bgp
  clang libclang-rt-14-dev                         # fuzzers: tests/fuzz/run.sh
  clang-format git                                 # scripts/check-format.sh
  help2man                                         # the man page, apiserver-lb(8), from --help
  prometheus                                       # promtool: alert rules, their tests, metrics lint
  chromium                                         # the status page's browser test
  podman buildah runc containernetworking-plugins  # the container image, built and run for real
)
if [[ "${1:-}" == "--bench" ]]; then
  packages+=(haproxy nginx libnginx-mod-stream wrk gnuplot-nox strace)
fi

# kubectl through the balancer (tests/e2e/discovery_test.cpp): Debian's, unless one is installed.
command -v kubectl >/dev/null || packages+=(kubernetes-client)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

sudo=""
[[ $(id -u) -eq 0 ]] || sudo="sudo"
echo "install-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
