"""One upload, start to verdict: receive, decompress, inspect, and hand checked bytes on.

The order of verdicts is the order of trust: bytes that break the metadata's promises (more or
fewer than declared, another sha256) are refused as such, whatever the image holds; only a
complete, intact upload earns a verdict on the image, and only that is recorded as a rejection.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from scorer.images.gate import Sink
from scorer.images.inspect import ImageRejectedError, ImageReport, InspectCaps, inspect_stream
from scorer.images.receive import CORRUPT, Compression, Received, Tar, corrupt


@dataclass(frozen=True, slots=True, kw_only=True)
class Inspected:
    report: ImageReport
    compression: Compression
    received_bytes: int
    tar_bytes: int


def receive_image(
    chunks: Iterable[bytes],
    *,
    declared_size_bytes: int,
    sha256_hex: str,
    max_tar_bytes: int,
    caps: InspectCaps,
    sink: Sink | None,
) -> Inspected:
    """Inspect the upload as it arrives, handing checked bytes to `sink`.

    On a rejection the sink is aborted at once, the rest of the upload is still received (to
    check its size and hash), then ImageRejectedError is raised. UploadError for broken
    promises and caps; whatever the chunk iterator raises (a client gone) passes through.
    """
    received = Received(chunks, declared_size_bytes)
    try:
        return _receive(received, sha256_hex, max_tar_bytes, caps, sink)
    except BaseException:
        if sink is not None:
            sink.abort()  # whatever went wrong, the engine keeps nothing
        raise
    finally:
        received.close()


def _receive(
    received: Received, sha256_hex: str, max_tar_bytes: int, caps: InspectCaps, sink: Sink | None
) -> Inspected:
    tar = Tar(received, max_tar_bytes)
    try:
        # What follows the end-of-archive is read (and counted) before any verdict.
        report = inspect_stream(tar, caps, sink, before_verdict=tar.drain)
    except ImageRejectedError:
        if sink is not None:
            sink.abort()  # at once: the rest is only received to check its size and hash
        received.drain()
        received.check(sha256_hex)
        raise
    except CORRUPT as exc:
        received.drain()
        received.check(sha256_hex)
        raise corrupt(received, tar.compression, exc) from exc
    received.check(sha256_hex)
    return Inspected(
        report=report,
        compression=tar.compression,
        received_bytes=received.count,
        tar_bytes=tar.count,
    )
