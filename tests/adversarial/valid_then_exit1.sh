# A valid file, then a failure exit: NONZERO_EXIT, however good the file.
valid
exit 1
