# Reports the hardening it can observe from inside.
set -u
out=/output/submission.csv
{
  echo "hostname=$(hostname)"
  echo "nvidia=${NVIDIA_VISIBLE_DEVICES:-unset}"
  echo "custom=${SCORER_TEST_VAR:-unset}"
  grep -E '^(CapEff|CapBnd|NoNewPrivs):' /proc/self/status | tr -d '\t' | tr ':' '='
  echo "core=$(ulimit -c)"
  echo "nofile=$(ulimit -n)"
  [ -e /var/run/docker.sock ] && echo "docker_sock=yes" || echo "docker_sock=no"
  cp /bin/busybox /tmp/true && /tmp/true && echo "tmp_exec=yes" || echo "tmp_exec=no"
  rm -f /tmp/true
  dd if=/dev/zero of=/tmp/big bs=1048576 count=64 2>/dev/null && echo "tmp_capped=no" || echo "tmp_capped=yes"
  rm -f /tmp/big
  dd if=/dev/zero of=/dev/shm/big bs=1048576 count=64 2>/dev/null && echo "shm_capped=no" || echo "shm_capped=yes"
  rm -f /dev/shm/big
} > "$out"
