#!/usr/bin/env bash
# Soak: N minutes of mixed load through one apiserver-lb with failures injected, to see that nothing
# leaks and nothing wedges. Not in CI (bench/README.md says what it prints and how to read it).
#
#   bench/soak.sh [--minutes N] [--no-build] [--build-dir DIR] [--keep]
#
#   --minutes N     how long the load runs (default 10); then the load stops and the balancer is
#                   left to settle (connections drained) before the end figures are taken
#   --build-dir D   take apiserver-lb, apiserver-standin and bench/idle from D (default
#                   build/release, built first unless --no-build); an ASan build works too (the
#                   script then keeps ASan's quarantine small, or RSS would only show the quarantine)
#   --keep          keep the work directory (logs, wrk outputs, the balancer's log) and print it
#
# Through one apiserver-lb (2 workers, tcp checks every 1 s, fall 2, rise 2, on 127.0.0.1:19443)
# to three apiserver-standin (plain HTTP) on 127.0.0.1:19101-19103, listed in a targets_file:
#   kept-alive requests   wrk, 16 connections, GET /, 5 ms pause between a connection's requests
#   new connections       wrk, 8 connections, Connection: close, 10 ms pause
#   long streams          4 curl downloads of /standin/stream paced at 1 MB/s (2 minutes each,
#                         then another): what a busy watch looks like
#   idle connections      bench/idle holding 1,000 connections, replaced by a fresh 1,000 every 60 s
# wrk runs in 10-s rounds, so its figures arrive with each line. Failures, one kind per 10-s tick,
# in a 6-tick cycle (one a minute each):
#   tick 1  SIGKILL a backend (a different one each cycle); it is started again at tick 2
#   tick 3  SIGSTOP a backend for 5 s (a hung apiserver: TCP still accepts), then SIGCONT
#   tick 4  targets_file: remove a backend (apiserver-lb targets remove); added back at tick 5
#   tick 5  targets_file replaced by garbage for a moment, then the good list again
#   tick 6  SIGHUP (reload), three times in a row
# Every 10 s one line: the balancer's descriptors, RSS, open client connections (its own count),
# what wrk did in the round (requests and errors: connect/read/write/timeout + non-2xx) and the
# long streams broken so far. At the end: baseline (after start-up, before any load) against the
# end (load stopped, connections drained) for descriptors and RSS, the peak, and every error count.
# Every process it starts leads its own process group and is killed on exit; every wait has a
# deadline.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)

minutes=10 build=1 bin="" keep=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --minutes) minutes=$2; shift ;;
    --no-build) build=0 ;;
    --build-dir) bin=$2; build=0; shift ;;
    --keep) keep=1 ;;
    -h|--help) sed -n '2,37p' "$0"; exit 0 ;;
    *) echo "soak.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
[[ $minutes =~ ^[1-9][0-9]*$ ]] || { echo "soak.sh: --minutes takes a whole number" >&2; exit 2; }

log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

bin=${bin:-$root/build/release}
if (( build )); then
  log "building the release preset (apiserver-lb apiserver-standin idle)"
  (cd "$root" && cmake --preset release >/dev/null && cmake --build --preset release \
     --target apiserver-lb apiserver-standin idle >/dev/null)
fi
lb_bin=$bin/cli/apiserver-lb standin_bin=$bin/tests/apiserver-standin idle_bin=$bin/bench/idle
for b in "$lb_bin" "$standin_bin" "$idle_bin"; do [[ -x $b ]] || die "$b is missing"; done
for tool in wrk curl ss; do command -v "$tool" >/dev/null || die "$tool is missing (scripts/install-deps.sh --bench)"; done
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

lb_port=19443 admin_port=19445 backend_ports=(19101 19102 19103)
for p in "$lb_port" "$admin_port" "${backend_ports[@]}"; do
  ss -Hltn "sport = :$p" | grep -q . && die "port $p is taken: is another soak running?"
done

