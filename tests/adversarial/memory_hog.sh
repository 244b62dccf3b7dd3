# One 256 MiB buffer, filled at once (dd bs=256M): far over the memory limit, killed quickly.
exec dd if=/dev/zero of=/dev/null bs=268435456 count=1
