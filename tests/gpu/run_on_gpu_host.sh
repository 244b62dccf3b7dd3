#!/bin/bash
# The GPU tier on a GPU host with no network and no Docker engine, from the repository root:
#   tests/gpu/run_on_gpu_host.sh [OUT_DIR]        (default: $OUT, else ./gpu-out)
# Needs, beside the repo: .gpu-docker/ (shared/gpu/prepare-docker-bundle.sh: Debian's Docker
# 20.10 and busybox) and .whl/ (wheels the host's Python lacks). Writes OUT_DIR/gpu-tier.log,
# OUT_DIR/figures.json (model, driver, peak GPU memory, matmul bare vs sandboxed) and
# OUT_DIR/dockerd.log. Exit status: non-zero if any test failed.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 2
out=${1:-${OUT:-gpu-out}}
mkdir -p "$out"
py=${SCORER_GPU_TEST_PYTHON:-/opt/torch/.venv/bin/python3}

main() {
  "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || { echo "cannot install the wheels from .whl/"; return 2; }
  export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
  export PATH=$PWD/.gpu-docker/bin:$PATH  # busybox, for the sandbox tier's nvidia-smi image
  # shellcheck disable=SC1091
  source .gpu-docker/start-docker.sh || { echo "the Docker engine did not start"; return 3; }
  set +e  # start-docker.sh sets -e; every test command below must run

  echo "== host"
  uname -r
  /usr/local/nvidia/bin/nvidia-smi -L 2>&1 || nvidia-smi -L 2>&1
  "$py" -c 'import sys, torch; print(sys.version.split()[0], "torch", torch.__version__)'
  readlink -f "$py"; ls /usr/local/nvidia /usr/local/nvidia/lib64 2>&1 | head -5
  ls -la /dev/nvidia* 2>&1 | head; cat /etc/ld.so.conf.d/*.conf 2>/dev/null | head

  # Only the plugins this suite needs (the host's Python carries others); third-party
  # deprecation warnings on the host's newer Python are shown, not turned into errors.
  export PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 SCORER_GPU_FIGURES=$out/figures.json
  pytest=("$py" -m pytest -q -rA -p no:cacheprovider -p pytest_timeout
    -W "default::DeprecationWarning")

  echo "== tests/gpu"
  "${pytest[@]}" tests/gpu
  gpu_rc=$?
  echo "== tests/integration/test_sandbox.py -k gpu"
  "${pytest[@]}" tests/integration/test_sandbox.py -k gpu
  sandbox_rc=$?

  tail -n 200 /tmp/dockerd.log > "$out/dockerd.log" 2>/dev/null
  echo "== figures"
  cat "$out/figures.json" 2>/dev/null
  echo "== tests/gpu exit $gpu_rc, test_sandbox -k gpu exit $sandbox_rc"
  [ "$gpu_rc" -eq 0 ] && [ "$sandbox_rc" -eq 0 ]
}

main 2>&1 | tee "$out/gpu-tier.log"
exit "${PIPESTATUS[0]}"
