# Sourced by the bench harnesses (compare.sh, profile.sh): a work directory, and processes that each
# lead their own process group and all go away when the script exits. `source procs.sh NAME`.
work=$(mktemp -d "/tmp/apilb-${1:-bench}.XXXXXX")
chmod 755 "$work"  # nginx workers (www-data) read the backend files
declare -A started=()  # pid -> name

cleanup() {
  local pid
  for pid in "${!started[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done
  sleep 0.3
  for pid in "${!started[@]}"; do kill -KILL -- "-$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# spawn NAME CPUS CMD...: starts CMD pinned to CPUS in its own process group; sets $spawned.
# Output goes to $work/NAME.out and $work/NAME.err.
spawn() {
  local name=$1 cpus=$2
  shift 2
  setsid taskset -c "$cpus" "$@" >"$work/$name.out" 2>"$work/$name.err" </dev/null &
  spawned=$!
  started[$spawned]=$name
}

dead() { [[ ! -e /proc/$1 ]] || [[ $(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) == Z ]]; }

# stop PID: SIGTERM to its group, SIGKILL after 5 s.
stop() {
  local pid=$1 i
  kill -TERM -- "-$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do dead "$pid" && break; sleep 0.1; done
  dead "$pid" || kill -KILL -- "-$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  unset "started[$pid]"
}

# wait_listen PORT PID: until something listens on PORT (10 s), or PID died; says why on failure.
wait_listen() {
  local i
  for ((i = 0; i < 100; i++)); do
    ss -Hltn "sport = :$1" | grep -q . && return 0
    dead "$2" && break
    sleep 0.1
  done
  echo "nothing listens on port $1 (${started[$2]:-?}):" >&2
  tail -5 "$work/${started[$2]:-none}.err" >&2 2>/dev/null || true
  return 1
}
