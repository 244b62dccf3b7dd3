# submission.csv is a symlink to the (valid!) sample file in /data: never followed.
ln -s /data/sample_submission.csv "$OUT"
