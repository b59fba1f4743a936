#!/usr/bin/env bash
# Side-by-side benchmark: apiserver-lb (relay.engine uring and epoll, two subjects) vs HAProxy 2.6
# (mode tcp, default and with splice forced) vs nginx stream vs no balancer, on loopback, same
# thread count, balancer pinned to its own core(s).
#
#   bench/compare.sh [--quick] [--rounds N] [--seconds S] [--out DIR] [--no-build] [--workers "1 2"]
#                    [--port-base P]             # ports P+80..P+160 (default 18000; keep below the
#                                                  ephemeral range, 32768), if those are taken
#   bench/compare.sh --report DIR/latest.tsv     # only redraw DIR/latest.md and DIR/latest.png
#
# Builds the release preset, installs the Debian tools if missing (scripts/install-deps.sh --bench),
# then measures, interleaved (round r starts at subject r: A B C, B C A, ...):
#   1. bulk throughput, 1 and 8 long streams: Gbit/s, balancer CPU-s per GB          (bench/bulk)
#   2. kept-alive requests (wrk, 50 connections, 128 B and 64 KiB): req/s, p50, p99,
#      balancer CPU-ms per 1,000 requests                                            (nginx backend)
#   3. new connections (wrk, Connection: close): conn/s, p50, p99, CPU-ms per 1,000
#   4. memory per idle connection: 9,000 through the balancer, RSS growth per connection, and again
#      after one small exchange on every connection                                  (bench/idle)
#   5. the same without a balancer, as the limit.
# then the same table for each further worker count of --workers (default "1 2": scaling; e.g.
# "1 2 4 8" on a bigger machine), a scaling table (CPU per request at each count ÷ 1 worker) and
# RSS growth at 1k, 5k and 9k idle connections.
# Balancer CPU is utime + stime from /proc/PID/stat (the process and its children: nginx workers).
# Writes DIR/latest.tsv (the run's header, then every measurement), DIR/latest.md (tables, machine,
# load) and DIR/latest.png.
# Default DIR: bench/results for a full run, build/release/bench/results for --quick (which also
# leaves out the idle figures of the 2-worker table).
# Bounded: every process it starts is killed on exit, every wait has a deadline, and the suite
# stops measuring once its budget (20 min, --quick 4 min) is spent.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)

quick=0 rounds="" seconds="" out="" build=1 report_from="" workers="1 2" port_base=18000
while [[ $# -gt 0 ]]; do
  case "$1" in
    --quick) quick=1 ;;
    --rounds) rounds=$2; shift ;;
    --seconds) seconds=$2; shift ;;
    --out) out=$2; shift ;;
    --no-build) build=0 ;;
    --report) report_from=$2; shift ;;
    --workers) workers=$2; shift ;;
    --port-base) port_base=$2; shift ;;
    -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
    *) echo "compare.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
if (( quick )); then
  : "${rounds:=1}" "${seconds:=2}"
  budget=240 scale_seconds=2 growth_sizes="1000 5000" scale_idle=0
  out=${out:-$root/build/release/bench/results}
else
  : "${rounds:=3}" "${seconds:=4}"
  budget=1200 scale_seconds=3 growth_sizes="1000 5000" scale_idle=1
  out=${out:-$here/results}
fi
idle_count=9000
[[ $rounds =~ ^[1-9][0-9]*$ && $seconds =~ ^[1-9][0-9]*$ ]] || { echo "compare.sh: --rounds and --seconds take whole numbers" >&2; exit 2; }
[[ $workers =~ ^1( [1-9][0-9]*)*$ ]] || { echo "compare.sh: --workers takes a list of counts starting with 1, e.g. \"1 2 4\"" >&2; exit 2; }