# --- processes ---------------------------------------------------------------------------------
work=$(mktemp -d /tmp/apilb-soak.XXXXXX)
declare -A started=()  # pid -> name; each one leads its own process group (setsid)
cleanup() {
  local pid
  for pid in "${!started[@]}"; do kill -CONT -- "-$pid" 2>/dev/null || true; kill -TERM -- "-$pid" 2>/dev/null || true; done
  sleep 0.3
  for pid in "${!started[@]}"; do kill -KILL -- "-$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if (( keep )); then log "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# spawn NAME CMD...: CMD in its own process group, output to $work/NAME.out; sets $spawned.
spawn() {
  local name=$1
  shift
  setsid "$@" >"$work/$name.out" 2>&1 </dev/null &
  spawned=$!
  started[$spawned]=$name
}
dead() { [[ ! -e /proc/$1 ]] || [[ $(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) == Z ]]; }
# stop PID [SIGNAL]: SIGNAL (TERM) to its group, SIGKILL after 5 s.
stop() {
  local pid=$1 sig=${2:-TERM} i
  kill -CONT -- "-$pid" 2>/dev/null || true
  kill "-$sig" -- "-$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do dead "$pid" && break; sleep 0.1; done
  dead "$pid" || kill -KILL -- "-$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  unset "started[$pid]"
}
# wait_for DEADLINE_S CMD...: until CMD succeeds (polls every 0.1 s); 1 at the deadline.
wait_for() {
  local deadline=$(( $(date +%s) + $1 ))
  shift
  until "$@"; do (( $(date +%s) < deadline )) || return 1; sleep 0.1; done
}
listening() { ss -Hltn "sport = :$1" | grep -q .; }

# --- the balancer and its backends --------------------------------------------------------------
declare -a backend_pid=()
start_backend() {  # INDEX
  local i=$1
  spawn "backend$i" "$standin_bin" --plain --name "backend$i" --listen "127.0.0.1:${backend_ports[$i]}"
  backend_pid[$i]=$spawned
  wait_for 10 listening "${backend_ports[$i]}" || die "backend$i did not start: $(tail -3 "$work/backend$i.out")"
}
for i in 0 1 2; do start_backend "$i"; done

feed=$work/targets.yaml
good_feed() { "$lb_bin" targets set "${backend_ports[@]/#/127.0.0.1:}" --file "$feed" >/dev/null; }
good_feed
cat >"$work/config.yaml" <<EOF
listen: ["127.0.0.1:$lb_port"]
admin: { listen: "127.0.0.1:$admin_port" }
targets_file: $feed
health: { mode: tcp, interval: 1s, timeout: 500ms, rise: 2, fall: 2 }
upstream: { connect_timeout: 1s, retries: 2 }
drain_timeout: 5s
threads: 2
log: { level: info }
EOF
lb_env=()
if [[ $(nm -D "$lb_bin" 2>/dev/null | grep -c __asan_init) -gt 0 ]]; then
  lb_env=(env "ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}quarantine_size_mb=4:thread_local_quarantine_size_kb=256")
  log "$lb_bin is an ASan build: RSS figures include ASan's shadow memory and a 4 MiB quarantine"
fi
spawn lb "${lb_env[@]}" "$lb_bin" run --config "$work/config.yaml"
lb=$spawned
wait_for 10 listening "$lb_port" || die "apiserver-lb did not start: $(tail -5 "$work/lb.out")"

metrics() { curl -sf --max-time 2 "http://127.0.0.1:$admin_port/metrics" || true; }
# metric NAME [LABEL-FILTER]: the sum of the samples of NAME (whose labels contain the filter).
metric() {
  awk -v name="$1" -v filter="${2:-}" '
    $1 == name || index($1, name "{") == 1 { if (filter == "" || index($1, filter)) { s += $NF; seen = 1 } }
    END { printf "%d", seen ? s : -1 }' <<<"$metrics_text"
}
targets_up() { metrics_text=$(metrics); [[ $(metric apiserver_lb_target_up) == 3 ]]; }
wait_for 15 targets_up || die "the three backends did not come up: $(tail -5 "$work/lb.out")"
fds() { ls "/proc/$lb/fd" 2>/dev/null | wc -l; }
rss() { awk '/^VmRSS:/ {print $2}' "/proc/$lb/status" 2>/dev/null || echo -1; }

base_fds=$(fds) base_rss=$(rss)
log "apiserver-lb pid $lb up, 3 backends; baseline: $base_fds fds, $base_rss KiB RSS; soaking for $minutes min"

# --- load ---------------------------------------------------------------------------------------
cat >"$work/keepalive.lua" <<'EOF'
function delay() return 5 end
EOF
cat >"$work/close.lua" <<'EOF'
wrk.headers["Connection"] = "close"
function delay() return 10 end
EOF
url=http://127.0.0.1:$lb_port
# wrk_round TICK: one 10-s round of each wrk load, in the background.
wrk_round() {
  spawn "wrk-keepalive-$1" wrk -t1 -c16 -d10s --timeout 3s -s "$work/keepalive.lua" "$url/"
  spawn "wrk-close-$1" wrk -t1 -c8 -d10s --timeout 3s -s "$work/close.lua" "$url/"
}
# wrk_result FILE: "requests errors" (socket errors of every kind + non-2xx/3xx answers).
wrk_result() {
  awk '
    / requests in / { r = $1 }
    /Socket errors:/ { gsub(/,/, ""); e += $4 + $6 + $8 + $10 }
    /Non-2xx or 3xx responses:/ { e += $NF }
    END { printf "%d %d\n", r, e }' "$1" 2>/dev/null || echo "0 0"
}
# A long stream: curl downloads paced at 1 MB/s, one after another, counting the broken ones.
stream_loop() {
  local n=$1 ok=0 broken=0
  while :; do
    if curl -sf -o /dev/null --limit-rate 1M --max-time 150 "$url/standin/stream?bytes=120000000"; then
      ok=$((ok + 1))
    else
      broken=$((broken + 1))
    fi
    echo "$ok $broken" >"$work/stream$n.count"
  done
}
for n in 1 2 3 4; do
  echo "0 0" >"$work/stream$n.count"
  spawn "stream$n" bash -c "$(declare -f stream_loop); url=$url work=$work; stream_loop $n"
done
streams_broken() { cat "$work"/stream*.count | awk '{ b += $2 } END { print b + 0 }'; }
streams_done() { cat "$work"/stream*.count | awk '{ d += $1 } END { print d + 0 }'; }
idle_client=""
idle_restart() {
  [[ -n $idle_client ]] && stop "$idle_client"
  spawn idle "$idle_bin" client --connect "127.0.0.1:$lb_port" --count 1000 --hold-max $(( minutes * 60 + 120 ))
  idle_client=$spawned
}

# --- failures -----------------------------------------------------------------------------------
events=()
inject() {  # TICK
  local tick=$1 victim=$(( ($1 - 1) / 6 % 3 ))
  case $(( (tick - 1) % 6 + 1 )) in
    1) kill -KILL -- "-${backend_pid[$victim]}" 2>/dev/null || true
       wait "${backend_pid[$victim]}" 2>/dev/null || true
       unset "started[${backend_pid[$victim]}]"
       events+=("kill backend$victim") ;;
    2) start_backend "$victim"; events+=("restart backend$victim") ;;
    3) kill -STOP -- "-${backend_pid[$victim]}"
       ( sleep 5; kill -CONT -- "-${backend_pid[$victim]}" 2>/dev/null ) &
       events+=("SIGSTOP backend$victim 5s") ;;
    4) "$lb_bin" targets remove "127.0.0.1:${backend_ports[$victim]}" --file "$feed" >/dev/null
       events+=("feed: remove backend$victim") ;;
    5) printf 'targets: [this is {not yaml\n' >"$feed.tmp" && mv "$feed.tmp" "$feed"
       sleep 1
       good_feed
       events+=("feed: garbage, then the full list") ;;
    6) for _ in 1 2 3; do kill -HUP "$lb"; done; events+=("SIGHUP x3") ;;
  esac
}

