"""The pure core: everything that decides, with no I/O (no grpc, docker, sqlite3, prometheus)."""
