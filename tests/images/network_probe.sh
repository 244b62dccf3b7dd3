# Looks for any way out; writes what it found and exits non-zero if anything answered.
set -u
found=""
ifaces=$(ls /sys/class/net | tr '\n' ' ')
links=$(ip -o link 2>/dev/null | wc -l)
routes=$(tail -n +2 /proc/net/route | wc -l)
for target in 1.1.1.1:53 8.8.8.8:443 172.17.0.1:2375 169.254.169.254:80 10.255.255.53:53; do
  if nc -w 2 "${target%:*}" "${target#*:}" </dev/null >/dev/null 2>&1; then found="$found tcp:$target"; fi
done
if wget -q -T 2 -O /dev/null http://1.1.1.1/ 2>/dev/null; then found="$found http"; fi
if nslookup -timeout=2 example.com >/dev/null 2>&1; then found="$found dns"; fi
if ping -c 1 -W 1 1.1.1.1 >/dev/null 2>&1; then found="$found icmp"; fi
printf 'interfaces=%s\nlinks=%s\nroutes=%s\nreachable=%s\n' "$ifaces" "$links" "$routes" "$found" \
  > /output/submission.csv
[ -z "$found" ] && [ "$ifaces" = "lo " ] && [ "$routes" = 0 ]