log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# report TSV: latest.md and latest.png beside TSV, from its measurements and its "#| " header lines.
report() {
  local tsv=$1 dir charts day
  dir=$(dirname "$tsv")
  charts=$(mktemp -d /tmp/apilb-report.XXXXXX)
  day=$(awk 'index($0, "#| # apiserver-lb benchmark: ") == 1 {print $5; exit}' "$tsv")
  {
    sed -n 's/^#| \{0,1\}//p' "$tsv"
    echo
    echo "Medians over rounds; ratios are each apiserver-lb engine (uring, epoll) ÷ the other, paired per round, median over rounds."
    echo "CPU is the balancer's own (utime + stime), pinned to its core(s); load tools and backends run on the others."
    echo
    echo "## 1 worker"
    echo
    awk -v phase=t1 -v chart="$charts/chart.dat" -f "$here/summarize.awk" "$tsv"
    echo
    echo "## Memory growth with idle connections (1 worker)"
    echo
    awk -v phase=growth -v growth_chart="$charts/growth.dat" -f "$here/summarize.awk" "$tsv"
    echo
    local p n
    for p in $(awk -F'\t' '$1 ~ /^t[0-9]+$/ && $1 != "t1" {print $1}' "$tsv" | sort -u -V); do
      n=${p#t}
      echo "## $n workers (scaling)"
      echo
      awk -v phase="$p" -v chart="$charts/chart$n.dat" -f "$here/summarize.awk" "$tsv"
      echo
    done
    echo "## Scaling: each figure at N workers ÷ the same at 1 worker (1.00 = no growth)"
    echo
    awk -v phase=scaling -f "$here/summarize.awk" "$tsv"
  } >"$dir/latest.md"
  [[ -f $charts/chart2.dat ]] || cp "$charts/chart.dat" "$charts/chart2.dat"
  gnuplot <<EOF || log "gnuplot failed: no chart"
  set terminal pngcairo size 1500,1000 font "sans,10"
  set output "$dir/latest.png"
  set multiplot layout 2,2 title "apiserver-lb vs HAProxy 2.6 vs nginx stream, 1 worker (÷ HAProxy default; $day)"
  set style data histogram
  set style histogram clustered gap 1
  set style fill solid 0.85 border -1
  set boxwidth 0.9
  set grid ytics
  set key top left
  set xtics rotate by -25 scale 0 font ",9"
  set yrange [0:*]
  set title "costs: lower is better"
  set ylabel "÷ HAProxy"
  plot "$charts/chart.dat" index 0 using 3:xtic(1) title "apiserver-lb uring" lc rgb "#1f77b4", \
       "" index 0 using 4 title "apiserver-lb epoll" lc rgb "#9ecae1", \
       "" index 0 using 5 title "HAProxy" lc rgb "#aaaaaa", \
       "" index 0 using 6 title "HAProxy splice" lc rgb "#666666", \
       "" index 0 using 7 title "nginx stream" lc rgb "#2ca02c"
  set title "rates: higher is better"
  plot "$charts/chart.dat" index 1 using 2:xtic(1) title "no balancer" lc rgb "#ffbb78", \
       "" index 1 using 3 title "apiserver-lb uring" lc rgb "#1f77b4", \
       "" index 1 using 4 title "apiserver-lb epoll" lc rgb "#9ecae1", \
       "" index 1 using 5 title "HAProxy" lc rgb "#aaaaaa", \
       "" index 1 using 6 title "HAProxy splice" lc rgb "#666666", \
       "" index 1 using 7 title "nginx stream" lc rgb "#2ca02c"
  set style data linespoints
  set xtics norotate autofreq font ",10"
  set title "balancer RSS growth with idle connections (1 worker)"
  set xlabel "idle connections"
  set ylabel "MiB"
  set key top left autotitle columnhead
  plot for [i=2:5] "$charts/growth.dat" using 1:i lw 2
  set style data histogram
  set xtics rotate by -25 scale 0 font ",9"
  unset xlabel
  set ylabel "÷ HAProxy"
  set key noautotitle
  set title "2 workers, rates: higher is better"
  plot "$charts/chart2.dat" index 1 using 2:xtic(1) title "no balancer" lc rgb "#ffbb78", \
       "" index 1 using 3 title "apiserver-lb uring" lc rgb "#1f77b4", \
       "" index 1 using 4 title "apiserver-lb epoll" lc rgb "#9ecae1", \
       "" index 1 using 5 title "HAProxy" lc rgb "#aaaaaa", \
       "" index 1 using 6 title "HAProxy splice" lc rgb "#666666", \
       "" index 1 using 7 title "nginx stream" lc rgb "#2ca02c"
  unset multiplot
EOF
  rm -rf "$charts"
  cat "$dir/latest.md"
  log "wrote $dir/latest.md, $dir/latest.png (from $tsv)"
}

if [[ -n $report_from ]]; then
  [[ -f $report_from ]] || die "$report_from: no such file"
  report "$report_from"
  exit 0
fi

# --- tools and build -------------------------------------------------------------------------
for tool in haproxy nginx wrk gnuplot; do
  command -v "$tool" >/dev/null || { "$root/scripts/install-deps.sh" --bench; break; }
done
[[ -e /usr/lib/nginx/modules/ngx_stream_module.so ]] || "$root/scripts/install-deps.sh" --bench
for tool in haproxy nginx wrk gnuplot taskset ss pgrep; do
  command -v "$tool" >/dev/null || die "$tool is missing (scripts/install-deps.sh --bench)"
done
bin=$root/build/release
if (( build )); then
  log "building the release preset"
  (cd "$root" && cmake --preset release >/dev/null && cmake --build --preset release \
     --target apiserver-lb bulk idle >/dev/null)
fi
for b in cli/apiserver-lb bench/bulk bench/idle; do
  [[ -x $bin/$b ]] || die "$bin/$b is missing: build the release preset"
done

# 9,000 proxied connections cost a balancer 18,000 descriptors.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
(( $(ulimit -n) >= 18500 )) || die "ulimit -n is $(ulimit -n): 9,000 idle connections need 18,500"

# --- processes ---------------------------------------------------------------------------------
source "$here/procs.sh" bench

tree() { echo "$1"; pgrep -P "$1" || true; }
# CPU seconds (utime + stime) of PID and its children; fields after "(comm) " start at field 3.
cpu_seconds() {
  local p t=0 clk
  clk=$(getconf CLK_TCK)
  for p in $(tree "$1"); do
    t=$((t + $(awk '{sub(/^.*\) /, ""); print $12 + $13}' "/proc/$p/stat" 2>/dev/null || echo 0)))
  done
  awk -v t="$t" -v c="$clk" 'BEGIN { printf "%.2f", t / c }'
}
rss_kib() {
  local p t=0
  for p in $(tree "$1"); do
    t=$((t + $(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)))
  done
  echo "$t"
}
calc() { awk "BEGIN { printf \"%.6g\", $* }"; }

# --- CPU layout ---------------------------------------------------------------------------------
ncpu=$(nproc)
# cpus_for THREADS: the balancer gets the last THREADS cores, the load and the backends the rest
# (all of them when nothing is left, as with 2 workers on a 2-core machine).
layout() {
  local threads=$1
  if (( ncpu > threads )); then
    lb_cpus="$((ncpu - threads))-$((ncpu - 1))"
    load_cpus="0-$((ncpu - threads - 1))"
    load_n=$((ncpu - threads))
  else
    lb_cpus="0-$((ncpu - 1))" load_cpus="0-$((ncpu - 1))" load_n=$ncpu
  fi
}

# --- backends -----------------------------------------------------------------------------------
http_port=$((port_base + 80)) bulk_port=$((port_base + 81)) idle_port=$((port_base + 82))
mkdir -p "$work/www" "$work/nginx-backend"
head -c 128 /dev/zero | tr '\0' 'a' >"$work/www/128"
head -c 65536 /dev/zero | tr '\0' 'a' >"$work/www/65536"
backend_pids=()

start_backends() {
  local workers=$1
  cat >"$work/nginx-backend/nginx.conf" <<EOF
worker_processes $workers;
worker_rlimit_nofile 20000;
pid $work/nginx-backend/nginx.pid;
error_log $work/nginx-backend/error.log error;
daemon off;
events { worker_connections 19000; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 10000000;
  keepalive_timeout 300s;
  default_type application/octet-stream;
  server {
    listen 127.0.0.1:$http_port reuseport backlog=4096;
    root $work/www;
  }
}
EOF
  spawn backend-nginx "$load_cpus" nginx -e "$work/nginx-backend/error.log" -p "$work/nginx-backend" \
    -c "$work/nginx-backend/nginx.conf"
  backend_pids+=("$spawned")
  wait_listen $http_port "$spawned"
  spawn backend-bulk "$load_cpus" "$bin/bench/bulk" server --listen "127.0.0.1:$bulk_port"
  backend_pids+=("$spawned")
  wait_listen $bulk_port "$spawned"
  spawn backend-idle "$load_cpus" "$bin/bench/idle" server --listen "127.0.0.1:$idle_port"
  backend_pids+=("$spawned")
  wait_listen $idle_port "$spawned"
  curl -fsS -o /dev/null "http://127.0.0.1:$http_port/128" || die "the nginx backend does not answer"
}
stop_backends() {
  local pid
  for pid in "${backend_pids[@]}"; do stop "$pid"; done
  backend_pids=()
}

# --- balancers ----------------------------------------------------------------------------------
# start_subject SUBJECT THREADS LISTEN_PORT BACKEND_PORT: sets $lb_pid ("" for direct).
start_subject() {
  local subject=$1 threads=$2 port=$3 backend=$4 dir=$work/$1
  mkdir -p "$dir"
  lb_pid=""
  case "$subject" in
    direct) return 0 ;;
    apiserver-lb|apiserver-lb-epoll)
      local engine=uring
      [[ $subject == apiserver-lb-epoll ]] && engine=epoll
      cat >"$dir/config.yaml" <<EOF
