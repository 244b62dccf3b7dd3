# submission.csv is a FIFO with no writer: reading it must not block the host.
mkfifo "$OUT"
echo "MKFIFO: rc=$?" >&2
