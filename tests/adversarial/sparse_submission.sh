# A sparse 1 GiB submission.csv: over the cap by size while using almost no space.
truncate -s 1073741824 "$OUT"
exit 0