listen: ["127.0.0.1:$port"]
admin: { listen: "" }
targets: ["127.0.0.1:$backend"]
balance: least_connections
threads: $threads
relay: { engine: $engine }
log: { level: warn }
EOF
      spawn "$subject" "$lb_cpus" "$bin/cli/apiserver-lb" run --config "$dir/config.yaml" ;;
    haproxy|haproxy-splice)
      local splice=""
      [[ $subject == haproxy-splice ]] && splice=$'  option splice-request\n  option splice-response'
      cat >"$dir/haproxy.cfg" <<EOF
global
  nbthread $threads
  maxconn 9400
  maxpipes 200
defaults
  mode tcp
  maxconn 9400
  timeout connect 2s
  timeout client 1h
  timeout server 1h
$splice
frontend fe
  bind 127.0.0.1:$port
  default_backend be
backend be
  balance leastconn
  server s1 127.0.0.1:$backend check inter 2s
EOF
      spawn "$subject" "$lb_cpus" haproxy -db -f "$dir/haproxy.cfg" ;;
    nginx)
      cat >"$dir/nginx.conf" <<EOF
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
worker_processes $threads;
worker_rlimit_nofile 20000;
pid $dir/nginx.pid;
error_log $dir/error.log error;
daemon off;
events { worker_connections 19500; }
stream {
  upstream be { least_conn; server 127.0.0.1:$backend; }
  server {
    listen 127.0.0.1:$port reuseport backlog=4096;
    proxy_pass be;
    proxy_connect_timeout 2s;
    proxy_timeout 1h;
    proxy_half_close on;
  }
}
EOF
      spawn "$subject" "$lb_cpus" nginx -e "$dir/error.log" -p "$dir" -c "$dir/nginx.conf" ;;
    *) die "unknown subject $subject" ;;
  esac
  lb_pid=$spawned
  wait_listen "$port" "$lb_pid"
  sleep 0.3  # let workers (nginx) and health checks settle before measuring
}
stop_subject() { [[ -z $lb_pid ]] || stop "$lb_pid"; lb_pid=""; }

