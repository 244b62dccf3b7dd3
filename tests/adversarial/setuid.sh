# Tries to gain privileges: su, a set-uid copy in /tmp, chown to root, capabilities.
[ "$(id -u)" != 0 ] || finding "uid0"
[ "$(id -g)" != 0 ] || finding "gid0"
if su -c true root </dev/null >/dev/null 2>&1; then finding "su"; fi
cp /bin/busybox /tmp/busybox
chmod u+s,g+s /tmp/busybox 2>/dev/null
[ "$(/tmp/busybox id -u 2>/dev/null)" != 0 ] || finding "setuid-copy"
if chown 0:0 /tmp/busybox 2>/dev/null; then finding "chown-root"; fi
[ "$(/tmp/busybox id -u 2>/dev/null)" != 0 ] || finding "setuid-root-copy"
caps=$(grep -E '^Cap(Eff|Prm|Amb):' /proc/self/status | awk '{print $2}' | sort -u | tr '\n' ' ')
[ "$caps" = "0000000000000000 " ] || finding "caps:$caps"
if setpriv --reuid=0 true 2>/dev/null; then finding "setpriv"; fi
# A device node must be refused, or (gVisor) be one that opens no device.
if mknod /tmp/disk b 8 0 2>/dev/null; then
  echo "MKNOD: created" >&2
  [ "$(head -c 1 /tmp/disk 2>/dev/null | wc -c)" = 0 ] || finding "block-device-readable"
else
  echo "MKNOD: refused" >&2
fi
if sysctl -w kernel.hostname=evil >/dev/null 2>&1; then finding "sysctl"; fi
verdict
