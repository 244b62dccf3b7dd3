"""The image seam: load a checked `docker save` stream into the engine, size it, remove it.

`ImageStore` is the protocol; `DockerImageStore` streams the tarball to the engine's
`/images/load` with the low-level API (never the whole file in memory) and maps every engine
failure to ExecutorError, or ImageLoadRefusedError when the engine refuses the content itself.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, Protocol

import docker
import docker.errors

from sandbox.engine_errors import engine_errors, is_conflict, is_not_found
from sandbox.executor import ExecutorError

__all__ = ["DockerImageStore", "ImageInUseError", "ImageLoadRefusedError", "ImageStore"]

_LOADED_ID = re.compile(r"Loaded image ID: (sha256:[0-9a-f]{64})")


class ImageLoadRefusedError(ExecutorError):
    """The engine refused the tarball's content (the uploader's fault, not the service's)."""


class ImageInUseError(ExecutorError):
    """The image cannot be removed now (a container still uses it)."""


class ImageStore(Protocol):
    def load(self, tar_chunks: Iterable[bytes]) -> str:
        """Load an untagged `docker save` stream; returns the image id the engine reports."""
        ...

    def size_bytes(self, image_id: str) -> int | None:
        """The image's size in the engine, or None if it is not there."""
        ...

    def remove(self, image_id: str) -> None:
        """Remove the image (absent is fine); ImageInUseError if a container holds it."""
        ...


class DockerImageStore:
    """ImageStore over the local Docker engine; connects on first use."""

    def __init__(self, client: docker.DockerClient | None = None) -> None:
        self._client = client

    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            with engine_errors("connect to the Docker engine"):
                self._client = docker.from_env(timeout=600)
        return self._client

    def load(self, tar_chunks: Iterable[bytes]) -> str:
        loaded: list[str] = []
        with engine_errors("load an image"):
            # A generator body goes out with chunked encoding, one chunk at a time.
            for message in self.client.api.load_image(data=iter(tar_chunks)):
                _collect(message, loaded)
        if len(loaded) != 1:
            raise ImageLoadRefusedError(f"the engine loaded {len(loaded)} images, not one")
        return loaded[0]

    def size_bytes(self, image_id: str) -> int | None:
        try:
            with engine_errors(f"inspect image {image_id[:19]}"):
                attrs: dict[str, Any] = self.client.api.inspect_image(image_id)
        except ExecutorError as exc:
            if is_not_found(exc.__cause__ or exc):
                return None
            raise
        return int(attrs.get("Size") or 0)

    def remove(self, image_id: str) -> None:
        try:
            with engine_errors(f"remove image {image_id[:19]}"):
                self.client.api.remove_image(image_id, force=False, noprune=False)
        except ExecutorError as exc:
            cause = exc.__cause__ or exc
            if is_not_found(cause):
                return
            if is_conflict(cause):
                raise ImageInUseError(f"image {image_id[:19]} is in use: {cause}") from cause
            raise


def _collect(message: Any, loaded: list[str]) -> None:
    if not isinstance(message, dict):
        return
    if message.get("error") or message.get("errorDetail"):
        detail = message.get("error") or message.get("errorDetail", {}).get("message", "")
        raise ImageLoadRefusedError(f"the engine refused the image: {detail}")
    found = _LOADED_ID.search(str(message.get("stream", "")))
    if found:
        loaded.append(found.group(1))
