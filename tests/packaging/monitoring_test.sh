#!/usr/bin/env bash
# packaging/monitoring/ checked with promtool (Debian's prometheus package):
#   rules       promtool check rules on alerts.yaml
#   rules-test  promtool test rules alerts_test.yaml, and every alert has a test case
#   metrics     a real scrape of a running balancer (in front of a stand-in master, some traffic
#               relayed) passes promtool check metrics, and every metric the alerts and the
#               dashboard use is in it
#   dashboard   dashboard.json is a Grafana dashboard with the panels it promises, and every query
#               in it parses (promtool check rules on the queries turned into recording rules)
# Usage: monitoring_test.sh CASE SOURCE_DIR BINARY STANDIN. Exit 0 pass, 1 fail, 77 skip.
set -euo pipefail

case_name=$1 src=$2 binary=$3 standin=$4
mon=$src/packaging/monitoring
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

fail() { echo "FAIL: $*" >&2; exit 1; }
skip() { echo "SKIP: $*" >&2; exit 77; }
need() { command -v "$1" >/dev/null || skip "$1 is not installed (scripts/install-deps.sh installs ${2:-$1})"; }

alert_names() { sed -nE 's/^ *- alert: *([A-Za-z0-9_]+).*/\1/p' "$mon/alerts.yaml"; }

# Metric names an expression file uses: apiserver_lb_* and process_* (histogram suffixes folded).
used_metrics() {
  grep -ohE '\b(apiserver_lb|process)_[a-z_]+' "$@" | sed -E 's/_(bucket|sum|count)$//' | sort -u
}

test_rules() {
  need promtool prometheus
  promtool check rules "$mon/alerts.yaml" || fail "promtool check rules"
  echo "PASS: rules"
}

test_rules_test() {
  need promtool prometheus
  (cd "$mon" && promtool test rules alerts_test.yaml) || fail "promtool test rules"
  local name
  for name in $(alert_names); do
    grep -qE "alertname: $name\$" "$mon/alerts_test.yaml" || fail "alert $name has no unit test in alerts_test.yaml"
  done
  echo "unit-tested alerts: $(alert_names | tr '\n' ' ')"
  echo "PASS: rules-test"
}

# A port that was free a moment ago (the balancer refuses port 0 for the admin API next to a
# port-0 listener).
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# wait_for FILE REGEX: the first match of REGEX in FILE, within 10 s.
wait_for() {
  local i
  for i in $(seq 200); do
    if grep -qE "$2" "$1" 2>/dev/null; then grep -oE "$2" "$1" | head -1; return 0; fi
    sleep 0.05
  done
  cat "$1" >&2
  fail "no \"$2\" in $1"
}

test_metrics() {
  need promtool prometheus; need curl; need python3
  "$standin" --plain --name m1 --listen 127.0.0.1:0 >"$work/standin.log" 2>&1 &
  pids+=($!)
  local master
  master=$(wait_for "$work/standin.log" 'listening on 127\.0\.0\.1:[0-9]+' | sed 's/listening on //')
  local admin
  admin=127.0.0.1:$(free_port)
  printf 'health: { interval: 200ms, timeout: 100ms }\n' >"$work/config.yaml"
  "$binary" run --config "$work/config.yaml" --listen 127.0.0.1:0 --admin "$admin" \
    --target "$master" --target 127.0.0.1:1 >"$work/lb.log" 2>&1 &
  pids+=($!)
  local listen
  listen=$(wait_for "$work/lb.log" 'listening on 127\.0\.0\.1:[0-9]+' | sed 's/listening on //')
  wait_for "$work/lb.log" "target $master \(config\): unknown -> up" >/dev/null
  for _ in 1 2 3; do curl -fsS "http://$listen/" >/dev/null || fail "no answer through the balancer"; done
  curl -fsS "http://$admin/metrics" >"$work/scrape.txt" || fail "no /metrics"
  local lint
  lint=$(promtool check metrics <"$work/scrape.txt" 2>&1) || fail "promtool check metrics:"$'\n'"$lint"
  [[ -z $lint ]] || fail "promtool check metrics is not clean:"$'\n'"$lint"
  echo "promtool check metrics: clean ($(grep -vc '^#' "$work/scrape.txt") samples)"
  grep -q "^apiserver_lb_connections_total{target=\"$master\"} 3" "$work/scrape.txt" \
    || fail "the scrape does not count the relayed connections:"$'\n'"$(grep connections_total "$work/scrape.txt")"
  local name
  for name in $(used_metrics "$mon/alerts.yaml" "$mon/dashboard.json"); do
    grep -qE "^# TYPE $name " "$work/scrape.txt" || fail "$name is used by packaging/monitoring but the balancer does not expose it"
  done
  echo "metrics the alerts and dashboard use, all exposed: $(used_metrics "$mon/alerts.yaml" "$mon/dashboard.json" | tr '\n' ' ')"
  echo "PASS: metrics"
}

