#!/usr/bin/env bash
# Installs and starts what scorer needs on a Debian 12 host, idempotently:
#   - Debian's docker.io (engine), busybox-static (test images), ffmpeg (synthetic videos),
#     debootstrap (offline base image for the example detector), runsc (gVisor, optional runtime),
#     iproute2 (a second host in a network namespace, for the remote-client test);
#   - a Docker engine with gVisor registered as runtime "runsc" (--network=none);
#   - a virtual environment in .venv with the package and its pinned dependencies.
# Nothing here pulls from a container registry.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[setup] %s\n' "$*" >&2; }
need_pkgs=()
for pair in dockerd:docker.io busybox:busybox-static ffmpeg:ffmpeg debootstrap:debootstrap runsc:runsc \
    ip:iproute2; do
  bin=${pair%%:*}; pkg=${pair#*:}
  command -v "$bin" >/dev/null 2>&1 || [ -x "/usr/sbin/$bin" ] || need_pkgs+=("$pkg")
done
if [ "${#need_pkgs[@]}" -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then log "missing ${need_pkgs[*]}; run as root or install them"; exit 1; fi
  log "installing ${need_pkgs[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
fi

engine_up() { timeout 10 docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }
if ! engine_up; then
  if [ "$(id -u)" != 0 ]; then log "no Docker engine answers and this is not root"; exit 1; fi
  mkdir -p /etc/docker
  if [ ! -f /etc/docker/daemon.json ]; then
    # gVisor gets no network stack of its own: the same egress threat closed twice.
    cat > /etc/docker/daemon.json <<'JSON'
{
  "runtimes": {"runsc": {"path": "/usr/bin/runsc", "runtimeArgs": ["--network=none"]}},
  "log-driver": "json-file",
  "log-opts": {"max-size": "10m", "max-file": "2"}
}
JSON
  fi
  log "starting dockerd"
  nohup dockerd >/var/log/scorer-dockerd.log 2>&1 &
  for _ in $(seq 1 60); do engine_up && break; sleep 0.5; done
  engine_up || { log "dockerd did not come up; see /var/log/scorer-dockerd.log"; tail -20 /var/log/scorer-dockerd.log >&2; exit 1; }
fi
log "docker engine $(docker version --format '{{.Server.Version}}')"

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  log "creating .venv"
  "$PY" -m venv .venv
fi
if ! .venv/bin/python -c 'import scorer, sandbox' >/dev/null 2>&1 || [ pyproject.toml -nt .venv/.installed ]; then
  log "installing the package into .venv"
  .venv/bin/pip install -q --upgrade pip >/dev/null
  .venv/bin/pip install -q -e '.[dev]'
  touch .venv/.installed
fi
