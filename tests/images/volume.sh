# The image declares VOLUME /data2: it must be a capped tmpfs, never an anonymous volume.
set -eu
echo x > /data2/probe
grep ' /data2 tmpfs ' /proc/mounts | cut -d' ' -f2,3 > /output/submission.csv
