# A symlink into the hidden inputs.
ln -s /data/sample_submission.csv /output/submission.csv
