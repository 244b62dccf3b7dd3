# submission.csv is a hard link: to the sample (EXDEV), else to another file in /output.
valid
ln /data/sample_submission.csv /output/alias.csv 2>/dev/null && echo "linked across devices" >&2
mv "$OUT" /output/real.csv
ln /output/real.csv "$OUT"
