"""The gate between an untrusted tar stream and the engine: bytes pass only once released.

The inspector reads the decompressed upload through a `Gate`, a file that can only move forward:
`seek` past a member's data reads it through (handing it on) without copying it anywhere else.
Every byte read is held until the inspector releases the offset past it: a member's header only
after the member was checked, so the engine never parses a header the service has not approved.
Ranges can be dropped instead (the uploaded manifest.json, whose tag-less copy the service
appends itself once the whole image passed). Held bytes are at most a header's worth.
"""

from __future__ import annotations

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
    """A read-only file over `source` that hands released bytes to `sink` (None: to no one)."""

    def __init__(self, source: Source, sink: Sink | None) -> None:
        self._source = source
        self._sink = sink
        self._held = bytearray()  # bytes [self._out, self._in): read, not yet handed on
        self._in = 0  # offset of the end of what was read
        self._out = 0  # offset up to which bytes were handed on or dropped
        self._limit = 0  # bytes below this offset may be handed on
        self._drops: list[tuple[int, int]] = []  # ranges that are never handed on

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True  # forward only, which is all tarfile asks of a file it reads in order

    def tell(self) -> int:
        return self._in

    def read(self, n: int = -1) -> bytes:
        """Exactly n bytes, fewer only at the end of the stream."""
        if n < 0:
            raise ValueError("the gate reads a given number of bytes")
        parts: list[bytes] = []
        want = n
        while want > 0 and (data := self._source.read(min(want, _CHUNK_BYTES))):
            self._take(data)
            parts.append(data)
            want -= len(data)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def seek(self, pos: int, whence: int = 0) -> int:
        """Move forward to `pos`, reading through (and handing on) what lies before it."""
        if whence == 1:
            pos += self._in
        elif whence != 0:
            raise OSError("the gate cannot seek from the end of a stream")
        if pos < self._in:
            raise OSError(f"the gate moves forward only (at {self._in}, asked for {pos})")
        while self._in < pos and (data := self._source.read(min(pos - self._in, _CHUNK_BYTES))):
            self._take(data)
        return self._in

    def _take(self, data: bytes) -> None:
        start, self._in = self._in, self._in + len(data)
        if self._sink is None:
            return
        if (
            not self._held
            and start == self._out
            and self._in <= self._limit
            and not any(a < self._in and b > start for a, b in self._drops)
        ):
            self._out = self._in  # all of it is released already: hand it on without a copy
            self._sink.put(data)
        else:
            self._held += data
            self._flush()

    def release(self, upto: int) -> None:
        """Bytes before offset `upto` may go on to the engine."""
        self._limit = max(self._limit, upto)
        self._flush()

    def drop(self, start: int, end: int) -> None:
        """Bytes in [start, end) never go on. Call before releasing past `start`."""
        if start < self._out:
            raise ValueError("that range was handed on already")
        self._drops.append((start, end))

    def abort(self) -> None:
        """Hand nothing more on, and tell the sink to discard what it has."""
        sink, self._sink = self._sink, None
        self._held.clear()
        if sink is not None:
            sink.abort()

    def _flush(self) -> None:
        sink = self._sink
        if sink is None:
            self._held.clear()
            return
        end = min(self._in, self._limit)
        while self._out < end:
            drop = next(((a, b) for a, b in self._drops if b > self._out), None)
            if drop is not None and drop[0] <= self._out:
                stop = min(drop[1], end)
                del self._held[: stop - self._out]
                self._out = stop
                continue
            stop = end if drop is None else min(end, drop[0])
            piece = bytes(self._held[: stop - self._out])
            del self._held[: stop - self._out]
            self._out = stop
            sink.put(piece)


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
            raise OSError("the window moves forward only, once past its first block")
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