# --- the run ------------------------------------------------------------------------------------
requests=0 errors=0 peak_fds=$base_fds peak_rss=$base_rss
printf '%-8s %6s %9s %6s %9s %7s %8s %7s  %s\n' time fds rss_kib conns requests errors streams broken event
end=$(( $(date +%s) + minutes * 60 ))
# A tick is one wrk round (10 s) plus the bookkeeping: ticks run until the time is up.
for ((tick = 1; $(date +%s) < end; tick++)); do
  (( tick % 6 == 1 )) && idle_restart
  wrk_round "$tick"
  events=()
  inject "$tick"
  for pid in "${!started[@]}"; do
    [[ ${started[$pid]} == wrk-*-"$tick" ]] && { wait_for 20 dead "$pid" || log "wrk round $tick did not end"; }
  done
  read -r rk ek < <(wrk_result "$work/wrk-keepalive-$tick.out")
  read -r rc ec < <(wrk_result "$work/wrk-close-$tick.out")
  for pid in "${!started[@]}"; do [[ ${started[$pid]} == wrk-*-"$tick" ]] && stop "$pid"; done
  requests=$((requests + rk + rc)) errors=$((errors + ek + ec))
  dead "$lb" && die "apiserver-lb exited: $(tail -20 "$work/lb.out")"
  metrics_text=$(metrics)
  f=$(fds) r=$(rss)
  (( f > peak_fds )) && peak_fds=$f
  (( r > peak_rss )) && peak_rss=$r
  printf '%-8s %6d %9d %6d %9d %7d %8d %7d  %s\n' "$(date +%T)" "$f" "$r" \
    "$(metric apiserver_lb_client_connections_active)" $((rk + rc)) $((ek + ec)) \
    "$(streams_done)" "$(streams_broken)" "$(IFS=,; echo "${events[*]:-}")"
