"""Member rules for tar archives from an untrusted image: names, link targets, types, sizes.

Shared by the outer `docker save` archive and each layer inside it. Only headers are read for
plain tars (tarfile seeks over data); a gzip layer is decompressed once, in a stream, and its
declared sizes are summed before any of its data is read, so a bomb is refused early.
"""

from __future__ import annotations

import posixpath
import tarfile
from dataclasses import dataclass
from typing import IO

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


class ImageRejectedError(Exception):
    """The tarball cannot run safely; the message is safe to return to the uploader."""


@dataclass(slots=True)
class Budget:
    """What an image may still spend: bytes once unpacked, and members in all."""

    bytes_left: int
    members_left: int

    def spend(self, member: tarfile.TarInfo, where: str) -> None:
        self.members_left -= 1
        if self.members_left < 0:
            raise ImageRejectedError(f"{where}: too many files in the image")
        self.bytes_left -= max(member.size, 0)
        if self.bytes_left < 0:
            raise ImageRejectedError(
                f"{where}: the image unpacks to more bytes than this service accepts"
            )


def safe_name(name: str, where: str) -> str:
    """A member name that stays inside its folder: relative, no `..`, normalised."""
    if not name or "\x00" in name:
        raise ImageRejectedError(f"{where}: a member has an empty or invalid name")
    if name.startswith("/"):
        raise ImageRejectedError(f"{where}: member {name!r} has an absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ImageRejectedError(f"{where}: member {name!r} escapes its folder")
    return "/".join(parts)


def check_member(member: tarfile.TarInfo, where: str, *, outer: bool) -> str:
    """Refuse device files, FIFOs in the outer archive, and links that leave the archive."""
    name = safe_name(member.name, where)
    if member.ischr() or member.isblk():
        raise ImageRejectedError(f"{where}: member {name!r} is a device file")
    if member.isfifo() and outer:
        raise ImageRejectedError(f"{where}: member {name!r} is a FIFO")
    if member.islnk():
        # Hard links name another member by path: one that leaves the root is a breakout.
        safe_name(member.linkname, where)
    if member.issym() and outer:
        target = posixpath.normpath(posixpath.join(posixpath.dirname(name), member.linkname))
        if member.linkname.startswith("/") or target == ".." or target.startswith("../"):
            raise ImageRejectedError(f"{where}: link {name!r} points outside the archive")
    # Symlinks inside a layer may point anywhere: the engine resolves them inside the rootfs.
    if not (member.isfile() or member.isdir() or member.issym() or member.islnk()) and outer:
        raise ImageRejectedError(f"{where}: member {name!r} has an unsupported type")
    return name


def check_layer(fileobj: IO[bytes], where: str, budget: Budget) -> None:
    """Walk one layer's members (plain or gzip tar) within the budget; zstd is refused."""
    head = fileobj.read(4)
    fileobj.seek(0)
    if head.startswith(ZSTD_MAGIC):
        raise ImageRejectedError(f"{where}: zstd-compressed layers are not supported")
    mode = "r|gz" if head.startswith(GZIP_MAGIC) else "r:"
    try:
        with tarfile.open(fileobj=fileobj, mode=mode) as layer:  # type: ignore[call-overload]
            for member in layer:
                check_member(member, where, outer=False)
                budget.spend(member, where)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise ImageRejectedError(f"{where}: not a valid layer archive ({exc})") from exc
