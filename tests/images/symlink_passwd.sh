# A symlink to a host path: the host must never follow it.
ln -s /etc/passwd /output/submission.csv
