"""Image intake against the real engine: `docker save` tarballs of images built here, uploaded
over gRPC to a real `scorer serve`, loaded, verified by digest, and scored end to end."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import tarfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors
import pytest
import zstandard

from sandbox.images import build_busybox_image
from scorer.client import Client
from scorer.v1 import scorer_pb2 as pb
from tests.integration.service_process import ServiceProcess
from tests.integration.test_service_e2e import PREDICT, hidden, service  # noqa: F401

pytestmark = pytest.mark.docker


@pytest.fixture
def saved_image(tmp_path: Path, docker_client: docker.DockerClient) -> Iterator[tuple[Path, str]]:
    """A fresh image saved to a file and then removed from the engine: (tarball, image id)."""
    tag = f"scorer-upload-e2e/{uuid.uuid4().hex[:8]}:1"
    image_id = build_busybox_image(tag, PREDICT + f"# {uuid.uuid4().hex}\n", client=docker_client)
    path = tmp_path / "image.tar"
    with path.open("wb") as out:
        for chunk in docker_client.images.get(tag).save(named=True):
            out.write(chunk)
    docker_client.images.remove(tag, force=True)
    with pytest.raises(docker.errors.ImageNotFound):
        docker_client.images.get(image_id)
    yield path, image_id
    with contextlib.suppress(docker.errors.ImageNotFound):
        docker_client.images.remove(image_id, force=True)


def test_submit_image_file_uploads_loads_by_digest_and_scores(
    service: ServiceProcess,  # noqa: F811
    saved_image: tuple[Path, str],
    docker_client: docker.DockerClient,
) -> None:
    """The whole remote path: upload, inspect, load, pin by digest, run, score, no tag added."""
    path, image_id = saved_image
    proc = service.cli(
        "submit",
        "--image-file",
        str(path),
        "--benchmark",
        "main",
        "--team",
        "t",
        "--wait",
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    ev = json.loads(proc.stdout)
    assert ev["state"] == "SUCCEEDED" and ev["image_digest"] == image_id
    assert docker_client.images.get(image_id).tags == []  # RepoTags never reach the engine
    again = service.cli("image", "upload", str(path), "--json", check=True)
    assert json.loads(again.stdout)["already_present"] is True
    assert _engine_leftovers(docker_client) == []


def _engine_leftovers(client: docker.DockerClient) -> list[str]:
    """The engine's own scratch folders for loads in progress (docker-import-*), after a pause."""
    folder = Path(client.info()["DockerRootDir"]) / "tmp"
    deadline = time.monotonic() + 10
    while True:
        left = sorted(p.name for p in folder.glob("docker-import-*")) if folder.exists() else []
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


def test_a_zstd_tarball_is_decompressed_by_the_service(
    service: ServiceProcess,  # noqa: F811
    saved_image: tuple[Path, str],
    tmp_path: Path,
) -> None:
    path, image_id = saved_image
    packed = tmp_path / "image.tar.zst"
    packed.write_bytes(zstandard.ZstdCompressor().compress(path.read_bytes()))
    proc = service.cli("image", "upload", str(packed), "--json", check=True)
    reply = json.loads(proc.stdout)
    assert (reply["image_digest"], reply["compression"]) == (image_id, "zstd")


def _as_arm64(path: Path, out: Path) -> None:
    """Re-tar a saved image with its config's architecture changed (and the digest recomputed)."""
    with tarfile.open(path) as src:
        manifest = json.loads(src.extractfile("manifest.json").read())  # type: ignore[union-attr]
        config = json.loads(src.extractfile(manifest[0]["Config"]).read())  # type: ignore[union-attr]
        config["architecture"] = "arm64"
        blob = json.dumps(config).encode()
        name = f"{hashlib.sha256(blob).hexdigest()}.json"
        manifest[0]["Config"] = name
        with tarfile.open(out, "w") as dst:
            for member in src.getmembers():
                if member.name.endswith(".json") and "/" not in member.name:
                    continue
                dst.addfile(member, src.extractfile(member) if member.isfile() else None)
            for member_name, data in (
                (name, blob),
                ("manifest.json", json.dumps(manifest).encode()),
            ):
                info = tarfile.TarInfo(member_name)
                info.size = len(data)
                dst.addfile(info, io.BytesIO(data))


def test_a_foreign_architecture_upload_ends_image_rejected(
    service: ServiceProcess,  # noqa: F811
    saved_image: tuple[Path, str],
    tmp_path: Path,
    docker_client: docker.DockerClient,
) -> None:
    path, _ = saved_image
    arm = tmp_path / "arm64.tar"
    _as_arm64(path, arm)
    refused = service.cli("image", "upload", str(arm))
    assert refused.returncode == 1 and "linux/amd64 is required" in refused.stderr
    proc = service.cli(
        "submit", "--image-file", str(arm), "--benchmark", "main", "--team", "t", "--wait", "--json"
    )
    assert proc.returncode == 1, proc.stderr
    ev = json.loads(proc.stdout)
    assert (ev["state"], ev["failure_reason"]) == ("FAILED", "IMAGE_REJECTED")
    assert "linux/amd64" in ev["failure_message"]
    log = service.log_path.read_text()
    assert "image_rejected" in log and hashlib.sha256(arm.read_bytes()).hexdigest() in log
    # The engine read the layers while they arrived, but created nothing and kept nothing.
    arm_id = json.loads(_manifest(arm))[0]["Config"].removesuffix(".json")
    with pytest.raises(docker.errors.ImageNotFound):
        docker_client.images.get(f"sha256:{arm_id}")
    assert _engine_leftovers(docker_client) == []


def _manifest(path: Path) -> bytes:
    with tarfile.open(path) as tar:
        return tar.extractfile("manifest.json").read()  # type: ignore[union-attr]


def test_a_client_that_disconnects_halfway_leaves_nothing_in_the_engine(
    service: ServiceProcess,  # noqa: F811
    saved_image: tuple[Path, str],
    docker_client: docker.DockerClient,
) -> None:
    """The engine was reading the upload as it came; cut off, it keeps nothing."""
    path, image_id = saved_image
    data = path.read_bytes()
    half_sent, release = threading.Event(), threading.Event()

    def messages() -> Iterator[pb.UploadImageRequest]:
        yield pb.UploadImageRequest(
            metadata=pb.UploadImageMetadata(
                declared_size_bytes=len(data), sha256=hashlib.sha256(data).hexdigest(), name="x"
            )
        )
        for i in range(0, len(data) // 2, 65536):
            yield pb.UploadImageRequest(chunk=data[i : min(i + 65536, len(data) // 2)])
        half_sent.set()
        release.wait(30)  # hold the stream open, as a client would that went away

    with Client(service.address) as client:
        future = client.evaluations.UploadImage.future(messages(), timeout=60)
        assert half_sent.wait(30)
        time.sleep(0.5)  # let the service hand what it has to the engine
        future.cancel()
        release.set()
    deadline = time.monotonic() + 10
    while "image_upload_aborted" not in service.log_path.read_text():
        assert time.monotonic() < deadline, "the service never saw the client go"
        time.sleep(0.1)
    with pytest.raises(docker.errors.ImageNotFound):
        docker_client.images.get(image_id)
    assert _engine_leftovers(docker_client) == []
