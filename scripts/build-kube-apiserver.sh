#!/usr/bin/env bash
# Builds, once, the kube-apiserver and kubectl v1.20.2 that the k8s tests run against, and
# installs etcd. Prints the two binaries' paths (apiserver first, kubectl second) on stdout;
# progress goes to stderr and the build's own output to build.log in the cache dir.
# With --node it also builds, from the same tree and build cache, what a one-node cluster
# needs besides (scripts/local-cluster.sh): kubelet, kube-controller-manager, kube-scheduler
# and kube-proxy, cached as $CACHE/<name>-v1.20.2 (about a minute each once the cache is warm).
#
# Why build: no registry reachable here ships a kube-apiserver, but Debian bookworm ships
# the Kubernetes v1.20.2 source (package "kubernetes"). Bookworm's Go 1.19 compiles it into
# an apiserver that segfaults on custom-resource writes, so the compile uses Go 1.15 taken
# from Debian bullseye's golang-1.15 packages, unpacked into the cache (never installed).
# kubectl comes from the same tree so client and server match: the machine's own kubectl,
# if any, is 1.27+ and outside the supported skew of a 1.20 server.
#
# Idempotent and safe to run concurrently: a lock serialises builds, each stage leaves a
# stamp only when complete, and each binary is built to a temp name then renamed, so an
# interrupted build never leaves a broken cache. Needs root on a cold cache (apt).
set -euo pipefail

readonly VERSION=v1.20.2
readonly CACHE="${DJ_CACHE_DIR:-$HOME/.cache/datajuicer-ft}"
readonly APISERVER="$CACHE/kube-apiserver-$VERSION"
readonly KUBECTL="$CACHE/kubectl-$VERSION"
readonly WORK="$CACHE/work"
readonly GOPATH_DIR="$WORK/gopath"
readonly SRC="$GOPATH_DIR/src/k8s.io/kubernetes"
readonly GO115="$CACHE/go1.15"
readonly BULLSEYE_APT="$CACHE/apt-bullseye"
readonly LOG="$CACHE/build.log"
readonly DEB_SRC_FILE=/etc/apt/sources.list.d/datajuicer-ft-deb-src.sources
readonly KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
readonly NODE_COMPONENTS=(kubelet kube-controller-manager kube-scheduler kube-proxy)
WITH_NODE=0
[[ ${1:-} == --node ]] && WITH_NODE=1

say() { echo "build-kube-apiserver: $*" >&2; }

is_built() {
  [[ -x $APISERVER && -x $KUBECTL ]] && command -v etcd >/dev/null || return 1
  ((WITH_NODE)) || return 0
  local name
  for name in "${NODE_COMPONENTS[@]}"; do [[ -x $CACHE/$name-$VERSION ]] || return 1; done
}

print_paths() { printf '%s\n%s\n' "$APISERVER" "$KUBECTL"; }

# The URI of this machine's bookworm "deb" source, from deb822 *.sources files or
# sources.list, so the deb-src and bullseye entries use the same (reachable) mirror.
debian_mirror() {
  local f uri=""
  for f in /etc/apt/sources.list.d/*.sources; do
    [[ -e $f ]] || continue
    uri=$(awk 'BEGIN { RS = ""; FS = "\n" }
      { u = ""; deb = 0; bookworm = 0
        for (i = 1; i <= NF; i++) {
          if ($i ~ /^URIs:/) { split($i, a, /[ \t]+/); u = a[2] }
          if ($i ~ /^Types:/ && $i ~ /[ \t]deb([ \t]|$)/) deb = 1
          if ($i ~ /^Suites:/ && $i ~ /[ \t]bookworm([ \t]|$)/) bookworm = 1
        }
        if (u != "" && deb && bookworm) { print u; exit } }' "$f")
    [[ -n $uri ]] && break
  done
  if [[ -z $uri && -e /etc/apt/sources.list ]]; then
    uri=$(awk '$1 == "deb" && / bookworm / {
      for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { print $i; exit } }' /etc/apt/sources.list)
  fi
  echo "${uri:-http://deb.debian.org/debian}"
}

install_packages() {
  local mirror
  mirror=$(debian_mirror)
  if [[ ! -e $DEB_SRC_FILE ]]; then
    say "adding bookworm deb-src ($mirror) in $DEB_SRC_FILE"
    printf 'Types: deb-src\nURIs: %s\nSuites: bookworm\nComponents: main\nSigned-By: %s\n' \
      "$mirror" "$KEYRING" >"$DEB_SRC_FILE"
  fi
  say "apt: etcd-server rsync golang-go dpkg-dev"
  apt-get update -q >>"$LOG" 2>&1
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    etcd-server rsync golang-go dpkg-dev >>"$LOG" 2>&1
}

# Debian's v1.20.2 source laid out as a GOPATH tree, with `make generated_files` done.
fetch_source() {
  [[ -e $WORK/.source-ready ]] && return
  say "fetching the kubernetes source (apt-get source) and generating files"
  rm -rf "$WORK"
  mkdir -p "$WORK/apt-source" "$(dirname "$SRC")"
  (cd "$WORK/apt-source" && apt-get source -q kubernetes) >>"$LOG" 2>&1
  mv "$WORK"/apt-source/kubernetes-*/ "$SRC"
  rm -rf "$WORK/apt-source"
  (cd "$SRC" && make generated_files) >>"$LOG" 2>&1
  touch "$WORK/.source-ready"
}

