#!/usr/bin/env bash
# The images the local cluster (scripts/local-cluster.sh) runs, made here because no image
# registry is reachable: only Debian's mirror and PyPI are.
#
#   scripts/local-images.sh pause     dj-local/debian:bookworm (a debootstrap rootfs, docker
#                                     import) and dj-local/pause:1, the pod sandbox image
#   scripts/local-images.sh base      dj-local/ray-base:<hash>: Debian bookworm's Python 3.11,
#                                     ray==2.60.0 and the project's locked dependencies from
#                                     PyPI, laid out like the official Ray image (user ray,
#                                     uid 1000, group users); prints its tag
#   scripts/local-images.sh sdist [DIR]  the release's sdist (`python -m build --sdist`),
#                                     unpacked in DIR (default: a new temp dir); prints the tree
#   scripts/local-images.sh project   the project's Dockerfile built FROM that base, with
#                                     BuildKit, as $DJ_IMAGE (default datajuicer-ft:0.1.0), from
#                                     the unpacked sdist: what a user building the release has
#   scripts/local-images.sh all       the three in order
#
# Talks to the engine at $DOCKER_HOST (scripts/local-cluster.sh env). Everything is cached:
# the rootfs tarball in $CACHE, the images in the engine (a base is rebuilt only when its
# Dockerfile, pyproject.toml or the lock change), the project's layers in the build cache.
#
# Containers that fetch from PyPI during a build must trust the CA bundle of this machine
# (its HTTPS goes through a proxy whose CA only the host trusts). The bundle is handed to the
# base build as a BuildKit secret: mounted for that one RUN, never stored in a layer.
set -euo pipefail
cd "$(dirname "$0")/.."

readonly CACHE="${DJ_CACHE_DIR:-$HOME/.cache/datajuicer-ft}"
readonly DOCKER=/usr/bin/docker  # Debian's client: builds with BuildKit without buildx
readonly DEBIAN_IMAGE=dj-local/debian:bookworm
readonly PAUSE_IMAGE=dj-local/pause:1
readonly ROOTFS_TAR="$CACHE/images/debian-bookworm-rootfs.tar"
readonly HOST_CA=/etc/ssl/certs/ca-certificates.crt
readonly PROJECT_IMAGE="${DJ_IMAGE:-datajuicer-ft:0.1.0}"

say() { echo "local-images: $*" >&2; }
have_image() { "$DOCKER" image inspect "$1" >/dev/null 2>&1; }