done

# --- settle and sum up --------------------------------------------------------------------------
log "load stopped; waiting for the balancer to drain its connections"
for pid in "${!started[@]}"; do
  case ${started[$pid]} in stream*|idle|wrk-*) stop "$pid" ;; esac
done
for i in 0 1 2; do kill -CONT -- "-${backend_pid[$i]}" 2>/dev/null || true; done
good_feed
drained() { metrics_text=$(metrics); [[ $(metric apiserver_lb_client_connections_active) == 0 ]]; }
wait_for 30 drained || log "connections still open after 30 s: $(metric apiserver_lb_client_connections_active)"
wait_for 15 targets_up || log "not every backend is up again"
sleep 2  # let the allocator hand back what the last connections held
metrics_text=$(metrics)
end_fds=$(fds) end_rss=$(rss)
log_lines=$(wc -l <"$work/lb.out")
bugs=$(grep -c 'bug:' "$work/lb.out" || true)
cat <<EOF

soak summary: $minutes min of mixed load, $((tick - 1)) ticks, $("$lb_bin" version 2>/dev/null | head -1)
  descriptors   baseline $base_fds, peak $peak_fds, end $end_fds ($(( end_fds - base_fds )) after settling)
  RSS KiB       baseline $base_rss, peak $peak_rss, end $end_rss ($(( end_rss - base_rss )) after settling)
  client side   $requests wrk requests, $errors errors (socket errors + non-2xx); long streams: $(streams_done) completed, $(streams_broken) broken
  balancer      client connections failed (no target answered) $(metric apiserver_lb_client_connections_failed_total), rejected $(metric apiserver_lb_client_connections_rejected_total), connect failures $(metric apiserver_lb_connect_failures_total), failovers $(metric apiserver_lb_failovers_total)
                reloads ok $(metric apiserver_lb_config_reloads_total 'result="success"') failed $(metric apiserver_lb_config_reloads_total 'result="failure"'), feed errors $(metric apiserver_lb_target_feed_errors_total), panic mode now $(metric apiserver_lb_panic_mode)
  log           $log_lines lines, $bugs "bug:" lines (exceptions escaping a coroutine)
EOF
dead "$lb" && die "apiserver-lb is not running at the end"
exit 0
