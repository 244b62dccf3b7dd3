"""The bytes handed to the engine: the spooled tar with manifest.json's RepoTags removed.

An uploaded tarball must never name tags in the service's engine: `RepoTags: ["scorer-selftest:…"]`
would re-point the service's own images. The manifest member is swapped for a tag-less copy while
the file streams, so the engine still reads the spool exactly once.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterator
from pathlib import Path

from scorer.images.inspect import ManifestSpan

_CHUNK_BYTES = 1024 * 1024


def _untagged_member(span: ManifestSpan) -> bytes:
    entry = {**span.entry, "RepoTags": None}
    data = json.dumps([entry]).encode()
    info = tarfile.TarInfo("manifest.json")
    info.size = len(data)
    info.mode = 0o644
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        tar.addfile(info, io.BytesIO(data))
    # The member alone: header and padded data, without the two end-of-archive blocks.
    return out.getvalue()[: 512 + -(-len(data) // 512) * 512]


def untagged_stream(path: Path, span: ManifestSpan) -> Iterator[bytes]:
    """The tar at `path`, chunk by chunk, with [span.start, span.end) replaced."""
    with path.open("rb") as src:
        yield from _range(src, span.start)
        yield _untagged_member(span)
        src.seek(span.end)
        while chunk := src.read(_CHUNK_BYTES):
            yield chunk


def _range(src: io.BufferedReader, length: int) -> Iterator[bytes]:
    left = length
    while left > 0:
        chunk = src.read(min(_CHUNK_BYTES, left))
        if not chunk:
            return
        left -= len(chunk)
        yield chunk
