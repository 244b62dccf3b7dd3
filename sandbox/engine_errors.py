"""The one place where the Docker SDK's exceptions become the seam's (httpx's map_exceptions)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import docker.errors
import urllib3.exceptions

from sandbox.executor import ExecutorError, ImageNotFoundError

# requests' exceptions (timeouts, refused connections) all derive from OSError.
ENGINE_ERRORS = (docker.errors.DockerException, urllib3.exceptions.HTTPError, OSError)


def is_not_found(exc: BaseException) -> bool:
    return isinstance(exc, docker.errors.NotFound)


def is_conflict(exc: BaseException) -> bool:
    """409: e.g. killing a container that is no longer running."""
    return isinstance(exc, docker.errors.APIError) and exc.status_code == 409


@contextmanager
def engine_errors(action: str) -> Iterator[None]:
    """Re-raise any engine or transport failure inside the block as ExecutorError."""
    try:
        yield
    except ExecutorError:
        raise
    except docker.errors.ImageNotFound as exc:
        raise ImageNotFoundError(f"{action}: the image is not in the engine ({exc})") from exc
    except ENGINE_ERRORS as exc:
        raise ExecutorError(f"{action}: {type(exc).__name__}: {exc}") from exc
