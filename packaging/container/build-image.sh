#!/usr/bin/env bash
# Builds the apiserver-lb image (packaging/container/Containerfile) from the Debian package, with
# podman or buildah, without pulling anything: the image is FROM scratch and gets the package's
# files plus the shared libraries its binary needs on this (Debian 12) host.
#   build-image.sh --deb FILE.deb [--tag TAG] [--engine podman|buildah] [-- ENGINE-ARGS...]
#   build-image.sh --binary FILE  [...]   (a build tree's binary and packaging/config.yaml instead)
# ENGINE-ARGS go before the engine's subcommand (e.g. --storage-driver vfs). Prints the image id.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
deb="" binary="" tag="localhost/apiserver-lb:latest" engine=""
engine_args=()
while [[ $# -gt 0 ]]; do
  case $1 in
    --deb) deb=$2; shift 2 ;;
    --binary) binary=$2; shift 2 ;;
    --tag) tag=$2; shift 2 ;;
    --engine) engine=$2; shift 2 ;;
    --) shift; engine_args=("$@"); break ;;
    *) echo "build-image.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
[[ -n $deb || -n $binary ]] || { echo "usage: build-image.sh --deb FILE | --binary FILE [--tag TAG] [--engine podman|buildah] [-- ENGINE-ARGS]" >&2; exit 2; }
if [[ -z $engine ]]; then
  if command -v podman >/dev/null; then engine=podman; elif command -v buildah >/dev/null; then engine=buildah
  else echo "build-image.sh: neither podman nor buildah is installed" >&2; exit 1; fi
fi

context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
root=$context/rootfs
mkdir -p "$root"
if [[ -n $deb ]]; then
  dpkg-deb -x "$deb" "$root"
  # Only what the container runs: no systemd unit, no keepalived hook, no docs.
  rm -rf "$root/lib/systemd" "$root/usr/lib/apiserver-lb" "$root/usr/share"
else
  install -D -m 0755 "$binary" "$root/usr/bin/apiserver-lb"
  install -D -m 0644 "$src/packaging/config.yaml" "$root/etc/apiserver-lb/config.yaml"
fi

# The libraries the binary links, with the loader, at their own paths (Debian 12 is merged-/usr:
# /lib is a link to /usr/lib, so both spellings are made to work).
ldd "$root/usr/bin/apiserver-lb" | awk '/=> \// {print $3} /^\t\/[^ ]+ \(/ {print $1}' | while read -r lib; do
  real=$(readlink -f "$lib")
  install -D -m "$(stat -c %a "$real")" "$real" "$root$lib"  # the loader must stay executable
done
if [[ -d $root/lib && ! -L $root/lib ]]; then
  mkdir -p "$root/usr/lib"
  cp -a "$root/lib/." "$root/usr/lib/" && rm -rf "$root/lib" && ln -s usr/lib "$root/lib"
fi
[[ -e $root/lib64 || ! -d $root/usr/lib64 ]] || ln -s usr/lib64 "$root/lib64"

# Who the process is, name resolution for targets given by name, a writable state directory for
# the last good target list (the static pod mounts the host's), and /tmp.
mkdir -p "$root/etc" "$root/var/lib/apiserver-lb" "$root/tmp"
printf 'root:x:0:0:root:/root:/sbin/nologin\napiserver-lb:x:65532:65532:apiserver-lb:/nonexistent:/sbin/nologin\n' >"$root/etc/passwd"
printf 'root:x:0:\napiserver-lb:x:65532:\n' >"$root/etc/group"
printf 'hosts: files dns\n' >"$root/etc/nsswitch.conf"
chmod 1777 "$root/tmp"
chown 65532:65532 "$root/var/lib/apiserver-lb" 2>/dev/null || chmod 0777 "$root/var/lib/apiserver-lb"
cp "$here/Containerfile" "$context/Containerfile"

case $engine in
  podman) podman "${engine_args[@]}" build --quiet --no-cache --file "$context/Containerfile" --tag "$tag" "$context" ;;
  buildah) buildah "${engine_args[@]}" bud --quiet --no-cache --file "$context/Containerfile" --tag "$tag" "$context" ;;
  *) echo "build-image.sh: --engine podman or buildah, not $engine" >&2; exit 2 ;;
esac
