# Duplicates, NaN, out-of-range values and invalid UTF-8: the sandbox returns the bytes as-is.
printf 'filename,label\na.mp4,nan\na.mp4,0.5\nb.mp4,1.5\nc.mp4,-inf\n\377\376,"x\n' > /output/submission.csv
