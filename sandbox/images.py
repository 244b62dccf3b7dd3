"""Offline image building: tiny `FROM scratch` images around a static busybox, no registry.

Used for the service's self-test image and the test-suite's image table.
"""

from __future__ import annotations

import io
import shutil
import tarfile
from collections.abc import Mapping
from pathlib import Path

import docker
import docker.errors
import requests

from sandbox.executor import ExecutorError

BUSYBOX_CANDIDATES = ("/usr/bin/busybox", "/bin/busybox")


def find_busybox() -> Path:
    for candidate in BUSYBOX_CANDIDATES:
        path = Path(candidate)
        if path.is_file():
            return path
    found = shutil.which("busybox")
    if found:
        return Path(found)
    raise ExecutorError("busybox-static is not installed (apt-get install busybox-static)")


def _add(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o755) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    tar.addfile(info, io.BytesIO(data))


def build_busybox_image(
    tag: str,
    script: str,
    *,
    user: str | None = "65534:65534",
    dockerfile_extra: str = "",
    files: Mapping[str, bytes] | None = None,
    labels: Mapping[str, str] | None = None,
    client: docker.DockerClient | None = None,
) -> str:
    """Build `tag` whose entrypoint is `/bin/sh /entry.sh` running `script`; returns the image id.

    `files` are extra context files (path -> bytes), COPYed to `/`; `dockerfile_extra` adds lines
    (e.g. `VOLUME /data2`) before the entrypoint.
    """
    busybox = find_busybox().read_bytes()
    lines = [
        "FROM scratch",
        "COPY busybox /bin/busybox",
        'RUN ["/bin/busybox", "--install", "-s", "/bin"]',
        "COPY entry.sh /entry.sh",
    ]
    lines += [f"COPY {name} /{name}" for name in (files or {})]
    if dockerfile_extra:
        lines.append(dockerfile_extra)
    if user is not None:
        lines.append(f"USER {user}")
    lines.append('ENTRYPOINT ["/bin/sh", "/entry.sh"]')
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        _add(tar, "Dockerfile", "\n".join(lines).encode() + b"\n", 0o644)
        _add(tar, "busybox", busybox)
        _add(tar, "entry.sh", script.encode(), 0o755)
        for name, data in (files or {}).items():
            _add(tar, name, data)
    context.seek(0)
    try:
        engine = client or docker.from_env()
        image, _logs = engine.images.build(
            fileobj=context,
            custom_context=True,
            tag=tag,
            rm=True,
            forcerm=True,
            pull=False,
            network_mode="none",  # a build step needs no network, and gets none
            labels=dict(labels or {}),
        )
    except (docker.errors.DockerException, requests.RequestException) as exc:
        raise ExecutorError(f"cannot build image {tag}: {exc}") from exc
    return str(image.id)
