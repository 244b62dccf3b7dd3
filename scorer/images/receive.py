"""The upload as a stream: hash the bytes as sent, decompress on the fly, enforce the caps.

Nothing is written to disk and nothing is held beyond a few chunks: the decompressed tar goes
straight to the inspector (and, through its gate, to the engine). A client that goes away makes
the chunk iterator raise, which ends the upload wherever it is.
"""

from __future__ import annotations

import enum
import gzip
import hashlib
import queue
import threading
import zlib
from collections.abc import Callable, Iterable, Iterator
from typing import IO, cast

import zstandard

from scorer.images.layers import GZIP_MAGIC, ZSTD_MAGIC

READ_BYTES = 1024 * 1024
CORRUPT = (EOFError, OSError, zlib.error, zstandard.ZstdError)


class Compression(enum.Enum):
    NONE = "none"
    GZIP = "gzip"
    ZSTD = "zstd"


class UploadProblem(enum.Enum):
    TOO_LARGE = "TOO_LARGE"  # a size cap: RESOURCE_EXHAUSTED
    INVALID = "INVALID"  # truncated, wrong hash, bad compression: INVALID_ARGUMENT


class UploadError(Exception):
    """The bytes broke a promise of the metadata or a cap (not a verdict on the image)."""

    def __init__(self, problem: UploadProblem, message: str) -> None:
        super().__init__(message)
        self.problem = problem


class Worker:
    """Feeds chunks to `fn` on its own thread, so receiving and hashing overlap.

    hashlib releases the GIL on large buffers; the queue is bounded (a few chunks), so memory
    stays flat. After an error the worker keeps draining, so `put` never blocks forever, and the
    error is raised to the receiving thread.
    """

    def __init__(self, fn: Callable[[bytes], object], depth: int = 4) -> None:
        self._fn = fn
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while (item := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self._fn(item)
                except BaseException as exc:  # handed to the receiving thread in put/close
                    self._error = exc

    def put(self, chunk: bytes) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(chunk)

    def close(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        if self._error is not None:
            raise self._error


class Received:
    """The chunk stream as a file: counts and hashes what was sent, within the declared size."""

    def __init__(self, chunks: Iterable[bytes], declared: int) -> None:
        self._chunks: Iterator[bytes] = iter(chunks)
        self._pending = b""
        self.declared = declared
        self.count = 0
        self._hash = hashlib.sha256()
        self._hasher = Worker(self._hash.update)

    def hexdigest(self) -> str:
        self._hasher.close()
        return self._hash.hexdigest()

    def close(self) -> None:
        self._hasher.close()

    def peek(self, n: int) -> bytes:
        while len(self._pending) < n:
            chunk = self._next()
            if not chunk:
                break
            self._pending += chunk
        return self._pending[:n]

    def _next(self) -> bytes:
        for chunk in self._chunks:
            if chunk:
                self.count += len(chunk)
                if self.count > self.declared:
                    raise UploadError(
                        UploadProblem.INVALID, "the upload sent more bytes than it declared"
                    )
                self._hasher.put(chunk)
                return chunk
        return b""

    def read(self, n: int = -1) -> bytes:
        """Up to n bytes (a whole chunk for n < 0), b"" at the end."""
        if not self._pending:
            self._pending = self._next()
        if n < 0 or n >= len(self._pending):
            data, self._pending = self._pending, b""
            return data
        data, self._pending = self._pending[:n], self._pending[n:]
        return data

    def drain(self) -> None:
        """Take (count and hash) the rest of the stream without looking at it."""
        self._pending = b""
        while self._next():
            pass

    def readable(self) -> bool:
        return True

    def check(self, sha256_hex: str) -> None:
        """At the end: every declared byte came, and they hash to the declared sha256."""
        if self.count < self.declared:
            raise truncated(self)
        if self.hexdigest() != sha256_hex:
            raise UploadError(
                UploadProblem.INVALID, "the upload's sha256 does not match the declared one"
            )


class Tar:
    """The decompressed tar, counted against its cap as it is read."""

    def __init__(self, received: Received, max_tar_bytes: int) -> None:
        self.received = received
        self.compression = sniff(received.peek(4))
        self._source = _decompressed(received, self.compression)
        self._max = max_tar_bytes
        self.count = 0

    def read(self, n: int = READ_BYTES) -> bytes:
        data = self._source.read(n)
        self.count += len(data)
        if self.count > self._max:
            raise UploadError(
                UploadProblem.TOO_LARGE, f"the image tarball unpacks to more than {self._max} bytes"
            )
        return data

    def drain(self) -> None:
        """Read to the end (still within the cap); a compressed stream must end the upload."""
        while self.read(READ_BYTES):
            pass
        if self.compression is not Compression.NONE and self.received.read(1):
            raise UploadError(
                UploadProblem.INVALID, "the upload has data after its compressed stream"
            )


def _decompressed(received: Received, compression: Compression) -> IO[bytes]:
    stream = cast(IO[bytes], received)  # a read-only file in all that these readers use
    match compression:
        case Compression.NONE:
            return stream  # read(READ_BYTES) passes the client's chunks through
        case Compression.GZIP:
            return cast(IO[bytes], gzip.GzipFile(fileobj=stream, mode="rb"))
        case Compression.ZSTD:
            return zstandard.ZstdDecompressor().stream_reader(
                stream, read_size=READ_BYTES, read_across_frames=True
            )


def sniff(head: bytes) -> Compression:
    if head.startswith(GZIP_MAGIC):
        return Compression.GZIP
    if head.startswith(ZSTD_MAGIC):
        return Compression.ZSTD
    return Compression.NONE


def truncated(received: Received) -> UploadError:
    return UploadError(
        UploadProblem.INVALID,
        f"the upload ended after {received.count} of {received.declared} declared bytes",
    )


def corrupt(received: Received, compression: Compression, exc: BaseException) -> UploadError:
    """A decompressor's complaint: the stream was cut short, or it is broken."""
    if received.count < received.declared:
        return truncated(received)
    return UploadError(UploadProblem.INVALID, f"the {compression.value} stream is corrupt ({exc})")
