#!/usr/bin/env bash
# What packaging/ ships, checked without installing anything on this machine:
#   deb         cpack -G DEB builds the package; dpkg-deb -I/-c show the fields, maintainer
#               scripts, conffile and files it must hold
#   unit        systemd-analyze verify on the unit (in a scratch root holding the binary), and its
#               hardening settings; prints systemd-analyze security's exposure score
#   config      the default config passes check-config, also with every commented default enabled
#   manifest    the static pod manifest parses and has what a master needs
#   keepalived  the template, rendered, passes keepalived's config test; the notify hook works
#   container   the image built for real from the package (packaging/container/build-image.sh,
#               podman, vfs storage, FROM scratch: no registry), run as the static pod would, and
#               checked: it relays, uid 65532, CAP_NET_BIND_SERVICE alone, no new privileges
# Usage: packaging_test.sh CASE SOURCE_DIR BUILD_DIR APISERVER_LB_BINARY. Exit 0 pass, 1 fail,
# 77 skip (a tool is missing; the message says which).
set -euo pipefail

case_name=$1 src=$2 build=$3 binary=$4
work=$(mktemp -d)
scratch_ns=""  # a network namespace to delete on exit
engine=()      # podman's storage options, once the container case has set them up
cleanup() {
  if [[ -n $scratch_ns ]]; then ip netns del "$scratch_ns" 2>/dev/null || true; fi
  if [[ ${#engine[@]} -gt 0 ]]; then podman "${engine[@]}" rm --all --force >/dev/null 2>&1 || true; fi
  jobs -p | xargs -r kill 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

fail() { echo "FAIL: $*" >&2; exit 1; }
skip() { echo "SKIP: $*" >&2; exit 77; }
need() { command -v "$1" >/dev/null || skip "$1 is not installed (scripts/install-deps.sh installs ${2:-$1})"; }
# expect TEXT NEEDLE WHAT: fails unless TEXT contains the line-fragment NEEDLE.
expect() { grep -qF -- "$2" <<<"$1" || fail "$3: no \"$2\" in:"$'\n'"$1"; }

test_deb() {
  need cpack cmake; need dpkg-deb dpkg; need dpkg-shlibdeps dpkg-dev; need file
  # A private package directory: the build tree stays clean and parallel runs do not collide.
  local started=$SECONDS
  cpack -G DEB --config "$build/CPackConfig.cmake" -B "$work/out" >"$work/cpack.log" 2>&1 \
    || { cat "$work/cpack.log" >&2; fail "cpack -G DEB failed"; }
  local debs=("$work"/out/apiserver-lb_*.deb)
  [[ -f ${debs[0]} ]] || { cat "$work/cpack.log" >&2; fail "no apiserver-lb_*.deb in the cpack output"; }
  local deb=${debs[0]}
  echo "built $(basename "$deb") ($(du -h "$deb" | cut -f1)) in $((SECONDS - started)) s"

  local info contents
  info=$(dpkg-deb -I "$deb")
  echo "$info"
  expect "$info" "Package: apiserver-lb" "control"
  expect "$info" "Architecture: $(dpkg --print-architecture)" "control"
  expect "$info" "Maintainer: " "control"
  expect "$info" "Section: net" "control"
  expect "$info" " Description: TCP load balancer and health checker for kube-apiserver" "control"
  local depends
  depends=$(dpkg-deb -f "$deb" Depends)
  for lib in libc6 libstdc++6 libssl3 libyaml-cpp adduser; do
    [[ $depends == *"$lib"* ]] || fail "Depends lacks $lib (shlibdeps): $depends"
  done
  for script in postinst prerm postrm conffiles; do
    expect "$info" " $script" "control members"
  done
  local conffiles
  conffiles=$(dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./conffiles)
  [[ $conffiles == "/etc/apiserver-lb/config.yaml" ]] || fail "conffiles is \"$conffiles\""
  local postinst
  postinst=$(dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./postinst)
  grep -Eq 'adduser .*--system --group' <<<"$postinst" || fail "postinst does not create the apiserver-lb system user"
  grep -Eq '/usr/bin/apiserver-lb upgrade' <<<"$postinst" || fail "postinst does not hand a running service over on upgrade"

  contents=$(dpkg-deb -c "$deb")
  echo "$contents"
  expect "$contents" "-rwxr-xr-x root/root" "binary mode"
  for path in ./usr/bin/apiserver-lb ./lib/systemd/system/apiserver-lb.service ./etc/apiserver-lb/config.yaml \
              ./usr/lib/apiserver-lb/keepalived-notify ./usr/share/apiserver-lb/keepalived/keepalived.conf.template \
              ./usr/share/apiserver-lb/kubernetes/apiserver-lb-static-pod.yaml ./usr/share/doc/apiserver-lb/README.md \
              ./usr/lib/apiserver-lb/apiserver-lb-bgp-gate ./lib/systemd/system/apiserver-lb-bgp-gate.service \
              ./usr/share/apiserver-lb/bgp/bird.conf.template ./usr/share/apiserver-lb/bgp/router-bird.conf.example; do
    expect "$contents" " $path" "package contents"
  done
  grep -E ' \./usr/bin/apiserver-lb$' <<<"$contents" | grep -q '^-rwxr-xr-x root/root' || fail "binary not 0755 root"
  grep -E ' \./usr/lib/apiserver-lb/keepalived-notify$' <<<"$contents" | grep -q '^-rwxr-xr-x' \
    || fail "notify hook not executable"
  grep -E ' \./usr/lib/apiserver-lb/apiserver-lb-bgp-gate$' <<<"$contents" | grep -q '^-rwxr-xr-x' \
    || fail "BGP gate not executable"
  if grep -E ' \./(home|tmp|usr/local|root)/' <<<"$contents"; then fail "files outside the package's paths"; fi

  # The packaged binary runs, and the files match the sources.
  dpkg-deb -x "$deb" "$work/root"
  "$work/root/usr/bin/apiserver-lb" version | grep -q "^apiserver-lb " || fail "packaged binary does not run"
  cmp "$work/root/etc/apiserver-lb/config.yaml" "$src/packaging/config.yaml"
  cmp "$work/root/lib/systemd/system/apiserver-lb.service" "$src/packaging/systemd/apiserver-lb.service"

  # apiserver-lb(8), made from --help: a section 8 page naming every command and flag of the help.
  expect "$contents" " ./usr/share/man/man8/apiserver-lb.8.gz" "package contents (the man page)"
  local page help flag
  page=$(zcat "$work/root/usr/share/man/man8/apiserver-lb.8.gz")
  help=$(ASAN_OPTIONS=detect_leaks=0 "$work/root/usr/bin/apiserver-lb" --help)
  grep -q '^\.TH APISERVER-LB "8"' <<<"$page" || fail "the man page is not apiserver-lb(8)"
  grep -q '^\.SH SYNOPSIS' <<<"$page" || fail "the man page has no SYNOPSIS (is --help still in help2man's shape?)"
  for flag in $(grep -oE -- '--[a-z-]+' <<<"$help" | sort -u) run check-config targets status check-san version; do
    grep -qF -- "${flag//-/\\-}" <<<"$page" || fail "the man page lacks $flag, which --help lists"
  done
  echo "man page: $(grep -c '^\.SH' <<<"$page") sections, every command and flag of --help"
  echo "PASS: package"
}

test_unit() {
  need systemd-analyze systemd
  local unit=$src/packaging/systemd/apiserver-lb.service
  # `verify` checks that ExecStart & co. exist: give it a root with the binary where the unit
  # says, /bin/kill for ExecReload, and systemd's own units for the dependencies.
  local root=$work/root
  mkdir -p "$root/usr/bin" "$root/bin" "$root/lib/systemd/system"
  cp "$binary" "$root/usr/bin/apiserver-lb"
  cp "$(type -P kill)" "$root/bin/kill"
  cp -a /lib/systemd/system/. "$root/lib/systemd/system/" 2>/dev/null || true
  cp "$unit" "$root/lib/systemd/system/apiserver-lb.service"
  local out
  out=$(systemd-analyze verify --root="$root" "$root/lib/systemd/system/apiserver-lb.service" 2>&1) \
    || fail "systemd-analyze verify:"$'\n'"$out"
  [[ -z $out ]] || fail "systemd-analyze verify is not clean:"$'\n'"$out"
  echo "systemd-analyze verify: clean"

  local settings=(
    "User=apiserver-lb" "AmbientCapabilities=CAP_NET_BIND_SERVICE" "CapabilityBoundingSet=CAP_NET_BIND_SERVICE"
    "NoNewPrivileges=yes" "ProtectSystem=strict" "ProtectHome=yes" "PrivateTmp=yes" "LimitNOFILE=1048576"
    "Restart=on-failure" "ExecReload=/bin/kill -HUP \$MAINPID" "Type=notify" "NotifyAccess=main"
    "ExecStart=/usr/bin/apiserver-lb run --config /etc/apiserver-lb/config.yaml"
  )
  for s in "${settings[@]}"; do grep -qxF -- "$s" "$unit" || fail "the unit lacks $s"; done
  # No other capability may slip in.
  [[ $(grep -c '^CapabilityBoundingSet=' "$unit") == 1 ]] || fail "more than one CapabilityBoundingSet line"

  local security
  if security=$(systemd-analyze security --offline=true --root="$root" \
                  "$root/lib/systemd/system/apiserver-lb.service" 2>&1); then
    grep -F "Overall exposure level" <<<"$security" || true
  fi
  echo "PASS: unit"
}

test_config() {
  "$binary" check-config --config "$src/packaging/config.yaml" || fail "the shipped config does not pass check-config"
  # Every commented-out default, enabled, must be valid too (and is what the comments promise).
  sed -E 's/^# ((admin|targets|first_master|balance|health|upstream|tcp|relay|limits|drain_timeout|threads|log):.*)$/\1/;
          s/^# ( +path: .*)$/\1/' "$src/packaging/config.yaml" >"$work/all.yaml"
  local enabled
  enabled=$(grep -cE '^(admin|targets|first_master|balance|health|upstream|tcp|relay|limits|drain_timeout|threads|log):' "$work/all.yaml")
  [[ $enabled -ge 12 ]] || fail "expected the commented defaults to uncomment into 12+ keys, got $enabled"
  "$binary" check-config --config "$work/all.yaml" || { cat "$work/all.yaml" >&2; fail "the commented defaults are not valid"; }
  echo "PASS: config"
}

test_manifest() {
  need python3
  python3 -c 'import yaml' 2>/dev/null || skip "python3-yaml is not installed (scripts/install-deps.sh installs python3-yaml)"
  python3 - "$src/packaging/kubernetes/apiserver-lb-static-pod.yaml" <<'PY'
import sys, yaml
docs = list(yaml.safe_load_all(open(sys.argv[1])))
assert len(docs) == 1, f"one document expected, got {len(docs)}"
pod = docs[0]
def check(cond, what):
    if not cond:
        sys.exit(f"FAIL: manifest: {what}")
check(pod["apiVersion"] == "v1" and pod["kind"] == "Pod", "a v1 Pod")
check(pod["metadata"]["namespace"] == "kube-system", "in kube-system")
spec = pod["spec"]
check(spec.get("hostNetwork") is True, "hostNetwork: true")
check(spec.get("priorityClassName") == "system-node-critical", "priorityClassName system-node-critical")
check(spec.get("dnsPolicy") == "Default", "dnsPolicy Default (no cluster DNS before the apiserver)")
(c,) = spec["containers"]
check(c["command"][:2] == ["/usr/bin/apiserver-lb", "run"], "runs apiserver-lb run")
config = c["command"][c["command"].index("--config") + 1]
for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
    get = c[probe]["httpGet"]
    check(get["path"] == path and get["port"] == 9445 and get["host"] == "127.0.0.1", f"{probe} on 127.0.0.1:9445{path}")
requests = c["resources"]["requests"]
check("cpu" in requests and "memory" in requests, "cpu and memory requests")
sc = c["securityContext"]
check(sc["runAsNonRoot"] is True and sc["runAsUser"] != 0, "runs as non-root")
check(sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"], "no privileges")
volumes = {v["name"]: v for v in spec["volumes"]}
mounts = {m["name"]: m for m in c["volumeMounts"]}
mount = mounts["config"]
volume = volumes[mount["name"]]
check(volumes["state"]["hostPath"]["path"] == "/var/lib/apiserver-lb" and
      mounts["state"]["mountPath"] == "/var/lib/apiserver-lb" and
      any(e["name"] == "STATE_DIRECTORY" and e["value"] == "/var/lib/apiserver-lb" for e in c["env"]),
      "a writable state directory for the last good target list")
check(volume["hostPath"]["path"] == "/etc/apiserver-lb" and volume["hostPath"]["type"] == "Directory",
      "the config directory from hostPath (a directory: the targets file is replaced by rename)")
check(mount["mountPath"] == "/etc/apiserver-lb" and mount.get("readOnly") is True, "mounted read-only at /etc/apiserver-lb")
check(config.startswith(mount["mountPath"] + "/"), "--config inside the mounted directory")
print(f"manifest: {pod['kind']} {pod['metadata']['namespace']}/{pod['metadata']['name']}, image {c['image']}")
PY
  echo "PASS: manifest"
}

test_keepalived() {
  need keepalived
  local template=$src/packaging/keepalived/keepalived.conf.template
  for name in VIP INTERFACE ROUTER_ID PRIORITY AUTH_PASS CHECK NOTIFY SCRIPT_USER; do
    grep -q "^\$$name=" "$template" || fail "the template defines no \$$name"
  done
  grep -qx '    state BACKUP' "$template" || fail "the instance is not state BACKUP"
  grep -qx '    nopreempt' "$template" || fail "the instance lacks nopreempt"
  grep -q 'http://127.0.0.1:9445/healthz' "$template" || fail "the check does not use /healthz"
  grep -q '^    track_script {' "$template" || fail "the instance tracks no script"
  grep -q "^    notify \\\$NOTIFY" "$template" || fail "the instance has no notify hook"

  # keepalived's config test wants the interface to exist and take multicast, the hook to exist
  # and be safe: render the template with only NOTIFY changed, in a scratch network namespace with
  # an eth0 (the template's default). keepalived 2.2's config test kills itself with SIGTERM when
  # script_user is not root, so it is rendered with root here; tests/e2e/keepalived_test.cpp runs
  # the real daemon with an unprivileged script user.
  install -m 0755 "$src/packaging/keepalived/keepalived-notify" "$work/keepalived-notify"
  chmod 0755 "$work"
  sed -e "s|^\$NOTIFY=.*|\$NOTIFY=\"$work/keepalived-notify\"|" \
      -e "s|^\$SCRIPT_USER=.*|\$SCRIPT_USER=root|" "$template" >"$work/keepalived.conf"
  local out
  scratch_ns=apilb-kt-$$
  [[ $(id -u) == 0 ]] || skip "keepalived's config test needs root (a scratch network namespace with eth0)"
  ip netns add "$scratch_ns" 2>"$work/ns.err" || skip "cannot create a network namespace: $(cat "$work/ns.err")"
  ip -n "$scratch_ns" link add eth0 type veth peer name eth1
  ip -n "$scratch_ns" link set eth0 up
  out=$(ip netns exec "$scratch_ns" keepalived --config-test --use-file="$work/keepalived.conf" 2>&1) \
    || fail "keepalived --config-test:"$'\n'"$out"
  [[ -z $out ]] || fail "keepalived --config-test is not clean:"$'\n'"$out"
  echo "keepalived --config-test: clean"

  # The hook: logs, records the state when given a file, refuses nonsense.
  "$work/keepalived-notify" "$work/state" INSTANCE apiserver_lb MASTER 110 2>/dev/null
  grep -q '^MASTER [0-9]' "$work/state" || fail "the notify hook did not record MASTER: $(cat "$work/state")"
  "$work/keepalived-notify" INSTANCE apiserver_lb FAULT 0 2>/dev/null || fail "the hook fails without a state file"
  if "$work/keepalived-notify" 2>/dev/null; then fail "the hook accepts no arguments"; fi
  if command -v shellcheck >/dev/null; then
    shellcheck "$src/packaging/keepalived/keepalived-notify" "$src"/packaging/debian/{postinst,prerm,postrm} \
      || fail "shellcheck"
  fi
  echo "PASS: keepalived"
}

# A port on 127.0.0.1 that was free a moment ago; below 1024 with "low" (binding it needs
# CAP_NET_BIND_SERVICE).
free_port() {
  python3 - "${1:-}" <<'PY'
import random, socket, sys
ports = random.sample(range(600, 1000), 100) if sys.argv[1] == "low" else [0]
for port in ports:
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
    except OSError:
        continue
    print(s.getsockname()[1])
    break
PY
}

test_container() {
  local file=$src/packaging/container/Containerfile
  local user
  user=$(grep -E '^USER ' "$file" | tail -1 | awk '{print $2}')
  [[ $user =~ ^[1-9][0-9]*(:[0-9]+)?$ ]] || fail "the image must end with a numeric non-root USER, not \"$user\""
  # The static pod's runAsUser must be the image's user.
  grep -q "runAsUser: ${user%%:*}" "$src/packaging/kubernetes/apiserver-lb-static-pod.yaml" \
    || fail "the static pod's runAsUser is not the image's uid ${user%%:*}"
  grep -q '^ENTRYPOINT \["/usr/bin/apiserver-lb"\]' "$file" || fail "ENTRYPOINT is not /usr/bin/apiserver-lb"
  grep -q '^FROM scratch$' "$file" || fail "the image is not FROM scratch (a build must not need a registry)"

  need podman; need cpack cmake; need dpkg-deb dpkg; need python3; need curl
  # Storage of its own (vfs: no overlay mount needed), removed with $work. runc rather than crun:
  # crun 1.8 refuses to start anything on a hybrid cgroup hierarchy, which some VMs have.
  engine=(--storage-driver vfs --root "$work/storage" --runroot "$work/run")
  if command -v runc >/dev/null; then engine+=(--runtime runc); fi
  podman "${engine[@]}" info >"$work/info.log" 2>&1 || skip "podman cannot run here: $(tail -1 "$work/info.log")"

  cpack -G DEB --config "$build/CPackConfig.cmake" -B "$work/out" >"$work/cpack.log" 2>&1 \
    || { cat "$work/cpack.log" >&2; fail "cpack -G DEB failed"; }
  local debs=("$work"/out/apiserver-lb_*.deb)
  local image=localhost/apiserver-lb:test-$$ started=$SECONDS
  "$src/packaging/container/build-image.sh" --deb "${debs[0]}" --tag "$image" -- "${engine[@]}" >"$work/build.log" 2>&1 \
    || { cat "$work/build.log" >&2; fail "build-image.sh failed"; }
  local bytes
  bytes=$(podman "${engine[@]}" image inspect --format '{{.Size}}' "$image")
  echo "built $image from $(basename "${debs[0]}") in $((SECONDS - started)) s: $((bytes / 1024 / 1024)) MiB ($bytes bytes; the package of this build, $(ldd "$binary" | grep -q libasan && echo "an ASan build: libasan and libubsan inside" || echo "no sanitizer"))"
  [[ $(podman "${engine[@]}" image inspect --format '{{.Config.User}}' "$image") == "$user" ]] || fail "the image's user is not $user"

  # Run it as the static pod would: host network, read-only root, non-root, every capability
  # dropped but NET_BIND_SERVICE, no new privileges; the config from a read-only mount. It listens
  # on a port below 1024, which only that capability allows.
  "$build/tests/apiserver-standin" --plain --name container-master --listen 127.0.0.1:0 >"$work/standin.log" 2>&1 &
  local standin_pid=$!
  local master="" i
  for i in $(seq 100); do
    master=$(grep -oE 'listening on 127\.0\.0\.1:[0-9]+' "$work/standin.log" | sed 's/listening on //') && [[ -n $master ]] && break
    sleep 0.05
  done
  [[ -n $master ]] || fail "the stand-in master did not start"
  local listen admin
  listen=127.0.0.1:$(free_port low) admin=127.0.0.1:$(free_port)
  mkdir -p "$work/etc"
  printf 'listen: ["%s"]\nadmin: { listen: "%s" }\ntargets: ["%s"]\nhealth: { interval: 200ms, timeout: 100ms }\n' \
    "$listen" "$admin" "$master" >"$work/etc/config.yaml"
  chmod -R a+rX "$work/etc" "$work"
  local run=(podman "${engine[@]}" run --detach --network host --read-only --user "$user"
             --cap-drop ALL --security-opt no-new-privileges
             --ulimit nofile=4096:4096 --ulimit nproc=1024:1024   # below any hard limit: no CAP_SYS_RESOURCE here
             --env ASAN_OPTIONS=detect_leaks=0                    # LeakSanitizer cannot stop the world without ptrace
             --volume "$work/etc:/etc/apiserver-lb:ro")
  local id
  id=$("${run[@]}" --cap-add NET_BIND_SERVICE "$image" run --config /etc/apiserver-lb/config.yaml) \
    || { kill "$standin_pid"; fail "podman run failed"; }
  local status="" ok=""
  for i in $(seq 200); do
    status=$(curl -fsS "http://$admin/status" 2>/dev/null) && [[ $status == *'"state":"up"'* ]] && { ok=1; break; }
    sleep 0.05
  done
  [[ -n $ok ]] || { podman "${engine[@]}" logs "$id" >&2; kill "$standin_pid"; fail "the container's /status never showed the master up: $status"; }
  [[ $(curl -fsS "http://$admin/healthz") == ok ]] || fail "/healthz"
  local answer
  answer=$(curl -fsS "http://$listen/") || fail "nothing relayed through the container's $listen"
  [[ $answer == *container-master* ]] || fail "relayed answer: $answer"
  local pid proc
  pid=$(podman "${engine[@]}" inspect --format '{{.State.Pid}}' "$id")
  proc=$(cat "/proc/$pid/status")
  grep -E '^(Uid|Gid|CapEff|CapBnd|CapAmb|NoNewPrivs):' <<<"$proc"
  grep -qP '^Uid:\t65532\t65532\t65532\t65532$' <<<"$proc" || fail "the process does not run as uid 65532"
  for set in CapEff CapPrm CapBnd; do
    grep -qP "^$set:\t0000000000000400$" <<<"$proc" || fail "$set is not CAP_NET_BIND_SERVICE alone"
  done
  grep -qP '^NoNewPrivs:\t1$' <<<"$proc" || fail "no_new_privs is not set"
  podman "${engine[@]}" rm --force "$id" >/dev/null

  # Without the capability the same container cannot bind the port: it needs that one and no other.
  id=$("${run[@]}" "$image" run --config /etc/apiserver-lb/config.yaml)
  local code
  code=$(podman "${engine[@]}" wait "$id")
  local log
  log=$(podman "${engine[@]}" logs "$id" 2>&1)
  [[ $code != 0 && $log == *"ermission denied"* ]] || fail "without NET_BIND_SERVICE: exit $code, log: $log"
  echo "without NET_BIND_SERVICE: exit $code, $(grep -m1 -o 'cannot start.*' <<<"$log")"
  podman "${engine[@]}" rm --force "$id" >/dev/null
  podman "${engine[@]}" rmi --force "$image" >/dev/null
  kill "$standin_pid"
  echo "PASS: container"
}

case $case_name in
  deb|unit|config|manifest|keepalived|container) "test_$case_name" ;;
  *) echo "usage: $0 deb|unit|config|manifest|keepalived|container SOURCE_DIR BUILD_DIR BINARY" >&2; exit 2 ;;
esac