# --- measurements -------------------------------------------------------------------------------
results=$work/results.tsv
: >"$results"
record() { printf '%s\t%s\t%s\t%s\t%s\n' "$phase" "$round" "$subject" "$1" "$2" >>"$results"; }
t0=$SECONDS
over_budget() { (( SECONDS - t0 > budget )); }

# A port per subject and workload: TIME_WAIT left by one run never meets the next.
port_for() {
  local i=0 s
  for s in direct apiserver-lb apiserver-lb-epoll haproxy haproxy-splice nginx; do
    [[ $s == "$subject" ]] && break
    i=$((i + 1))
  done
  echo $((port_base + 100 + 10 * i + $1))
}

# bulk STREAMS KEY WORKLOAD_INDEX
bulk() {
  local streams=$1 key=$2 port backend=$bulk_port cpu0="" cpu1="" line bytes gbps
  port=$(port_for "$3")
  start_subject "$subject" "$threads" "$port" "$backend" || return 0
  [[ $subject == direct ]] && port=$backend
  [[ -n $lb_pid ]] && cpu0=$(cpu_seconds "$lb_pid")
  line=$(timeout $((${dur%.*} + 30)) taskset -c "$load_cpus" "$bin/bench/bulk" client \
           --connect "127.0.0.1:$port" --streams "$streams" --seconds "$dur" || true)
  if [[ -n $lb_pid ]]; then cpu1=$(cpu_seconds "$lb_pid"); fi
  stop_subject
  if [[ $line != *gbps=* || $line == *error=* ]]; then
    log "  $subject bulk x$streams failed: $line"
    return 0
  fi
  bytes=${line#*bytes=}; bytes=${bytes%% *}
  gbps=${line#*gbps=}; gbps=${gbps%% *}
  record "${key}_gbps" "$gbps"
  [[ -n $cpu0 ]] && record "${key}_cpugb" "$(calc "($cpu1 - $cpu0) / ($bytes / 1e9)")"
  log "  $subject bulk x$streams: $gbps Gbit/s${cpu0:+, $(calc "$cpu1 - $cpu0") CPU-s}"
}

# wrk output latency "123.45us" | "1.23ms" | "1.02s" -> ms
to_ms() {
  awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) n /= 1000; else if (v ~ /[0-9]s$/ && v !~ /ms$/) n *= 1000; printf "%.4g", n }'
}

