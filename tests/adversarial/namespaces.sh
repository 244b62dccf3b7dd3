# unshare and mount: no new mount, network, PID, IPC or UTS namespace, no mount of anything.
if mount -t tmpfs none /tmp 2>/dev/null; then finding "mount-tmpfs"; fi
if mount -o remount,rw / 2>/dev/null; then finding "remount-root"; fi
if mount -o remount,rw /data/videos 2>/dev/null; then finding "remount-videos"; fi
if umount /data/videos 2>/dev/null; then finding "umount-videos"; fi
for flag in -m -n -p -i -u -r; do
  if unshare $flag -f true 2>/dev/null; then finding "unshare$flag"; fi
done
# A bare user namespace (no mapping, no capabilities) is reported, not a finding: gVisor allows
# one inside its sentry. What matters is that nothing can be done with it.
if unshare -U true 2>/dev/null; then echo "USERNS: yes" >&2; else echo "USERNS: no" >&2; fi
if unshare -U sh -c 'echo "0 $(id -u) 1" > /proc/self/uid_map' 2>/dev/null; then finding "uid_map"; fi
if unshare -U sh -c 'mount -t tmpfs none /tmp' 2>/dev/null; then finding "userns-mount"; fi
if nsenter -t 1 -m true 2>/dev/null; then finding "nsenter"; fi
verdict