test_dashboard() {
  need promtool prometheus; need python3
  python3 - "$mon/dashboard.json" "$work/queries.yaml" <<'PY'
import json, sys
dash = json.load(open(sys.argv[1]))
def check(cond, what):
    if not cond:
        sys.exit(f"FAIL: dashboard: {what}")
check(dash.get("uid") == "apiserver-lb" and dash.get("title") == "apiserver-lb", "uid and title apiserver-lb")
variables = {v["name"]: v for v in dash["templating"]["list"]}
check(variables.get("datasource", {}).get("type") == "datasource", "a datasource variable (importable anywhere)")
check(variables.get("instance", {}).get("includeAll") and variables["instance"].get("multi"), "a multi-value instance variable")
panels = dash["panels"]
rows = [p for p in panels if p["type"] == "row"]
check(any(r.get("repeat") == "instance" for r in rows), "a row repeated per balancer (instance)")
titles = {p["title"] for p in panels}
for want in ("Targets up", "Failovers", "Connection rate", "Bytes", "Health check latency", "Panic mode",
             "Feed errors and reloads", "In panic mode", "Feed errors (1h)"):
    check(want in titles, f"a panel titled {want!r}")
ids = [p["id"] for p in panels]
check(len(ids) == len(set(ids)), "unique panel ids")
queries = []
for p in panels:
    if p["type"] == "row":
        continue
    check(p.get("datasource", {}).get("uid") == "${datasource}", f"panel {p['title']!r} uses the datasource variable")
    check(p.get("targets"), f"panel {p['title']!r} has queries")
    for t in p["targets"]:
        expr = t["expr"]
        for var, value in (("$__rate_interval", "1m"), ("$job", "apiserver-lb"), ("$instance", ".+")):
            expr = expr.replace(var, value)
        check("$" not in expr, f"panel {p['title']!r}: unknown variable in {t['expr']!r}")
        queries.append((p["title"], expr))
# promtool parses rule expressions: each query becomes a recording rule.
with open(sys.argv[2], "w") as out:
    out.write("groups:\n  - name: dashboard-queries\n    rules:\n")
    for i, (title, expr) in enumerate(queries):
        out.write(f"      - record: dashboard:query{i}\n        expr: {json.dumps(expr)}\n")
print(f"dashboard: {len(panels)} panels ({len(rows)} rows), {len(queries)} queries")
PY
  promtool check rules "$work/queries.yaml" >/dev/null || { promtool check rules "$work/queries.yaml"; fail "a dashboard query does not parse"; }
  echo "PASS: dashboard"
}

case $case_name in
  rules) test_rules ;;
  rules-test) test_rules_test ;;
  metrics) test_metrics ;;
  dashboard) test_dashboard ;;
  *) echo "usage: $0 rules|rules-test|metrics|dashboard SOURCE_DIR BINARY STANDIN" >&2; exit 2 ;;
esac
