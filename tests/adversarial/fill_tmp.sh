# Fills /tmp and /dev/shm: both must stop at their caps (ENOSPC), the host must not notice.
for dir in /tmp /dev/shm; do
  if dd if=/dev/zero of="$dir/fill" bs=1048576 count=256 2>/dev/null; then finding "uncapped:$dir"; fi
  echo "$dir held $(wc -c < "$dir/fill") bytes" >&2
  rm -f "$dir/fill"
done
verdict
