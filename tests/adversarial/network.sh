# Looks for any way off the box: interfaces, routes, DNS, the bridge gateway, the host's loopback
# services (HOST_PORTS, baked in at build time), the cloud metadata address, ICMP.
ifaces=$(ls /sys/class/net | tr '\n' ' ')
[ "$ifaces" = "lo " ] || finding "interfaces:$ifaces"
[ "$(tail -n +2 /proc/net/route | wc -l)" = 0 ] || finding "routes"
if nslookup -timeout=1 example.com >/dev/null 2>&1; then finding "dns"; fi
for target in 172.17.0.1:22 172.17.0.1:80 172.17.0.1:2375 172.17.0.1:2376 \
    $(for port in $HOST_PORTS 22; do echo "127.0.0.1:$port 172.17.0.1:$port"; done) \
    169.254.169.254:80 1.1.1.1:53 1.1.1.1:443; do
  if nc -w 1 "${target%:*}" "${target#*:}" </dev/null >/dev/null 2>&1; then finding "tcp:$target"; fi
done
if wget -q -T 1 -O /dev/null http://169.254.169.254/latest/meta-data/ 2>/dev/null; then
  finding "metadata-http"
fi
if ping -c 1 -W 1 172.17.0.1 >/dev/null 2>&1; then finding "icmp"; fi
echo "probed ports: $HOST_PORTS" >&2
verdict
