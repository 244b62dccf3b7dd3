# Fails on its own.
echo "something went wrong" >&2
exit 3
