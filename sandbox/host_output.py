"""The per-run /output folder on the host: a size-capped tmpfs, read back without trusting it.

The container is gone before the host reads anything, so nothing can race the checks; still
every name in the folder was chosen by the participant, so nothing is followed, nothing blocks,
and nothing more than the cap is read.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from sandbox.executor import ExecutorError, OutputFileStatus

SUBMISSION = "submission.csv"
MS_NOSUID, MS_NODEV, MS_NOEXEC = 2, 4, 8
MNT_DETACH, UMOUNT_NOFOLLOW = 2, 8
_PAGE = os.sysconf("SC_PAGE_SIZE")
_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


@dataclass(frozen=True, slots=True, kw_only=True)
class OutputRead:
    status: OutputFileStatus
    data: bytes | None
    full: bool
    used_bytes: int


def mount_tmpfs(target: Path, *, size_bytes: int, inodes: int, uid: int, gid: int) -> None:
    """Mount a fresh tmpfs owned by the run's user: the cap is the kernel's, not a promise."""
    options = f"size={size_bytes},nr_inodes={inodes},uid={uid},gid={gid},mode=0700"
    # nosuid,nodev,noexec: what lands here is data for the host to read, never to run.
    flags = MS_NOSUID | MS_NODEV | MS_NOEXEC
    if _libc.mount(b"tmpfs", os.fsencode(target), b"tmpfs", flags, options.encode()) != 0:
        err = ctypes.get_errno()
        raise ExecutorError(f"cannot mount the output tmpfs at {target}: {os.strerror(err)}")


def unmount(target: Path) -> None:
    """Unmount; lazily (MNT_DETACH) if busy. A target that is not mounted is fine."""
    path = os.fsencode(target)
    if _libc.umount2(path, UMOUNT_NOFOLLOW) == 0:
        return
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOENT):  # not a mount point (any more)
        return
    if err == errno.EBUSY and _libc.umount2(path, UMOUNT_NOFOLLOW | MNT_DETACH) == 0:
        return
    raise ExecutorError(f"cannot unmount {target}: {os.strerror(ctypes.get_errno() or err)}")


def mounts_under(root: Path, mountinfo: Path = Path("/proc/self/mountinfo")) -> list[Path]:
    """Mount points at or below root, deepest first (the order to unmount them in)."""
    prefix = os.fsdecode(os.path.realpath(root))
    found = []
    for line in mountinfo.read_text().splitlines():
        point = _unescape(line.split()[4])
        if point == prefix or point.startswith(prefix.rstrip("/") + "/"):
            found.append(Path(point))
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as octal (\040 ...).
    return field.encode().decode("unicode_escape").encode("latin-1").decode(errors="replace")


def read_output(folder: Path, cap_bytes: int) -> OutputRead:
    """What the run left in folder: submission.csv (at most cap_bytes), and how full it is."""
    status, data = read_submission(folder / SUBMISSION, cap_bytes)
    used, full = _fill(folder, cap_bytes)
    return OutputRead(status=status, data=data, full=full, used_bytes=used)


def read_submission(path: Path, cap_bytes: int) -> tuple[OutputFileStatus, bytes | None]:
    # O_NOFOLLOW: a symlink (to /etc/passwd, to the hidden set) is refused, never followed;
    # O_NONBLOCK: a FIFO with no writer cannot hang the service.
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        return OutputFileStatus.MISSING, None
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENXIO, errno.EOPNOTSUPP, errno.EACCES):
            return OutputFileStatus.NOT_REGULAR, None  # symlink, socket, ...
        raise ExecutorError(f"cannot open the output: {exc}") from exc
    try:
        info = os.fstat(fd)
        # A hard link (st_nlink > 1) could alias another file the run controls; anything but a
        # regular file (FIFO, directory, device) is not a submission.
        if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
            return OutputFileStatus.NOT_REGULAR, None
        if info.st_size > cap_bytes:
            return OutputFileStatus.TOO_LARGE, None
        data = _read_at_most(fd, cap_bytes + 1)
    except OSError as exc:
        raise ExecutorError(f"cannot read the output: {exc}") from exc
    finally:
        os.close(fd)
    if len(data) > cap_bytes:
        return OutputFileStatus.TOO_LARGE, None
    return OutputFileStatus.OK, data


def _read_at_most(fd: int, limit: int) -> bytes:
    chunks: list[bytes] = []
    left = limit
    while left > 0:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _fill(folder: Path, cap_bytes: int) -> tuple[int, bool]:
    """Bytes used on the output tmpfs, and whether it filled up (ENOSPC for the run)."""
    try:
        fs = os.statvfs(folder)
    except OSError as exc:
        raise ExecutorError(f"cannot stat the output folder: {exc}") from exc
    used = (fs.f_blocks - fs.f_bfree) * fs.f_frsize
    full = fs.f_bfree == 0 or fs.f_ffree == 0 or used >= cap_bytes - _PAGE
    return used, full
