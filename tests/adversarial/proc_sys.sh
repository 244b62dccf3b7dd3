# Reads /proc and /sys for host information; reports what a host path or kernel looks like.
cmd=$(tr '\0' ' ' < /proc/1/cmdline)
case "$cmd" in "/sbin/docker-init -- /bin/sh /entry.sh"*) ;; *) finding "pid1:$cmd" ;; esac
procs=$(ls -d /proc/[0-9]* | wc -l)
[ "$procs" -le 8 ] || finding "processes:$procs"
[ "$(hostname)" = sandbox ] || finding "hostname:$(hostname)"
for masked in /proc/kcore /proc/keys /proc/timer_list /proc/sched_debug; do
  if [ "$(head -c 1 "$masked" 2>/dev/null | wc -c)" != 0 ]; then finding "readable:$masked"; fi
done
if tr '\0' '\n' < /proc/1/environ | grep -q -i -E 'secret|key|token|password'; then finding "environ"; fi
if [ -e /var/run/docker.sock ] || [ -e /run/docker.sock ]; then finding "docker.sock"; fi
if ls /sys/fs/cgroup/memory/docker >/dev/null 2>&1; then finding "host-cgroups"; fi
echo "KERNEL: $(cut -d' ' -f3 /proc/version)" >&2
echo "CGROUP: $(grep -m1 memory /proc/self/cgroup | cut -d: -f3)" >&2
echo "MOUNTS_VIDEOS: $(grep ' /data/videos ' /proc/mounts | cut -d' ' -f1)" >&2
echo "MOUNTINFO_VIDEOS: $(awk '$5 == "/data/videos" {print $4}' /proc/self/mountinfo)" >&2
verdict
