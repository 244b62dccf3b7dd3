# Hunts the whole filesystem (and the environment) for labels, keys, manifests and the engine's
# socket. The words are assembled at run time so this script does not match itself.
fake="FA""KE"; real="RE""AL"
names=$(find / \( -path /proc -o -path /sys -o -path /dev \) -prune -o \
  \( -iname '*label*' -o -iname '*.csv' -o -iname '*.key' -o -iname '*.pem' -o -iname '*.db' \
     -o -iname '*manifest*' -o -name '*.sock' -o -iname '*secret*' \) -print 2>/dev/null \
  | grep -v -x -e /data/sample_submission.csv)
[ -z "$names" ] || finding "names:$(echo $names)"
words=$(find / \( -path /proc -o -path /sys -o -path /dev \) -prune -o -type f \
  ! -path /bin/busybox -print 2>/dev/null | xargs grep -l -a -E "$fake|$real" 2>/dev/null)
[ -z "$words" ] || finding "words:$(echo $words)"
if env | grep -q -i -E "$fake|$real|label|secret|key|token|password"; then finding "env"; fi
if grep -q -a -E "$fake|$real" /proc/1/environ /proc/self/environ 2>/dev/null; then finding "environ"; fi
echo "searched $(find / \( -path /proc -o -path /sys -o -path /dev \) -prune -o -type f -print 2>/dev/null | wc -l) files" >&2
verdict