# Go 1.15 unpacked from bullseye's .debs. apt runs on a private sources list, lists and
# cache dir so the system's apt state never sees bullseye.
fetch_go115() {
  [[ -e $GO115/.ready ]] && return
  say "downloading Go 1.15 from Debian bullseye"
  rm -rf "$GO115" "$BULLSEYE_APT"
  mkdir -p "$BULLSEYE_APT/lists/partial" "$BULLSEYE_APT/cache/archives/partial" \
    "$BULLSEYE_APT/sources.list.d" "$BULLSEYE_APT/debs" "$GO115"
  echo "deb [signed-by=$KEYRING] $(debian_mirror) bullseye main" >"$BULLSEYE_APT/sources.list"
  local apt=(apt-get -q
    -o "Dir::Etc::sourcelist=$BULLSEYE_APT/sources.list"
    -o "Dir::Etc::sourceparts=$BULLSEYE_APT/sources.list.d"
    -o "Dir::State::Lists=$BULLSEYE_APT/lists"
    -o "Dir::Cache=$BULLSEYE_APT/cache")
  "${apt[@]}" update >>"$LOG" 2>&1
  (cd "$BULLSEYE_APT/debs" && "${apt[@]}" download golang-1.15-go golang-1.15-src) >>"$LOG" 2>&1
  local deb
  for deb in "$BULLSEYE_APT"/debs/*.deb; do dpkg -x "$deb" "$GO115"; done
  touch "$GO115/.ready"
}

# Builds one command of the tree with Go 1.15 in GOPATH mode (vendor/ supplies the deps),
# stamping the version as Kubernetes' own release build does.
go_build() {
  local pkg=$1 out=$2
  local version_pkg=k8s.io/kubernetes/vendor/k8s.io/component-base/version
  local ldflags="-s -w -X $version_pkg.gitVersion=$VERSION -X $version_pkg.gitMajor=1"
  ldflags+=" -X $version_pkg.gitMinor=20 -X $version_pkg.gitTreeState=clean"
  say "compiling $pkg with Go 1.15 (a cold build takes minutes)"
  (cd "$SRC" &&
    GOROOT="$GO115/usr/lib/go-1.15" PATH="$GO115/usr/lib/go-1.15/bin:$PATH" \
      GO111MODULE=off GOPATH="$GOPATH_DIR" GOFLAGS='' CGO_ENABLED=0 GOCACHE="$CACHE/go-build" \
      go build -o "$out.tmp" -ldflags "$ldflags" "$pkg") >>"$LOG" 2>&1
  mv -f "$out.tmp" "$out"
}

main() {
  if is_built; then print_paths; return; fi
  mkdir -p "$CACHE"
  exec 9>"$CACHE/build.lock"
  flock 9
  if is_built; then print_paths; return; fi  # another process built it while we waited
  say "building into $CACHE; log: $LOG"
  : >"$LOG"
  [[ -x $APISERVER && -x $KUBECTL ]] && command -v etcd >/dev/null || install_packages
  fetch_source
  fetch_go115
  [[ -x $APISERVER ]] || go_build ./cmd/kube-apiserver "$APISERVER"
  [[ -x $KUBECTL ]] || go_build ./cmd/kubectl "$KUBECTL"
  if ((WITH_NODE)); then
    local name
    for name in "${NODE_COMPONENTS[@]}"; do
      [[ -x $CACHE/$name-$VERSION ]] || go_build "./cmd/$name" "$CACHE/$name-$VERSION"
    done
  fi
  print_paths
}

on_exit() {
  local rc=$?
  if ((rc != 0)) && [[ -e $LOG ]]; then
    say "failed (exit $rc); the last lines of $LOG:"
    tail -n 30 "$LOG" >&2
  fi
}
trap on_exit EXIT
main
