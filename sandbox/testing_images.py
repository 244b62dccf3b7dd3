"""FakeImageStore: an in-memory ImageStore that reads the stream it is given, for component tests.

It reads the stream as it comes, like the engine, and keeps nothing of a stream that fails (an
aborted upload). It computes the image id the way the engine does (sha256 of the config named
by manifest.json), so the service's "loaded id equals config digest" check runs for real.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Iterable

from sandbox.image_store import ImageInUseError, ImageLoadRefusedError


class FakeImageStore:
    def __init__(self) -> None:
        self.images: dict[str, int] = {}  # id -> size in bytes
        self.loads = 0  # images created
        self.aborted: list[bytes] = []  # what each failed stream carried before it failed
        self.in_use: set[str] = set()
        self.removed: list[str] = []

    def load(self, tar_chunks: Iterable[bytes]) -> str:
        received = bytearray()
        try:
            for chunk in tar_chunks:
                received += chunk
        except BaseException:
            self.aborted.append(bytes(received))
            raise
        data = bytes(received)
        try:
            with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
                manifest = json.loads(_read(tar, "manifest.json"))
                config = _read(tar, manifest[0]["Config"])
                size = sum(tar.getmember(layer).size for layer in manifest[0]["Layers"])
        except (tarfile.TarError, KeyError, ValueError) as exc:
            raise ImageLoadRefusedError(f"the fake engine refused the image: {exc}") from exc
        if manifest[0].get("RepoTags"):
            raise AssertionError("an uploaded image must reach the engine without tags")
        image_id = f"sha256:{hashlib.sha256(config).hexdigest()}"
        self.loads += 1
        self.images[image_id] = size  # like the engine: what the layers hold
        return image_id

    def size_bytes(self, image_id: str) -> int | None:
        return self.images.get(image_id)

    def remove(self, image_id: str) -> None:
        if image_id in self.in_use:
            raise ImageInUseError(f"{image_id} is in use")
        if self.images.pop(image_id, None) is not None:
            self.removed.append(image_id)


def _read(tar: tarfile.TarFile, name: str) -> bytes:
    handle = tar.extractfile(name)
    if handle is None:
        raise KeyError(name)
    return handle.read()
