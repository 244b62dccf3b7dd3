# A sparse file whose size is far over the cap while using almost no space.
truncate -s 1073741824 /output/submission.csv