# http KEY PATH WORKLOAD_INDEX [close]
http() {
  local key=$1 path=$2 close=${4:-} port backend=$http_port cpu0="" cpu1="" out rps p50 p99 n errors
  local -a extra=()
  [[ -n $close ]] && extra=(-H "Connection: close")
  port=$(port_for "$3")
  start_subject "$subject" "$threads" "$port" "$backend" || return 0
  [[ $subject == direct ]] && port=$backend
  [[ -n $lb_pid ]] && cpu0=$(cpu_seconds "$lb_pid")
  out=$(timeout $((${dur%.*} + 30)) taskset -c "$load_cpus" wrk -t"$load_n" -c50 -d"${dur}s" \
          --latency "${extra[@]}" "http://127.0.0.1:$port$path" 2>&1 || true)
  [[ -n $lb_pid ]] && cpu1=$(cpu_seconds "$lb_pid")
  stop_subject
  rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
  n=$(awk '/requests in/ {print $1}' <<<"$out")
  p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
  p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
  errors=$(grep -E 'Socket errors|Non-2xx' <<<"$out" | tr -s ' ' || true)
  if [[ -z $rps || -z $n || $n == 0 ]]; then
    log "  $subject $key failed: $(tail -3 <<<"$out")"
    return 0
  fi
  [[ -n $errors ]] && log "  $subject $key: $errors"
  if [[ $key == cc ]]; then record cc_cps "$rps"; else record "${key}_rps" "$rps"; fi
  record "${key}_p50" "$(to_ms "$p50")"
  record "${key}_p99" "$(to_ms "$p99")"
  [[ -n $cpu0 ]] && record "${key}_cpuk" "$(calc "($cpu1 - $cpu0) * 1000 * 1000 / $n")"
  log "  $subject $key: $rps/s p50 $p50 p99 $p99${cpu0:+, $(calc "$cpu1 - $cpu0") CPU-s}"
}

backend_established() { ss -Htn state established "( sport = :$idle_port )" | wc -l; }

# idle COUNT METRIC EXCHANGE(0|1) WORKLOAD_INDEX: KiB of balancer RSS per idle connection.
idle() {
  local count=$1 metric=$2 exchange=$3 port before after after_x="" client i ok=0
  [[ $subject == direct ]] && return 0
  port=$(port_for "$4")
  for ((i = 0; i < 150 && $(backend_established) > 0; i++)); do sleep 0.1; done
  start_subject "$subject" "$threads" "$port" "$idle_port" || return 0
  sleep 0.5
  before=$(rss_kib "$lb_pid")
  spawn idle-client "$load_cpus" "$bin/bench/idle" client --connect "127.0.0.1:$port" \
    --count "$count" --hold-max 120
  client=$spawned
  # Opened on the client side, then every one relayed to the backend.
  for ((i = 0; i < 600; i++)); do
    grep -q '^opened' "$work/idle-client.out" && (( $(backend_established) >= count )) && { ok=1; break; }
    dead "$client" && break
    sleep 0.1
  done
  if (( ok )); then
    sleep 1
    after=$(rss_kib "$lb_pid")
    record "$metric" "$(calc "($after - $before) / $count")"
    if (( exchange )); then
      kill -USR1 "$client"
      ok=0
      for ((i = 0; i < 300; i++)); do
        grep -q '^exchanged' "$work/idle-client.out" && { ok=1; break; }
        dead "$client" && break
        sleep 0.1
      done
      if (( ok )); then
        sleep 0.5
        after_x=$(rss_kib "$lb_pid")
        record "${metric}_x" "$(calc "($after_x - $before) / $count")"
      fi
    fi
    log "  $subject idle x$count: RSS $before -> $after${after_x:+ -> $after_x} KiB"
  else
    log "  $subject idle x$count failed: $(tail -2 "$work/idle-client.err" 2>/dev/null) (backend has $(backend_established))"
  fi
  stop "$client"
  stop_subject
}

