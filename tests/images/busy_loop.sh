# Burns CPU until killed: cpus caps it, the deadline ends it.
while :; do :; done
