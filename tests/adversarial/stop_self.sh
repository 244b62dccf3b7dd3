# Writes a valid file, then stops itself (SIGSTOP): a stopped process must still be killed.
valid
kill -STOP $$
exit 0
