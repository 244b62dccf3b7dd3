# A FIFO with no writer: reading it must not block the host.
mkfifo /output/submission.csv
