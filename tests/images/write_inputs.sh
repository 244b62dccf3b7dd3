# Tries to change the hidden inputs and the image; lists every write that succeeded.
set -u
leaks=""
attempt() { if sh -c "$1" 2>/dev/null; then leaks="$leaks [$1]"; fi; }
attempt 'echo x > /data/videos/new.mp4'
attempt 'echo x >> /data/videos/a.mp4'
attempt 'rm /data/videos/a.mp4'
attempt 'echo x >> /data/sample_submission.csv'
attempt 'mkdir /data/new'
attempt 'touch /data/videos'
attempt 'echo x > /evil'
attempt 'echo x > /bin/evil'
attempt 'echo x >> /entry.sh'
attempt 'echo x >> /etc/hosts'
attempt 'echo x >> /etc/resolv.conf'
attempt 'echo x >> /etc/hostname'
tmp=no
echo ok > /tmp/probe && tmp=yes
printf 'leaks=%s\ntmp=%s\n' "$leaks" "$tmp" > /output/submission.csv
[ -z "$leaks" ]
