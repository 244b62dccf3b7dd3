# submission.csv is a symlink to a host path: the host must never follow it.
ln -s /etc/shadow "$OUT"
