"""Hostile images for the service: one busybox script per case, the table they are judged by.

Every case is built `FROM scratch` around busybox-static (`harness.case_script`: the host ports
to probe, `_lib.sh`, then `<case>.sh`) and submitted to a real `scorer serve`, once under runc and
once under runsc (gVisor), by `tests/integration/test_adversarial.py`. Benchmarks: `short` (3 s,
128 MiB, 1 CPU) unless the row says `slow` (10 s); sandbox caps: /output 16 MiB and 4096 inodes,
/tmp 32 MiB, /dev/shm 16 MiB, 128 pids (gVisor: +512 for the sentry's own threads).
Probes write a valid file and exit 0 only if every attempt failed, else exit 3 (NONZERO_EXIT),
so a hole can never pass silently; what they saw goes to stderr, which only the operators' log
keeps, and the suite reads it there.

After every case, under both runtimes, the host must still show: health SERVING; no container
with one of the service's `scorer.evaluation_id`s; no mount and no run folder left under the
state dir; the state dir grown by at most 2 x the output cap + 4 MiB (the store keeps the
collected file); the sandbox user's files in the host's /tmp grown by at most 1 MiB (/tmp is
shared with other runs, so only what an escape, landing as that user, would write is counted);
the operators' log grown by at most 256 KiB; every hidden file (and the labels) byte-for-byte
and mode-for-mode as registered, no file added; the service's RSS under 400 MB throughout
(sampled every 50 ms); the host can fork; the verdict out within the time limit + 5 s of
submission; one attempt; a receipt naming the runtime that ran it.

| case | what the image does | verdict (runc; gVisor where it differs) |
|---|---|---|
| `correct` | reads every video, writes 0.7 each | SUCCEEDED (log loss checked by hand) |
| `correct_slow` | 1 s per video (4 s); `slow` | SUCCEEDED |
| `busy_loop` | spins a CPU forever | TIMEOUT |
| `sleep_forever` | sleeps forever | TIMEOUT |
| `ignore_term` | valid file; `trap '' TERM` in itself and a child | TIMEOUT |
| `stop_self` | valid file; `kill -STOP $$` | TIMEOUT |
| `fork_bomb` | forks until refused; sleeps | TIMEOUT; gVisor: OUT_OF_MEMORY or NONZERO_EXIT [1] |
| `memory_hog` | one 256 MiB `dd` buffer | OUT_OF_MEMORY |
| `memory_hog_child` | a child grows; valid file; exit 0; `slow` | OUT_OF_MEMORY; gVisor: [2] |
| `fill_tmp` | fills /tmp and /dev/shm | SUCCEEDED (both stop at their caps) |
| `fill_output` | fills /output with another file | OUTPUT_TOO_LARGE |
| `huge_submission` | a 100 MB submission.csv | OUTPUT_TOO_LARGE |
| `huge_then_exit1` | valid file + 100 MB appended, exit 1 | OUTPUT_TOO_LARGE (beats NONZERO_EXIT) |
| `sparse_submission` | a sparse 1 GiB submission.csv | OUTPUT_TOO_LARGE (never read) |
| `inode_flood` | 4096+ empty files in /output; `slow` [3] | OUTPUT_TOO_LARGE |
| `flood_logs` | 8 MiB on stdout and stderr; valid | SUCCEEDED (log keeps a bounded tail) |
| `symlink_shadow` | submission.csv -> /etc/shadow | INVALID_OUTPUT (never followed) |
| `symlink_data` | submission.csv -> the valid sample | INVALID_OUTPUT (never followed) |
| `hardlink` | submission.csv hard-linked in /output | INVALID_OUTPUT (never read) |
| `fifo` | submission.csv is a FIFO | INVALID_OUTPUT; gVisor: MISSING_OUTPUT [4] |
| `directory` | submission.csv is a folder | INVALID_OUTPUT (never read) |
| `network` | DNS, TCP, ICMP, metadata (below) | SUCCEEDED (only `lo`; nothing answers) |
| `write_hidden` | writes/renames/chmods the videos, sample, image | SUCCEEDED (every write fails) |
| `search_labels` | hunts / and env for labels, keys, sockets | SUCCEEDED (nothing label-like) |
| `setuid` | su, set-uid copy, chown, setpriv, mknod | SUCCEEDED; gVisor: SUCCEEDED [5] |
| `namespaces` | mount, umount, unshare, uid_map, nsenter | SUCCEEDED; gVisor: SUCCEEDED [6] |
| `proc_sys` | /proc/1/cmdline, processes, masked files | SUCCEEDED; gVisor: SUCCEEDED [7] |
| `valid_then_exit1` | valid file, exit 1 | NONZERO_EXIT |
| `no_output` | exits 0, writes nothing | MISSING_OUTPUT |
| `nan_predictions` | every label `nan` | INVALID_OUTPUT (collected, refused) |

`network` tries: `/sys/class/net` and routes; `nslookup`; TCP to 172.17.0.1 (22, 80, 2375, 2376),
to 127.0.0.1 and 172.17.0.1 on both services' gRPC and metrics ports and 22, to
169.254.169.254:80 (and HTTP), to 1.1.1.1 (53, 443); ICMP to the gateway.

Where gVisor (Debian's 2022 runsc, ptrace platform) differs, and why, asserted not skipped:
[1] its tasks live in the sentry, not as host pids, so pids_limit does not refuse a fork; the
    sentry needs host threads for them, and two limits race: the memory limit kills the whole
    sandbox (exit 137, OUT_OF_MEMORY, ~3 runs in 4, about 0.5 s in), or the sentry's threads hit
    pids_limit (pids + 512) and the Go runtime dies (exit 2, no OOM: NONZERO_EXIT, "exited with
    status 2"). Reproduced with bare `docker run --runtime runsc --pids-limit 640`: every exit 2
    had pids.peak = 640. Either is accepted; the message for the second is misleading.
[2] OUT_OF_MEMORY too, but the sentry is the one host process the OOM killer can pick, so the
    whole sandbox dies; runc kills only the child and the shell logs "child ended with 137".
    `slow`: memory grows ~3x slower under ptrace, so 3 s could end it as TIMEOUT instead.
[3] `slow` because the gofer makes gVisor's file creation slow (~2.7 s for 4096 files).
[4] a FIFO made on a bind mount stays inside the sentry: the host sees no file at all.
[5] an unprivileged user may mknod in gVisor's own tmpfs (nodev ignored), but the node opens
    no host device (ENXIO; checked inside, a readable one would be a finding).
[6] `unshare -U` works inside the sentry: no uid_map can be written, no capability, no mount.
[7] runc: /proc/self/mountinfo names the hidden set's host folder (a known leak: a path, no
    labels; asserted, so a fix shows up); gVisor shows "/" there and kernel 4.4.0.
"""
