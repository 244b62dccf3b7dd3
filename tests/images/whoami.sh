# Reports the user it runs as.
echo "$(id -u):$(id -g)" > /output/submission.csv
