# A fork bomb (every process keeps forking until a fork is refused), while the main process
# sleeps on: pids_limit must hold it and the host must not notice.
bomb() { while :; do bomb & done; }
bomb &
exec sleep 1000000
