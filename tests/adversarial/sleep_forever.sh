# Never ends on its own.
exec sleep 1000000
