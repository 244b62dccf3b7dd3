# Exhausts /output's inodes with empty files, then writes a valid submission if it still can.
i=0
while [ $i -lt 6000 ]; do : > "/output/f$i" 2>/dev/null || break; i=$((i + 1)); done
echo "created $i files" >&2
valid
exit 0
