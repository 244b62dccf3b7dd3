"""The gate between an untrusted tar stream and the engine: nothing passes unless let through.

The inspector reads the decompressed upload through a `Gate`, a file that only moves forward:
`seek` past a member's data reads it through without copying it anywhere else. By default every
byte read is dropped. After a member passed its checks the inspector `emit`s a header the service
wrote itself (so the engine never parses a header from the upload: Python's and Go's tar readers
disagree on some of them) and lets that member's data through with `forward`. Withheld members
(manifest.json: the service appends a tag-less one once the whole image passed) are simply never
let through.
"""

from __future__ import annotations

import tarfile
from typing import Protocol

_CHUNK_BYTES = 1024 * 1024


class Source(Protocol):
    def read(self, n: int, /) -> bytes: ...


class Sink(Protocol):
    def put(self, data: bytes) -> None:
        """Hand bytes on (may block: the engine sets the pace)."""
        ...

    def abort(self) -> None:
        """Stop: the engine must discard everything it was sent."""
        ...


class Gate:
    """A forward-only file over `source` that hands what it is told to let through to `sink`."""

    def __init__(self, source: Source, sink: Sink | None) -> None:
        self._source = source
        self._sink = sink
        self._in = 0  # offset of the end of what was read
        self._through: tuple[int, int] = (0, 0)  # bytes read in this range go on to the sink

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True  # forward only, which is all tarfile asks of a file it reads in order

    def tell(self) -> int:
        return self._in

    def read(self, n: int = -1) -> bytes:
        """Exactly n bytes, fewer only at the end of the stream."""
        if n < 0:
            raise tarfile.ReadError("the gate reads a given number of bytes")
        parts: list[bytes] = []
        want = n
        while want > 0 and (data := self._source.read(min(want, _CHUNK_BYTES))):
            self._take(data)
            parts.append(data)
            want -= len(data)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def seek(self, pos: int, whence: int = 0) -> int:
        """Move forward to `pos`, reading through what lies before it."""
        if whence == 1:
            pos += self._in
        elif whence != 0:
            raise tarfile.ReadError("the gate cannot seek from the end of a stream")
        if pos < self._in:
            # tarfile reads an archive in order; anything else is a malformed archive.
            raise tarfile.ReadError(f"the archive goes back (from byte {self._in} to {pos})")
        while self._in < pos and (data := self._source.read(min(pos - self._in, _CHUNK_BYTES))):
            self._take(data)
        return self._in

    def emit(self, data: bytes) -> None:
        """Hand the service's own bytes (a header it wrote) to the sink, here in the stream."""
        if self._sink is not None:
            self._sink.put(data)

    def forward(self, start: int, end: int) -> None:
        """Let the bytes in [start, end) through; nothing before `start` may be pending."""
        if start != self._in:
            raise tarfile.ReadError(f"a member's data starts at {start}, not at {self._in}")
        self._through = (start, end)

    def _take(self, data: bytes) -> None:
        start, self._in = self._in, self._in + len(data)
        if self._sink is not None and (piece := _slice(data, start, *self._through)):
            self._sink.put(piece)


def _slice(data: bytes, offset: int, start: int, end: int) -> bytes:
    """The part of `data` (which begins at `offset`) that lies in [start, end)."""
    lo, hi = max(start - offset, 0), min(end - offset, len(data))
    if lo <= 0 and hi >= len(data):
        return data  # all of it: no copy
    return data[lo:hi] if lo < hi else b""


class Window:
    """One member's data as a file of its own, read in order through the gate.

    The first block is kept, so the inspector can look at it and then read from the start.
    """

    def __init__(self, gate: Gate, start: int, size: int) -> None:
        self._gate = gate
        self._start = start
        self._size = size
        self._pos = 0
        gate.seek(start)
        self.head = gate.read(min(size, 512))

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, whence: int = 0) -> int:
        if whence == 1:
            pos += self._pos
        elif whence == 2:
            pos += self._size
        pos = max(0, min(pos, self._size))
        if pos >= len(self.head):
            self._gate.seek(self._start + pos)
        elif self._gate.tell() != self._start + len(self.head):
            raise tarfile.ReadError("the member goes back past its first block")
        self._pos = pos
        return pos

    def read(self, n: int = -1) -> bytes:
        left = self._size - self._pos
        n = left if n < 0 else min(n, left)
        if n <= 0:
            return b""
        if self._pos < len(self.head):
            from_head = self.head[self._pos : self._pos + n]
            self._pos += len(from_head)
            rest = self.read(n - len(from_head)) if n > len(from_head) else b""
            return from_head + rest
        self._gate.seek(self._start + self._pos)
        data = self._gate.read(n)
        self._pos += len(data)
        return data
