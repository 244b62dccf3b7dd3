# Writes a valid file, then ignores SIGTERM/SIGINT/SIGHUP in itself and a child, and lingers.
trap '' TERM INT HUP
valid
sh -c "trap '' TERM INT HUP; while :; do sleep 1; done" &
while :; do sleep 1; done
