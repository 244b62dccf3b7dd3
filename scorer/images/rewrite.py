"""The tail the service appends to the stream it hands the engine: a tag-less manifest.json.

An uploaded tarball must never name tags in the service's engine: `RepoTags: ["scorer-selftest:…"]`
would re-point the service's own images. The inspector withholds the uploaded manifest.json (and
repositories, index.json); once the image passed, this member and the end-of-archive follow.
"""

from __future__ import annotations

import io
import json
import tarfile
from typing import Any


def untagged_tail(entry: dict[str, Any]) -> bytes:
    """manifest.json with RepoTags removed, as a tar member, then the end-of-archive blocks."""
    data = json.dumps([{**entry, "RepoTags": None}]).encode()
    info = tarfile.TarInfo("manifest.json")
    info.size = len(data)
    info.mode = 0o644
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        tar.addfile(info, io.BytesIO(data))
    # The member (header and padded data), then two zero blocks: what the engine must read last.
    member = out.getvalue()[: tarfile.BLOCKSIZE + -(-len(data) // tarfile.BLOCKSIZE) * 512]
    return member + bytes(2 * tarfile.BLOCKSIZE)
