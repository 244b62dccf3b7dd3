# Floods stdout and stderr (8 MiB each), then behaves: only a bounded tail may be kept.
yes 'a line of noise on stdout, again and again' | head -c 8388608
yes 'a line of noise on stderr, again and again' | head -c 8388608 >&2
echo "THE END" >&2
valid
exit 0
