"""Member rules for tar archives from an untrusted image: names, link targets, types, sizes.

Shared by the outer `docker save` archive and each layer inside it. Layers are walked as they
stream past, headers only: a member's declared size is spent from the budget before any of its
data is read, so a gzip bomb is refused early.
"""

from __future__ import annotations

import posixpath
import tarfile
import zlib
from dataclasses import dataclass
from typing import IO, Self

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


class ImageRejectedError(Exception):
    """The tarball cannot run safely; the message is safe to return to the uploader."""


class OverBudgetError(ImageRejectedError):
    """The image unpacks to more bytes or files than allowed: stop reading at once."""


@dataclass(slots=True)
class Budget:
    """What an image may still spend: bytes once unpacked, and members in all."""

    bytes_left: int
    members_left: int

    def spend(self, member: tarfile.TarInfo, where: str) -> None:
        self.members_left -= 1
        if self.members_left < 0:
            raise OverBudgetError(f"{where}: too many files in the image")
        self.bytes_left -= max(member.size, 0)
        if self.bytes_left < 0:
            raise OverBudgetError(
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


def layer_kind(head: bytes) -> str:
    """What a member's first block says it is: "tar", "gzip", "zstd" or "other"."""
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head.startswith(ZSTD_MAGIC):
        return "zstd"
    if len(head) < tarfile.BLOCKSIZE:
        return "other"
    block = head[: tarfile.BLOCKSIZE]
    if block == bytes(tarfile.BLOCKSIZE):
        return "tar"  # a zero block: an empty archive
    try:
        tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
    except tarfile.HeaderError:
        return "other"
    return "tar"


class StrictInfo(tarfile.TarInfo):
    """A TarInfo whose archive fails on a header it cannot read, where tarfile would stop quietly
    (a member hidden behind such a header would then go unchecked, but not unread by the engine).
    """

    @classmethod
    def fromtarfile(cls, archive: tarfile.TarFile) -> Self:
        try:
            return super().fromtarfile(archive)
        except tarfile.HeaderError as exc:
            if type(exc).__name__ in ("InvalidHeaderError", "TruncatedHeaderError"):
                where = archive.offset
                raise tarfile.ReadError(f"unreadable header at byte {where}: {exc}") from exc
            raise  # a zero block or the end: the archive ends here


def walk_layer(fileobj: IO[bytes], kind: str, where: str, budget: Budget) -> tuple[int, int]:
    """Walk one layer's members (a plain tar, read in order, or a gzip stream) within the budget.

    Returns (members, bytes). ImageRejectedError names the first bad member; OverBudgetError
    means the image as a whole is too big.
    """
    count = total = 0
    mode = "r|gz" if kind == "gzip" else "r:"
    try:
        with tarfile.open(  # type: ignore[call-overload]
            fileobj=fileobj, mode=mode, bufsize=1024 * 1024, tarinfo=StrictInfo
        ) as layer:
            while (member := layer.next()) is not None:
                layer.members.clear()  # a layer may hold a million files: keep none of them
                check_member(member, where, outer=False)
                budget.spend(member, where)
                count += 1
                total += max(member.size, 0)
    except (tarfile.TarError, EOFError, zlib.error) as exc:
        raise ImageRejectedError(f"{where}: not a valid layer archive ({exc})") from exc
    return count, total
