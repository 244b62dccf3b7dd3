"""Receive an upload to disk: hash the bytes as sent, decompress on the fly, enforce the caps.

Nothing is held in memory beyond one chunk; the partial file is removed on any error, including
a client that goes away (the chunk iterator raises) — so no upload leaves a file behind.
"""

from __future__ import annotations

import enum
import gzip
import hashlib
import os
import queue
import tempfile
import threading
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, cast

import zstandard

from scorer.images.layers import GZIP_MAGIC, ZSTD_MAGIC

_READ_BYTES = 1024 * 1024


class Compression(enum.Enum):
    NONE = "none"
    GZIP = "gzip"
    ZSTD = "zstd"


class SpoolProblem(enum.Enum):
    TOO_LARGE = "TOO_LARGE"  # a size cap: RESOURCE_EXHAUSTED
    INVALID = "INVALID"  # truncated, wrong hash, bad compression: INVALID_ARGUMENT


class SpoolError(Exception):
    def __init__(self, problem: SpoolProblem, message: str) -> None:
        super().__init__(message)
        self.problem = problem


@dataclass(frozen=True, slots=True, kw_only=True)
class Spooled:
    path: Path  # a plain tar, decompressed
    compression: Compression
    received_bytes: int
    tar_bytes: int


class _Worker:
    """Feeds chunks to `fn` on its own thread, so receiving, hashing and writing overlap.

    hashlib and file writes release the GIL on large buffers; the queue is bounded (a few 1 MiB
    chunks), so memory stays flat. After an error the worker keeps draining, so `put` never
    blocks forever, and the error is raised to the receiving thread.
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


class _Received:
    """The chunk stream as a file: counts and hashes what was sent, within the declared size."""

    def __init__(self, chunks: Iterable[bytes], declared: int) -> None:
        self._chunks: Iterator[bytes] = iter(chunks)
        self._pending = b""
        self.declared = declared
        self.count = 0
        self._hash = hashlib.sha256()
        self._hasher = _Worker(self._hash.update)

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
                    raise SpoolError(
                        SpoolProblem.INVALID, "the upload sent more bytes than it declared"
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

    def readable(self) -> bool:
        return True


def _decompressed(received: _Received, compression: Compression) -> IO[bytes]:
    stream = cast(IO[bytes], received)  # a read-only file in all that these readers use
    match compression:
        case Compression.NONE:
            return stream  # read(_READ_BYTES) passes the client's chunks through
        case Compression.GZIP:
            return cast(IO[bytes], gzip.GzipFile(fileobj=stream, mode="rb"))
        case Compression.ZSTD:
            return zstandard.ZstdDecompressor().stream_reader(
                stream, read_size=_READ_BYTES, read_across_frames=True
            )


def _copy(source: IO[bytes], out: IO[bytes], max_tar_bytes: int) -> int:
    written = 0
    writer = _Worker(out.write)
    try:
        while data := source.read(_READ_BYTES):
            written += len(data)
            if written > max_tar_bytes:
                raise SpoolError(
                    SpoolProblem.TOO_LARGE,
                    f"the image tarball unpacks to more than {max_tar_bytes} bytes",
                )
            writer.put(data)
    finally:
        writer.close()
    return written


def sniff(head: bytes) -> Compression:
    if head.startswith(GZIP_MAGIC):
        return Compression.GZIP
    if head.startswith(ZSTD_MAGIC):
        return Compression.ZSTD
    return Compression.NONE


def spool(
    chunks: Iterable[bytes],
    *,
    directory: Path,
    declared_size_bytes: int,
    sha256_hex: str,
    max_tar_bytes: int,
) -> Spooled:
    """Write the upload's plain tar under `directory`; SpoolError on any broken promise."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, name = tempfile.mkstemp(dir=directory, prefix="upload-", suffix=".tar")
    path = Path(name)
    received = _Received(chunks, declared_size_bytes)
    compression = Compression.NONE
    try:
        compression = sniff(received.peek(4))
        source = _decompressed(received, compression)
        with os.fdopen(fd, "wb") as out:
            written = _copy(source, out, max_tar_bytes)
        _check_received(received, sha256_hex)
    except (EOFError, OSError, zlib.error, zstandard.ZstdError) as exc:
        path.unlink(missing_ok=True)
        if received.count < declared_size_bytes:
            raise _truncated(received) from exc
        raise SpoolError(
            SpoolProblem.INVALID, f"the {compression.value} stream is corrupt ({exc})"
        ) from exc
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    finally:
        received.close()
    return Spooled(
        path=path, compression=compression, received_bytes=received.count, tar_bytes=written
    )


def _truncated(received: _Received) -> SpoolError:
    return SpoolError(
        SpoolProblem.INVALID,
        f"the upload ended after {received.count} of {received.declared} declared bytes",
    )


def _check_received(received: _Received, sha256_hex: str) -> None:
    if received.read(1):  # compressed data followed by more bytes than the stream held
        raise SpoolError(SpoolProblem.INVALID, "the upload has data after its compressed stream")
    if received.count < received.declared:
        raise _truncated(received)
    if received.hexdigest() != sha256_hex:
        raise SpoolError(
            SpoolProblem.INVALID, "the upload's sha256 does not match the declared one"
        )
