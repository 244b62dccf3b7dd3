"""Registering a hidden dataset in place and checking, cheaply or fully, that it has not changed.

Every problem message is organizer-facing (it names files): never show one to a participant.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from scorer.core.manifest import (
    DatasetError,
    Manifest,
    ManifestEntry,
    parse_labels_csv,
    summarise,
)

__all__ = [
    "DatasetError",
    "FileStat",
    "FileStats",
    "build_manifest",
    "full_verify",
    "quick_check",
    "refresh_stats",
]

CHUNK_BYTES: Final = 1 << 20
# O_NOFOLLOW: a file swapped for a symlink after the listing is refused, not followed;
# O_NONBLOCK: one swapped for a FIFO cannot hang the open.
_OPEN_FLAGS: Final = os.O_RDONLY | os.O_NOFOLLOW | os.O_NOCTTY | os.O_NONBLOCK | os.O_CLOEXEC
# Containers run as an unprivileged UID and see this folder through a read-only bind mount.
_OTHER_RX: Final = stat.S_IROTH | stat.S_IXOTH


@dataclass(frozen=True, slots=True, kw_only=True)
class FileStat:
    """What an lstat says about one video, captured when it was hashed."""

    size_bytes: int
    mtime_ns: int
    ctime_ns: int
    inode: int
    device: int
    mode: int

    @classmethod
    def of(cls, st: os.stat_result) -> FileStat:
        return cls(
            size_bytes=st.st_size,
            mtime_ns=st.st_mtime_ns,
            ctime_ns=st.st_ctime_ns,
            inode=st.st_ino,
            device=st.st_dev,
            mode=stat.S_IMODE(st.st_mode),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class FileStats:
    """Per-file stats of a registered dataset, keyed by file name."""

    files: dict[str, FileStat]

    def to_json(self) -> bytes:
        body = {name: _stat_dict(st) for name, st in sorted(self.files.items())}
        return json.dumps(body, sort_keys=True, separators=(",", ":")).encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes | str) -> FileStats:
        try:
            body = json.loads(data)
            return cls(files={name: FileStat(**fields) for name, fields in body.items()})
        except (ValueError, TypeError, AttributeError) as exc:
            raise DatasetError(f"the stored file stats are malformed: {exc}") from exc


def _stat_dict(st: FileStat) -> dict[str, int]:
    return {
        "size_bytes": st.size_bytes,
        "mtime_ns": st.mtime_ns,
        "ctime_ns": st.ctime_ns,
        "inode": st.inode,
        "device": st.device,
        "mode": st.mode,
    }


def build_manifest(videos_dir: Path, labels_csv: bytes) -> tuple[Manifest, FileStats]:
    """Hash every labelled video in the flat folder `videos_dir` and bind it to its label.

    The folder is mounted whole into participants' containers, so it must hold exactly the
    labelled `.mp4` files, as regular files readable by others: any other entry (an unlabelled
    file, a stray labels.csv, a subfolder, a symlink) is refused, never silently ignored.
    """
    labels = parse_labels_csv(labels_csv)
    scan = _scan_folder(videos_dir, set(labels))
    problems = list(scan.problems)
    entries: list[ManifestEntry] = []
    stats: dict[str, FileStat] = {}
    for name in sorted(scan.regular):
        try:
            sha256, file_stat = _hash_file(videos_dir / name)
        except (OSError, DatasetError) as exc:
            problems.append(f"{name}: cannot be read ({_reason(exc)})")
            continue
        if not file_stat.mode & stat.S_IROTH:
            problems.append(f"{name}: must be readable by others (chmod o+r)")
        label, split = labels[name]
        entries.append(
            ManifestEntry(
                name=name, size_bytes=file_stat.size_bytes, sha256=sha256, label=label, split=split
            )
        )
        stats[name] = file_stat
    if problems:
        raise DatasetError(summarise(f"cannot register {videos_dir}", problems))
    manifest = Manifest(entries=tuple(entries), salt_hex=secrets.token_hex(32))
    return manifest, FileStats(files=stats)


def quick_check(videos_dir: Path, manifest: Manifest, stats: FileStats) -> list[str]:
    """Cheap check (lstat and one directory listing, no reads): problems, or [] when unchanged.

    Besides size and mtime it compares inode, device and ctime, so a file rewritten in place and
    its mtime restored is caught too; ctime also moves on chmod/chown, so a problem here means
    "run full_verify", which decides whether the content really changed.
    """
    scan = _scan_folder(videos_dir, set(manifest.names))
    problems = list(scan.problems)
    for name in sorted(scan.regular):
        problem = _stat_problem(videos_dir / name, stats.files.get(name))
        if problem is not None:
            problems.append(f"{name}: {problem}")
    return problems


def full_verify(videos_dir: Path, manifest: Manifest) -> list[str]:
    """Re-hash every video: problems (wrong content, missing, extra entries), or [] when intact."""
    problems, _stats = refresh_stats(videos_dir, manifest)
    return problems


def refresh_stats(videos_dir: Path, manifest: Manifest) -> tuple[list[str], FileStats]:
    """Re-hash like full_verify and also return fresh stats, captured from the hashed files.

    When the problem list is empty the stats can replace the stored ones, so that a harmless
    metadata change (chmod, touch) stops failing quick_check.
    """
    scan = _scan_folder(videos_dir, set(manifest.names))
    problems = list(scan.problems)
    fresh: dict[str, FileStat] = {}
    for entry in manifest.entries:
        if entry.name not in scan.regular:
            continue  # already reported by the scan
        try:
            sha256, file_stat = _hash_file(videos_dir / entry.name)
        except (OSError, DatasetError) as exc:
            problems.append(f"{entry.name}: cannot be read ({_reason(exc)})")
            continue
        fresh[entry.name] = file_stat
        if file_stat.size_bytes != entry.size_bytes or sha256 != entry.sha256:
            problems.append(f"{entry.name}: content differs from the registered sha256")
        elif not file_stat.mode & stat.S_IROTH:
            problems.append(f"{entry.name}: no longer readable by others (chmod o+r)")
    return problems, FileStats(files=fresh)


@dataclass(frozen=True, slots=True, kw_only=True)
class _FolderScan:
    problems: tuple[str, ...]
    regular: frozenset[str]  # expected names present as regular files


def _scan_folder(videos_dir: Path, expected: set[str]) -> _FolderScan:
    """What is wrong with the folder as a whole: missing, unlistable, or holding extras."""
    try:
        dir_stat = videos_dir.stat()
        listing = {entry.name: entry for entry in os.scandir(videos_dir)}
    except NotADirectoryError:
        return _FolderScan(problems=(f"{videos_dir} is not a folder",), regular=frozenset())
    except OSError as exc:
        problem = f"the videos folder {videos_dir} cannot be listed ({_reason(exc)})"
        return _FolderScan(problems=(problem,), regular=frozenset())
    problems = []
    if dir_stat.st_mode & _OTHER_RX != _OTHER_RX:
        problems.append(f"{videos_dir} must be listable by others (chmod o+rx)")
    for name in sorted(expected - listing.keys()):
        problems.append(f"{name}: labelled but missing from the folder")
    for name in sorted(listing.keys() - expected):
        problems.append(f"{name!r}: unexpected entry; the folder may hold only labelled videos")
    regular = set()
    for name in sorted(expected & listing.keys()):
        if listing[name].is_file(follow_symlinks=False):
            regular.add(name)
        else:
            problems.append(f"{name}: not a regular file (symlinks and folders are refused)")
    return _FolderScan(problems=tuple(problems), regular=frozenset(regular))


def _stat_problem(path: Path, registered: FileStat | None) -> str | None:
    if registered is None:
        return "has no registration stats; run a full verification"
    try:
        st = path.lstat()
    except OSError as exc:
        return f"cannot be inspected ({_reason(exc)})"
    if not stat.S_ISREG(st.st_mode):
        return "no longer a regular file"
    return _change(registered, FileStat.of(st))


def _change(was: FileStat, now: FileStat) -> str | None:
    """The most telling difference between two stats of one file, or None."""
    changes = (
        (
            (now.inode, now.device) != (was.inode, was.device),
            "replaced by another file (new inode)",
        ),
        (
            now.size_bytes != was.size_bytes,
            f"size changed from {was.size_bytes} to {now.size_bytes} bytes",
        ),
        (now.mtime_ns != was.mtime_ns, "modified (mtime changed)"),
        (now.ctime_ns != was.ctime_ns, "content or metadata changed (ctime changed)"),
        (not now.mode & stat.S_IROTH, "no longer readable by others (chmod o+r)"),
    )
    return next((message for changed, message in changes if changed), None)


def _hash_file(path: Path) -> tuple[str, FileStat]:
    """Streamed sha256 and the stat of the very file read (no symlink, no swap mid-read)."""
    fd = os.open(path, _OPEN_FLAGS)
    try:
        before = os.fstat(fd)
        if not stat.S_ISREG(before.st_mode):
            raise DatasetError("not a regular file")
        digest = hashlib.sha256()
        buffer = bytearray(CHUNK_BYTES)
        view = memoryview(buffer)
        total = 0
        while count := os.readv(fd, [buffer]):
            digest.update(view[:count])
            total += count
        after = os.fstat(fd)
    finally:
        os.close(fd)
    unchanged = (before.st_size, before.st_mtime_ns) == (after.st_size, after.st_mtime_ns)
    if not unchanged or total != after.st_size:
        raise DatasetError(f"{path.name}: changed while being hashed; try again when it is stable")
    return digest.hexdigest(), FileStat.of(after)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)
