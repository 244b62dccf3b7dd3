# Never finishes: must be killed at the deadline.
exec sleep 1000000
