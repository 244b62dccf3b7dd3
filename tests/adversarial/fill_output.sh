# Fills /output with another file, then tries to write a valid submission and exits 0.
dd if=/dev/zero of=/output/junk bs=1048576 count=256 2>/dev/null
valid
exit 0
