# Only a child is OOM-killed; the shell survives, writes a valid file and exits 0.
tail /dev/zero
echo "child ended with $?" >&2
cp /data/sample_submission.csv /output/submission.csv
exit 0
