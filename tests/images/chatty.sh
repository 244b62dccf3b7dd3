# Floods stderr, then stdout, then says goodbye: only a bounded tail may come back.
yes 'a line of noise on stderr' | head -n 12000 >&2
yes 'a line of noise on stdout' | head -n 12000
echo "THE END"
