# Burns a CPU past the deadline.
while :; do :; done
