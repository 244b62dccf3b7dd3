"""Member rules for tar archives from an untrusted image: names, link targets, types, sizes.

Shared by the outer `docker save` archive and each layer inside it. Layers are walked as they
stream past, headers only: a member's declared size is spent from the budget before any of its
data is read, so a gzip bomb is refused early.
"""

from __future__ import annotations

import posixpath
import tarfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any, Self, cast

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
    """What a member's first block says it is: "tar", "gzip", "zstd" (or another compression
    the engine knows: bzip2, xz, a zstd skippable frame) or "other"."""
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    # What the engine would decompress but the inspector does not read: refused as a layer.
    if head.startswith((ZSTD_MAGIC, b"BZh", b"\xfd7zXZ\x00")) or (
        len(head) >= 4 and head[1:4] == b"\x2a\x4d\x18" and head[0] & 0xF0 == 0x50
    ):
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


_EXTENDED_MAX_BYTES = 8 * 1024  # a PAX or GNU long-name header's data (paths, xattrs)
_POSIX_MAGIC = b"ustar\x0000"


class StrictInfo(tarfile.TarInfo):
    """Headers that Python's tarfile and Go's archive/tar (the engine's) read the same way.

    Anything else fails the archive with ReadError: where tarfile would stop quietly (an
    unreadable header), or where the two readers disagree on a name or a size (a name prefix
    outside the POSIX format, global or Solaris extended headers, PAX mixed with GNU long names,
    GNU sparse records, hdrcharset), or where tarfile would read an unbounded header into memory
    (extended headers are capped; this also bounds CVE-2024-6232's regex on Python < 3.11.10).
    """

    @classmethod
    def frombuf(cls, buf: bytes | bytearray, encoding: str, errors: str) -> Self:
        if buf[257:265] != _POSIX_MAGIC and buf[345:500].strip(b"\0"):
            raise tarfile.ReadError("a header has a name prefix outside the POSIX format")
        return super().frombuf(buf, encoding, errors)

    @classmethod
    def fromtarfile(cls, archive: tarfile.TarFile) -> Self:
        depth: int = getattr(archive, "_strict_depth", 0)
        if depth == 0:
            archive._strict_chain = []  # type: ignore[attr-defined]  # the extended headers
        archive._strict_depth = depth + 1  # type: ignore[attr-defined]
        try:
            info = super().fromtarfile(archive)
        except tarfile.HeaderError as exc:
            if type(exc).__name__ in ("InvalidHeaderError", "TruncatedHeaderError"):
                where = archive.offset
                raise tarfile.ReadError(f"unreadable header at byte {where}: {exc}") from exc
            raise  # a zero block or the end: the archive ends here
        finally:
            archive._strict_depth = depth  # type: ignore[attr-defined]
        if depth == 0:
            _check_records(info)
        return info

    def _proc_member(self, tarfile_: tarfile.TarFile) -> Self:
        if self.size < 0:
            raise tarfile.ReadError(f"member {self.name!r} has a negative size")
        if self.type in (tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE):
            raise tarfile.ReadError("global extended headers are not accepted")
        if self.type == tarfile.GNUTYPE_SPARSE:
            raise tarfile.ReadError(f"member {self.name!r} is a sparse file")
        if self.type in (tarfile.XHDTYPE, tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK):
            if self.size > _EXTENDED_MAX_BYTES:
                raise tarfile.ReadError(f"an extended header of {self.size} bytes")
            chain: list[bytes] = tarfile_._strict_chain  # type: ignore[attr-defined]
            chain.append(self.type)
            if len(set(chain)) != len(chain) or (tarfile.XHDTYPE in chain and len(chain) > 1):
                raise tarfile.ReadError("a member has conflicting extended headers")
        return super()._proc_member(tarfile_)  # type: ignore[misc,no-any-return]


def _check_records(info: tarfile.TarInfo) -> None:
    for key in info.pax_headers:
        if key.startswith("GNU.sparse") or key == "hdrcharset":
            raise tarfile.ReadError(f"member {info.name!r} has a PAX record {key!r}")
    if info.size < 0:
        raise tarfile.ReadError(f"member {info.name!r} has a negative size")


class Gunzip:
    """A gzip layer decompressed as Go's reader takes it: one or more members, nothing after.

    Every decompressed byte goes to `on_data` (the inspector hashes the layer for its diff_id);
    output is produced a chunk at a time, so a bomb costs no memory.
    """

    _CHUNK = 1024 * 1024

    def __init__(self, source: IO[bytes], on_data: Callable[[bytes], object]) -> None:
        self._src = source
        self._on = on_data
        self._d = zlib.decompressobj(wbits=31)
        self._buf = b""
        self._eof = False

    def read(self, n: int = -1) -> bytes:
        while (n < 0 or len(self._buf) < n) and not self._eof:
            self._fill()
        if n < 0:
            n = len(self._buf)
        data, self._buf = self._buf[:n], self._buf[n:]
        return data

    def _fill(self) -> None:
        if self._d.unconsumed_tail:
            data = self._d.unconsumed_tail
        elif self._d.eof:
            data = self._d.unused_data
            while len(data) < len(GZIP_MAGIC) and (more := self._src.read(self._CHUNK)):
                data += more
            if not data:
                self._eof = True
                return
            if not data.startswith(GZIP_MAGIC):
                raise tarfile.ReadError("the layer has data after its gzip stream")
            self._d = zlib.decompressobj(wbits=31)
        else:
            data = self._src.read(self._CHUNK)
            if not data:
                raise tarfile.ReadError("the layer's gzip stream is truncated")
        out = self._d.decompress(data, self._CHUNK)
        if out:
            self._on(out)
            self._buf += out


def walk_layer(
    fileobj: IO[bytes], where: str, budget: Budget, *, stream: bool = False
) -> tuple[int, int]:
    """Walk one layer's members within the budget: a plain tar read in order (seeking over
    data), or with `stream` one that can only be read (a gzip layer, through `Gunzip`).

    Returns (members, bytes). ImageRejectedError names the first bad member; OverBudgetError
    means the image as a whole is too big.
    """
    count = total = 0
    try:
        mode = "r|" if stream else "r:"
        with tarfile.open(  # type: ignore[call-overload]
            fileobj=fileobj, mode=mode, tarinfo=StrictInfo, bufsize=1024**2
        ) as layer:
            while (member := layer.next()) is not None:
                cast(Any, layer).members.clear()  # a layer may hold 1M files: keep none
                check_member(member, where, outer=False)
                budget.spend(member, where)
                count += 1
                total += max(member.size, 0)
    except (tarfile.TarError, EOFError, zlib.error) as exc:
        raise ImageRejectedError(f"{where}: not a valid layer archive ({exc})") from exc
    return count, total
