# A directory where the file should be.
mkdir /output/submission.csv
