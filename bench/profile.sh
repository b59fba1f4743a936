#!/usr/bin/env bash
# Where apiserver-lb spends its CPU next to HAProxy: system calls per request and per connection.
#
#   bench/profile.sh [--seconds S] [--threads N] [--perf] [--no-build]
#
# Starts an nginx HTTP backend, apiserver-lb on each engine (relay.engine uring and epoll) and
# HAProxy 2.6 (--threads each, default 1, pinned to the last core(s), as in bench/compare.sh), then
# for kept-alive requests (wrk, 50 connections, 128 B) and new connections (Connection: close)
# attaches `strace -c -f` to each balancer in turn and prints the
# system calls per request as a Markdown table. strace slows the balancer down a lot: read the counts,
# not the rates. With --perf it also records each balancer with `perf record -g` (no strace) and
# prints the split kernel / balancer / libc and the heaviest system calls, inclusive.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
seconds=3 with_perf=0 build=1 threads=1
while [[ $# -gt 0 ]]; do
  case "$1" in
    --seconds) seconds=$2; shift ;;
    --perf) with_perf=1 ;;
    --threads) threads=$2; shift ;;
    --no-build) build=0 ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "profile.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
[[ $seconds =~ ^[1-9][0-9]*$ ]] || { echo "profile.sh: --seconds takes a whole number" >&2; exit 2; }
for tool in haproxy nginx wrk strace taskset ss; do
  command -v "$tool" >/dev/null || { echo "profile.sh: $tool is missing (scripts/install-deps.sh --bench)" >&2; exit 1; }
done
(( with_perf == 0 )) || command -v perf >/dev/null || { echo "profile.sh: perf is missing (apt-get install linux-perf)" >&2; exit 1; }
bin=$root/build/release
if (( build )); then
  (cd "$root" && cmake --preset release >/dev/null && cmake --build --preset release --target apiserver-lb >/dev/null)
fi

source "$here/procs.sh" profile

ncpu=$(nproc)
# The balancers on the last $threads cores, the load on the others (on all of them when none is left).
if (( ncpu > threads )); then
  lb_cpu=$((ncpu - threads))-$((ncpu - 1))
  load_cpus=0-$((ncpu - threads - 1))
else
  lb_cpu=0-$((ncpu - 1)) load_cpus=0-$((ncpu - 1))
fi
backend=28080 lb_port=28180 haproxy_port=28181 epoll_port=28182

mkdir -p "$work/www"
head -c 128 /dev/zero | tr '\0' a >"$work/www/128"
cat >"$work/nginx.conf" <<EOF
worker_processes 1;
pid $work/nginx.pid;
error_log $work/nginx.log error;
daemon off;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 10000000;
  default_type application/octet-stream;
  server { listen 127.0.0.1:$backend reuseport; root $work/www; }
}
EOF
cat >"$work/lb.yaml" <<EOF
listen: ["127.0.0.1:$lb_port"]
admin: { listen: "" }
targets: ["127.0.0.1:$backend"]
threads: $threads
log: { level: warn }
EOF
sed -e "s/:$lb_port/:$epoll_port/" -e '$a relay: { engine: epoll }' "$work/lb.yaml" >"$work/lb-epoll.yaml"
sed -i '$a relay: { engine: uring }' "$work/lb.yaml"
cat >"$work/haproxy.cfg" <<EOF
global
  nbthread $threads
  maxconn 9400
defaults
  mode tcp
  maxconn 9400
  timeout connect 2s
  timeout client 1h
  timeout server 1h
frontend fe
  bind 127.0.0.1:$haproxy_port
  default_backend be
backend be
  balance leastconn
  server s1 127.0.0.1:$backend check inter 2s
EOF
spawn nginx "$load_cpus" nginx -e "$work/nginx.log" -p "$work" -c "$work/nginx.conf"
wait_listen $backend "$spawned" || exit 1
spawn apiserver-lb "$lb_cpu" "$bin/cli/apiserver-lb" run --config "$work/lb.yaml"
lb_pid=$spawned
spawn apiserver-lb-epoll "$lb_cpu" "$bin/cli/apiserver-lb" run --config "$work/lb-epoll.yaml"
epoll_pid=$spawned
spawn haproxy "$lb_cpu" haproxy -db -f "$work/haproxy.cfg"
haproxy_pid=$spawned
wait_listen $lb_port "$lb_pid" || exit 1
wait_listen $epoll_port "$epoll_pid" || exit 1
wait_listen $haproxy_port "$haproxy_pid" || exit 1
sleep 0.5

