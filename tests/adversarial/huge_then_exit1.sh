# A valid file, then 100 MB more appended to it, then exit 1: OUTPUT_TOO_LARGE outranks
# NONZERO_EXIT.
valid
dd if=/dev/zero bs=1048576 count=100 2>/dev/null >> "$OUT"
exit 1
