# A well-behaved predictor: reads every video, writes 0.7 for each.
cat /data/videos/*.mp4 > /dev/null
valid