# load PORT WORKLOAD -> number of requests done
load() {
  local -a extra=()
  [[ $2 == cc ]] && extra=(-H "Connection: close")
  timeout $((seconds + 20)) taskset -c "$load_cpus" wrk -t1 -c50 -d"${seconds}s" "${extra[@]}" \
    "http://127.0.0.1:$1/128" | awk '/requests in/ {print $1}'
}

# traced NAME PID PORT WORKLOAD: writes $work/NAME-WORKLOAD.calls ("syscall calls" per request)
traced() {
  local name=$1 pid=$2 port=$3 workload=$4 tracer n
  strace -c -f -qq -p "$pid" -o "$work/$name-$workload.strace" &
  tracer=$!
  sleep 0.5
  n=$(load "$port" "$workload")
  sleep 0.2
  kill -INT "$tracer" 2>/dev/null || true
  wait "$tracer" 2>/dev/null || true
  awk -v n="$n" '$1 ~ /^[0-9.]+$/ && NF >= 5 && $NF != "total" { printf "%s %.2f\n", $NF, $4 / n }' \
    "$work/$name-$workload.strace" >"$work/$name-$workload.calls"
  echo "$n" >"$work/$name-$workload.n"
}

# table WORKLOAD TITLE
table() {
  local w=$1
  echo "### $2"
  echo
  echo "| system call | apiserver-lb uring | apiserver-lb epoll | HAProxy |"
  echo "| --- | ---: | ---: | ---: |"
  awk '
    FNR == 1 { file++ }
    { calls[$1, file] = $2; names[$1] = 1; total[file] += $2 }
    function c(s, f) { return ((s, f) in calls) ? calls[s, f] : "0" }
    END {
      for (s in names) printf "| %s | %s | %s | %s |\n", s, c(s, 1), c(s, 2), c(s, 3)
      printf "| **all** | **%.2f** | **%.2f** | **%.2f** |\n", total[1], total[2], total[3]
    }' "$work/apiserver-lb-$w.calls" "$work/apiserver-lb-epoll-$w.calls" "$work/haproxy-$w.calls" |
    sort -t'|' -k3,3 -gr
  echo
  echo "($(cat "$work/apiserver-lb-$w.n"), $(cat "$work/apiserver-lb-epoll-$w.n") and $(cat "$work/haproxy-$w.n") requests traced.)"
  echo
}

for w in ka cc; do
  traced apiserver-lb "$lb_pid" $lb_port $w
  traced apiserver-lb-epoll "$epoll_pid" $epoll_port $w
  traced haproxy "$haproxy_pid" $haproxy_port $w
done
echo "## System calls per request (strace -c, ${seconds}s each)"
echo
table ka "Kept-alive requests (128 B), per request"
table cc "New connections (Connection: close), per connection"

if (( with_perf )); then
  echo "## perf (inclusive shares of each balancer's samples)"
  echo
  for w in ka cc; do
    for name in apiserver-lb apiserver-lb-epoll haproxy; do
      case $name in
        apiserver-lb) pid=$lb_pid port=$lb_port ;;
        apiserver-lb-epoll) pid=$epoll_pid port=$epoll_port ;;
        *) pid=$haproxy_pid port=$haproxy_port ;;
      esac
      perf record -g -p "$pid" -o "$work/$name-$w.perf" -- sleep $((seconds + 1)) >/dev/null 2>&1 &
      recorder=$!
      sleep 0.3
      n=$(load "$port" "$w")
      wait "$recorder" || true
      echo "### $name, $w ($n requests)"
      echo '```'
      perf report -i "$work/$name-$w.perf" --no-children --sort dso --stdio -g none 2>/dev/null | grep '%' | head -4
      perf report -i "$work/$name-$w.perf" --children --sort sym --stdio -g none 2>/dev/null |
        grep -E '\[k\] __x64_sys_' | head -10
      echo '```'
      echo
    done
  done
fi