debian_mirror() {
  local uri
  uri=$(awk '/^URIs:/ && $2 ~ /\/debian\/?$/ { print $2; exit }' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
  [[ -z $uri && -e /etc/apt/sources.list ]] &&
    uri=$(awk '$1 == "deb" && / bookworm / { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { print $i; exit } }' /etc/apt/sources.list)
  echo "${uri:-http://deb.debian.org/debian}"
}

# A minimal bookworm with python3 (and venv), no apt lists or caches.
debian() {
  have_image "$DEBIAN_IMAGE" && return
  if [[ ! -e $ROOTFS_TAR ]]; then
    command -v debootstrap >/dev/null || {
      apt-get update -q >/dev/null
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends debootstrap >/dev/null
    }
    local root="$CACHE/images/rootfs.tmp"
    rm -rf "$root"
    mkdir -p "$root"
    say "debootstrap bookworm (about a minute)"
    debootstrap --variant=minbase --include=python3,python3-venv bookworm "$root" "$(debian_mirror)" \
      >"$CACHE/images/debootstrap.log" 2>&1
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/usr/share/doc/* \
      "$root"/usr/share/man/* "$root"/usr/share/locale/*
    tar -C "$root" --numeric-owner -cf "$ROOTFS_TAR.tmp" .
    mv "$ROOTFS_TAR.tmp" "$ROOTFS_TAR"
    rm -rf "$root"
  fi
  say "docker import $DEBIAN_IMAGE"
  "$DOCKER" import --change 'CMD ["/bin/bash"]' "$ROOTFS_TAR" "$DEBIAN_IMAGE" >/dev/null
}

# The pod sandbox: sleeps until told to stop, and stops at once on SIGTERM.
pause() {
  mkdir -p "$CACHE/images"
  debian
  have_image "$PAUSE_IMAGE" && return
  say "building $PAUSE_IMAGE"
  printf 'FROM %s\nCMD ["/bin/sh", "-c", "trap \\"exit 0\\" TERM INT; while :; do sleep 3600 & wait $!; done"]\n' \
    "$DEBIAN_IMAGE" | DOCKER_BUILDKIT=0 "$DOCKER" build -q -t "$PAUSE_IMAGE" - >/dev/null
}

base_tag() {
  echo "dj-local/ray-base:$(cat docker/ray-base.Dockerfile pyproject.toml requirements-lock.txt | sha256sum | cut -c1-12)"
}

base() {
  pause
  local tag ctx
  tag=$(base_tag)
  if ! have_image "$tag"; then
    say "building $tag (Python 3.11 + ray from PyPI; a few minutes cold)"
    ctx=$(mktemp -d)
    cp pyproject.toml requirements-lock.txt "$ctx/"
    DOCKER_BUILDKIT=1 "$DOCKER" build --progress plain --build-arg "DEBIAN_IMAGE=$DEBIAN_IMAGE" \
      --secret "id=ca_bundle,src=$HOST_CA" -f docker/ray-base.Dockerfile -t "$tag" "$ctx" \
      >"$CACHE/images/ray-base-build.log" 2>&1 || { tail -n 40 "$CACHE/images/ray-base-build.log" >&2; rm -rf "$ctx"; return 1; }
    rm -rf "$ctx"
  fi
  echo "$tag"
}

# The sdist, built offline from this tree as the release workflow builds it, and unpacked:
# its top directory is a complete build context (MANIFEST.in includes what the Dockerfile copies).
sdist() {
  local out=${1:-$(mktemp -d)} archive
  mkdir -p "$out"
  .venv/bin/python -m build --sdist --no-isolation --skip-dependency-check --outdir "$out" . \
    >"$out/build.log" 2>&1 || { tail -n 40 "$out/build.log" >&2; return 1; }
  archive=$(ls "$out"/*.tar.gz)
  tar -xzf "$archive" -C "$out"
  echo "$out/$(tar -tzf "$archive" | head -n 1 | cut -d/ -f1)"
}

project() {
  local tag tree
  tag=$(base | tail -n 1)
  tree=$(sdist | tail -n 1)
  say "building $PROJECT_IMAGE FROM $tag (BuildKit) from the unpacked sdist $(basename "$tree")"
  DOCKER_BUILDKIT=1 "$DOCKER" build --progress plain --build-arg "BASE_IMAGE=$tag" \
    --label "datajuicer.io/build-context=sdist:$(basename "$tree")" -t "$PROJECT_IMAGE" "$tree" \
    >"$CACHE/images/project-build.log" 2>&1 || { tail -n 40 "$CACHE/images/project-build.log" >&2; rm -rf "$(dirname "$tree")"; return 1; }
  rm -rf "$(dirname "$tree")"
  # Also under the release's published name, which the chart's defaults and configs/job.yaml
  # name: a user's manifests then run the local build unchanged (no registry is reachable).
  local release
  release=$(.venv/bin/python -c 'from djworker.version import release_image; print(release_image())')
  "$DOCKER" tag "$PROJECT_IMAGE" "$release"
  "$DOCKER" images "${PROJECT_IMAGE%%:*}" >&2
}

case "${1:-}" in
  pause) pause ;;
  base) base ;;
  sdist) sdist "${2:-}" ;;
  project) project ;;
  all) project ;;
  *) echo "usage: $0 pause|base|sdist [DIR]|project|all" >&2; exit 2 ;;
esac