# --- the run ------------------------------------------------------------------------------------
subjects=(direct apiserver-lb apiserver-lb-epoll haproxy haproxy-splice nginx)

# run_phase PHASE THREADS ROUNDS SECONDS IDLE(0|1)
run_phase() {
  phase=$1 threads=$2 dur=$4
  local nrounds=$3 with_idle=$5 r k s
  layout "$threads"
  log "phase $phase: $threads worker(s), balancer on CPU $lb_cpus, load and backends on CPU $load_cpus"
  start_backends "$load_n"
  for ((r = 1; r <= nrounds; r++)); do
    round=$r
    for ((k = 0; k < ${#subjects[@]}; k++)); do
      subject=${subjects[$(((k + r - 1) % ${#subjects[@]}))]}
      if over_budget; then log "time budget spent: skipping the rest of $phase"; break 2; fi
      log "round $r: $subject"
      bulk 1 bulk1 0
      bulk 8 bulk8 1
      http ka128 /128 2
      http ka64k /65536 3
      http cc /128 4 close
      (( with_idle )) && idle "$idle_count" idle_kib 1 5
    done
  done
  stop_backends
}

# RSS growth at $growth_sizes idle connections; the 9,000 row is phase t1's measurement.
run_growth() {
  awk -v n="$idle_count" -F'\t' -v OFS='\t' '$1 == "t1" && $4 == "idle_kib" && $3 != "haproxy-splice" {
    print "growth", $2, $3, n, $5 }' "$results" >>"$results"
  phase=growth threads=1 round=1
  local n
  layout 1
  log "phase growth: RSS with $growth_sizes idle connections"
  start_backends "$load_n"
  for n in $growth_sizes; do
    for subject in apiserver-lb apiserver-lb-epoll haproxy nginx; do
      if over_budget; then log "time budget spent: skipping the rest of growth"; break 2; fi
      idle "$n" "$n" 0 6
    done
  done
  stop_backends
}

uptime_before=$(uptime)
log "results go to $out; budget $((budget / 60)) min; $rounds round(s) of ${seconds}s"
run_phase t1 1 "$rounds" "$seconds" 1
run_growth
for n in ${workers#1}; do
  run_phase "t$n" "$n" 1 "$scale_seconds" "$scale_idle"  # --quick: memory is per connection, not per worker
done
uptime_after=$(uptime)

# --- report -------------------------------------------------------------------------------------
commit=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)
dirty=$(git -C "$root" status --porcelain -- lb healthcheck config 2>/dev/null | grep -q . && echo " (with uncommitted changes)" || true)
cpu_model=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
mkdir -p "$out"
{
  echo "# apiserver-lb benchmark: $(date -u +'%Y-%m-%d %H:%M UTC')"
  echo
  echo "Machine: $ncpu CPUs ($cpu_model), Linux $(uname -r), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo) RAM."
  echo "apiserver-lb $commit$dirty, binary built $(date -u -r "$bin/cli/apiserver-lb" +'%Y-%m-%d %H:%M UTC'); $(haproxy -v | head -1 | cut -d' ' -f1-3); $(nginx -v 2>&1 | cut -d' ' -f3); wrk $(wrk -v 2>&1 | head -1 | cut -d' ' -f2)."
  echo "Run: $( ((quick)) && echo "--quick, " )$rounds round(s), ${seconds}s per measurement (scaling: 1 round, ${scale_seconds}s); $(( (SECONDS - t0) / 60 )) min $(( (SECONDS - t0) % 60 )) s."
  echo "Load before: \`${uptime_before## }\`"
  echo "Load after: \`${uptime_after## }\`"
  if awk -v l="${uptime_before##*average: }" -v n="$ncpu" 'BEGIN { split(l, a, ", "); exit !(a[1] + 0 > n / 2) }'; then
    echo
    echo "**The machine was shared with other work during this run (load average above); expect noise.**"
  fi
} | sed 's/^/#| /' >"$out/latest.tsv"
cat "$results" >>"$out/latest.tsv"
report "$out/latest.tsv"
