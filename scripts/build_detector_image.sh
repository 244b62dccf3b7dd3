#!/usr/bin/env bash
# Builds the example participant image without any container registry:
#   1. scorer-example-base:bookworm, a Debian bookworm minbase root filesystem made by debootstrap
#      (python3, numpy, PyAV) and imported with `docker import`;
#   2. scorer-example-detector:latest, examples/detector/Dockerfile on top of it.
# The pruned root filesystem is cached as a tarball under /var/cache/scorer, so a rebuild after
# `docker system prune` only re-imports it. Set SCORER_REBUILD_BASE=1 to start from scratch.
set -euo pipefail
cd "$(dirname "$0")/.."

BASE_IMAGE=scorer-example-base:bookworm
DETECTOR_IMAGE=${SCORER_DETECTOR_IMAGE:-scorer-example-detector:latest}
MIRROR=${SCORER_DEBIAN_MIRROR:-http://deb.debian.org/debian}
CACHE_DIR=${SCORER_CACHE_DIR:-/var/cache/scorer}
PACKAGES=python3,python3-numpy,python3-av
# The recipe is part of the cache key: changing the package list or mirror invalidates the tarball.
RECIPE_KEY=$(printf '%s|%s|%s|prune-v2' bookworm "$MIRROR" "$PACKAGES" | sha256sum | cut -c1-16)
TARBALL="$CACHE_DIR/example-base-bookworm-$RECIPE_KEY.tar"

log() { printf '[build-detector] %s\n' "$*" >&2; }
started_s=$(date +%s)

make_rootfs_tarball() {
  [ "$(id -u)" = 0 ] || { log "debootstrap needs root"; exit 1; }
  command -v debootstrap >/dev/null 2>&1 || [ -x /usr/sbin/debootstrap ] \
    || { log "debootstrap is not installed (scripts/setup.sh installs it)"; exit 1; }
  local rootfs
  rootfs=$(mktemp -d /var/tmp/scorer-rootfs.XXXXXX)
  # shellcheck disable=SC2064  # expand now: the path is fixed for this call
  trap "rm -rf '$rootfs'" EXIT
  log "debootstrap bookworm ($PACKAGES) from $MIRROR"
  PATH=$PATH:/usr/sbin debootstrap --variant=minbase --include="$PACKAGES" \
    bookworm "$rootfs" "$MIRROR" >"$rootfs.log" 2>&1 \
    || { tail -30 "$rootfs.log" >&2; exit 1; }
  rm -f "$rootfs.log"
  # Pruning: documentation, package caches and logs are dead weight in a sandboxed image.
  rm -rf "$rootfs"/usr/share/{doc,man,info,lintian,linda} "$rootfs"/var/lib/apt/lists/* \
    "$rootfs"/var/cache/apt/* "$rootfs"/var/cache/debconf/*-old "$rootfs"/var/log/* \
    "$rootfs"/tmp/* "$rootfs"/dev/* "$rootfs"/proc/* "$rootfs"/sys/*
  find "$rootfs"/usr/share/locale -mindepth 1 -maxdepth 1 ! -name 'C.*' -exec rm -rf {} +
  # libavdevice drags in Mesa; its GPU drivers (and LLVM, which only they link) are loaded only
  # when an OpenGL context is created, which decoding never does. Same for VA/VDPAU/MFX plugins.
  local lib="$rootfs"/usr/lib/x86_64-linux-gnu
  rm -rf "$lib"/dri "$lib"/mfx "$lib"/vdpau "$lib"/libLLVM-* "$lib"/libz3.so* \
    "$rootfs"/usr/lib/python3/dist-packages/numpy/*/tests
  mkdir -p "$CACHE_DIR"
  rm -f "$CACHE_DIR"/example-base-bookworm-*.tar  # tarballs of older recipes
  tar -C "$rootfs" --numeric-owner --sort=name -cf "$TARBALL.partial" .
  mv "$TARBALL.partial" "$TARBALL"
  rm -rf "$rootfs"
  trap - EXIT
  log "cached root filesystem: $TARBALL ($(du -h "$TARBALL" | cut -f1))"
}

if [ "${SCORER_REBUILD_BASE:-0}" = 1 ]; then
  docker image rm -f "$BASE_IMAGE" >/dev/null 2>&1 || true
  rm -f "$TARBALL"
fi
if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
  log "base image $BASE_IMAGE already present"
else
  [ -f "$TARBALL" ] || make_rootfs_tarball
  log "importing $TARBALL as $BASE_IMAGE"
  docker import --change 'ENV LANG=C.UTF-8' - "$BASE_IMAGE" <"$TARBALL" >/dev/null
  # Smoke test: the pruning above must not have removed anything the decoder links.
  docker run --rm --network none --user 65534:65534 "$BASE_IMAGE" \
    python3 -c 'import av, numpy; av.codec.Codec("h264", "r")' \
    || { docker image rm -f "$BASE_IMAGE" >/dev/null; rm -f "$TARBALL"; exit 1; }
fi

# The legacy builder needs no registry and no buildx plugin; --network none proves the build
# itself fetches nothing.
log "building $DETECTOR_IMAGE"
# Its deprecation notice is noise: show the build's output only when it fails.
if ! build_log=$(DOCKER_BUILDKIT=0 docker build --network none -t "$DETECTOR_IMAGE" \
    examples/detector 2>&1); then
  printf '%s\n' "$build_log" >&2
  exit 1
fi
log "done in $(( $(date +%s) - started_s ))s"
docker image inspect --format '{{.Id}}' "$DETECTOR_IMAGE"
