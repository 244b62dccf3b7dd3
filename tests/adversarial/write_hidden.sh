# Tries every way to change the hidden set, the sample file and the image; each must fail.
attempt() { if sh -c "$1" >/dev/null 2>&1; then finding "wrote:[$1]"; fi; }
first=$(ls /data/videos | head -n 1)
v="/data/videos/$first"
attempt "echo x >> $v"
attempt "echo x > $v"
attempt "truncate -s 0 $v"
attempt "touch $v"
attempt "chmod 777 $v"
attempt "rm $v"
attempt "mv $v /data/videos/moved.mp4"
attempt "echo x > /data/videos/new.mp4"
attempt "ln -s /etc/passwd /data/videos/link.mp4"
attempt "mkdir /data/videos/sub"
attempt "touch /data/videos"
attempt "echo x >> /data/sample_submission.csv"
attempt "echo x > /data/new"
attempt "echo x > /evil"
attempt "echo x >> /entry.sh"
attempt "echo x >> /bin/busybox"
verdict
