"""UploadImage through the real gRPC server and SQLite, with FakeImageStore behind the seam."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import grpc
import pytest

from sandbox import ExecutorError
from sandbox.image_store import ImageLoadRefusedError
from sandbox.testing import FakeExecutor, FakeRun
from sandbox.testing_images import FakeImageStore
from scorer.client import Client, ClientError
from scorer.config import ServiceConfig
from scorer.receipts import Signer
from scorer.server import build_server, set_serving
from scorer.service import Service
from scorer.store import SqliteJobStore
from scorer.telemetry import Telemetry
from scorer.v1 import scorer_pb2 as pb
from tests.component.conftest import image_info, make_dataset
from tests.image_tars import Image, file_member, tar_bytes


@dataclass
class Rig:
    service: Service
    images: FakeImageStore
    executor: FakeExecutor
    client: Client
    config: ServiceConfig
    server: grpc.Server

    def loading(self) -> bool:
        """Whether an engine load is in progress (a thread named image-load is alive)."""
        return any(t.name == "image-load" and t.is_alive() for t in threading.enumerate())

    def count(self, outcome: str) -> float:
        value = self.service.telemetry.registry.get_sample_value(
            "scorer_image_uploads_total", {"outcome": outcome}
        )
        return value or 0.0


def _start(tmp_path: Path, **config: float) -> Rig:
    tmp_path.chmod(0o755)
    cfg = replace(ServiceConfig(state_dir=tmp_path / "state", self_test=False, gpus=()), **config)
    store = SqliteJobStore(cfg.db_path)
    images, executor = FakeImageStore(), FakeExecutor()
    service = Service(
        config=cfg,
        store=store,
        executor=executor,
        signer=Signer.generate(),
        telemetry=Telemetry(),
        images=images,
    )
    server, port, health = build_server(service, "127.0.0.1:0")
    server.start()
    set_serving(health, True)
    service.start()
    return Rig(service, images, executor, Client(f"127.0.0.1:{port}"), cfg, server)


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    r = _start(tmp_path)
    yield r
    r.client.close()
    r.server.stop(grace=None)
    r.service.stop()
    r.service.store.close()


def _messages(
    data: bytes, *, declared: int | None = None, sha: str | None = None, chunk: int = 4096
) -> Iterator[pb.UploadImageRequest]:
    yield pb.UploadImageRequest(
        metadata=pb.UploadImageMetadata(
            declared_size_bytes=len(data) if declared is None else declared,
            sha256=sha or hashlib.sha256(data).hexdigest(),
            name="team/app:1",
        )
    )
    for i in range(0, len(data), chunk):
        yield pb.UploadImageRequest(chunk=data[i : i + chunk])


def _upload(rig: Rig, data: bytes, **kwargs: object) -> pb.UploadImageResponse:
    return rig.client.evaluations.UploadImage(_messages(data, **kwargs), timeout=30)  # type: ignore[arg-type,no-any-return]


def _refused(rig: Rig, data: bytes, **kwargs: object) -> tuple[grpc.StatusCode, str]:
    images_before = dict(rig.images.images)
    with pytest.raises(grpc.RpcError) as info:
        _upload(rig, data, **kwargs)
    assert rig.images.images == images_before  # a refused upload creates no image
    assert not rig.loading()  # and leaves no load open in the engine
    return info.value.code(), info.value.details()  # type: ignore[attr-defined]


def test_an_upload_answers_the_config_digest_and_a_reupload_is_not_loaded_again(rig: Rig) -> None:
    image = Image()
    first = _upload(rig, image.tarball())
    assert first.image_digest == image.digest()
    assert (first.already_present, first.report.user, list(first.report.entrypoint)) == (
        False,
        "1000",
        ["/hello"],
    )
    second = _upload(rig, image.tarball())
    assert second.image_digest == image.digest() and second.already_present
    assert rig.images.loads == 1
    assert rig.count("loaded") == 1 and rig.count("already_present") == 1
    assert rig.images.aborted == []  # the re-upload never reached the engine


def test_the_same_image_in_another_tarball_is_not_loaded_twice(rig: Rig) -> None:
    import gzip

    image = Image()
    _upload(rig, image.tarball())
    again = _upload(rig, gzip.compress(image.tarball()))
    assert again.image_digest == image.digest() and again.already_present
    assert again.compression == "gzip"
    assert rig.images.loads == 1 and len(rig.images.aborted) == 1  # streamed, then discarded


def test_a_wrong_sha256_is_invalid_argument(rig: Rig) -> None:
    code, details = _refused(rig, Image().tarball(), sha="ab" * 32)
    assert code is grpc.StatusCode.INVALID_ARGUMENT and "sha256" in details


def test_a_truncated_stream_is_invalid_argument(rig: Rig) -> None:
    data = Image().tarball()
    code, details = _refused(rig, data[:5000], declared=len(data))
    assert code is grpc.StatusCode.INVALID_ARGUMENT and "declared bytes" in details


def test_a_refused_image_is_invalid_argument_with_the_reason(rig: Rig) -> None:
    data = Image(layers=[tar_bytes([file_member("../../x", b"x")])]).tarball()
    code, details = _refused(rig, data)
    assert code is grpc.StatusCode.INVALID_ARGUMENT and "escapes its folder" in details
    assert rig.images.loads == 0 and rig.count("rejected") == 1
    assert len(rig.images.aborted) == 1  # the stream was cut before its manifest
    assert b"manifest.json" not in rig.images.aborted[0]


def test_an_oversize_upload_is_resource_exhausted(tmp_path: Path) -> None:
    rig = _start(tmp_path, upload_max_bytes=4096)
    try:
        code, details = _refused(rig, Image().tarball())
        assert code is grpc.StatusCode.RESOURCE_EXHAUSTED and "4096" in details
    finally:
        rig.client.close()
        rig.server.stop(grace=None)
        rig.service.stop()


def test_a_client_that_disconnects_halfway_leaves_nothing_in_the_engine(rig: Rig) -> None:
    data = Image(layers=[tar_bytes([file_member("big", bytes(2 * 1024**2))])]).tarball()
    half_sent, release = threading.Event(), threading.Event()

    def messages() -> Iterator[pb.UploadImageRequest]:
        for i, message in enumerate(_messages(data, chunk=65536)):
            if i == 16:
                half_sent.set()
                release.wait(10)
            yield message

    future = rig.client.evaluations.UploadImage.future(messages(), timeout=30)
    assert half_sent.wait(10)
    deadline = time.monotonic() + 10
    while not rig.loading() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert rig.loading(), "the engine should be reading the upload by now"
    future.cancel()
    release.set()
    deadline = time.monotonic() + 10
    while (rig.loading() or not rig.count("aborted")) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not rig.loading()
    assert rig.count("aborted") == 1 and rig.images.loads == 0
    assert len(rig.images.aborted) == 1 and rig.images.images == {}


def test_a_client_that_stalls_is_cancelled_after_the_idle_timeout(tmp_path: Path) -> None:
    """A stalled upload would hold a worker and an open engine load for good."""
    rig = _start(tmp_path, upload_idle_timeout_s=0.5)
    data = Image(layers=[tar_bytes([file_member("big", bytes(1024**2))])]).tarball()
    resume = threading.Event()

    def messages() -> Iterator[pb.UploadImageRequest]:
        for i, message in enumerate(_messages(data, chunk=65536)):
            if i == 4:
                resume.wait(10)  # stall mid-stream
            yield message

    try:
        with pytest.raises(grpc.RpcError) as info:
            rig.client.evaluations.UploadImage(messages(), timeout=30)
        resume.set()
        assert info.value.code() is grpc.StatusCode.CANCELLED  # type: ignore[attr-defined]
        deadline = time.monotonic() + 10
        while (rig.loading() or not rig.count("aborted")) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert rig.count("aborted") == 1 and not rig.loading()
        assert rig.images.images == {} and len(rig.images.aborted) == 1
    finally:
        resume.set()
        rig.client.close()
        rig.server.stop(grace=None)
        rig.service.stop()


def test_a_slow_engine_is_not_mistaken_for_an_idle_client(tmp_path: Path) -> None:
    """Only time spent waiting for the client counts: an engine slower than the timeout is fine."""
    rig = _start(tmp_path, upload_idle_timeout_s=0.3)
    real_load = rig.images.load

    def slow_load(chunks: Iterable[bytes]) -> str:
        def slowly() -> Iterator[bytes]:
            for chunk in chunks:
                time.sleep(0.2)
                yield chunk

        return real_load(slowly())

    rig.images.load = slow_load  # type: ignore[method-assign]
    try:
        image = Image(layers=[tar_bytes([file_member("big", os.urandom(3 * 1024**2))])])
        reply = _upload(rig, image.tarball(), chunk=65536)
        assert reply.image_digest == image.digest()
    finally:
        rig.client.close()
        rig.server.stop(grace=None)
        rig.service.stop()


@pytest.mark.parametrize(
    ("error", "code", "words"),
    [
        (ExecutorError("the engine went away"), grpc.StatusCode.FAILED_PRECONDITION, "engine"),
        (ImageLoadRefusedError("invalid diffID"), grpc.StatusCode.INVALID_ARGUMENT, "diffID"),
    ],
)
def test_an_engine_that_fails_mid_load_is_reported_and_keeps_nothing(
    rig: Rig, error: Exception, code: grpc.StatusCode, words: str
) -> None:
    def failing_load(chunks: Iterable[bytes]) -> str:
        next(iter(chunks))  # it read some, then failed
        raise error

    rig.images.load = failing_load  # type: ignore[method-assign]
    image = Image(layers=[tar_bytes([file_member("big", os.urandom(2 * 1024**2))])])
    with pytest.raises(grpc.RpcError) as info:
        _upload(rig, image.tarball(), chunk=65536)
    assert info.value.code() is code  # type: ignore[attr-defined]
    assert words in info.value.details()  # type: ignore[attr-defined]
    assert rig.images.images == {} and not rig.loading()


def _benchmark(rig: Rig, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    videos, labels = make_dataset(data)
    admin = rig.client.admin
    admin.AddDataset(pb.AddDatasetRequest(name="v", videos_dir=str(videos), labels_csv=labels))
    limits = pb.Limits(time_limit_seconds=30, memory_bytes=2**30, cpus=1)
    admin.AddBenchmark(pb.AddBenchmarkRequest(name="b", dataset="v", limits=limits))


def test_a_refused_upload_submitted_ends_image_rejected_with_its_reason(
    rig: Rig, tmp_path: Path
) -> None:
    _benchmark(rig, tmp_path)
    data = Image(architecture="arm64").tarball()
    _refused(rig, data)
    sha = hashlib.sha256(data).hexdigest()
    reply = rig.client.submit(
        submission_id="s1", benchmark="b", team="t", image=f"upload:sha256:{sha}"
    )
    ev = reply.evaluation
    assert pb.EvaluationState.Name(ev.state) == "FAILED"
    assert pb.FailureReason.Name(ev.failure_reason) == "IMAGE_REJECTED"
    assert "linux/amd64 is required" in ev.failure_message
    assert ev.receipt.fields["payload"].string_value  # attested, like any participant failure
    with pytest.raises(ClientError) as info:
        rig.client.submit(
            submission_id="s2", benchmark="b", team="t", image="upload:sha256:" + "0" * 64
        )
    assert info.value.code is grpc.StatusCode.NOT_FOUND


def test_eviction_removes_the_least_recently_used_unpinned_image(tmp_path: Path) -> None:
    a, b, c = (Image(entrypoint=[f"/{n}"]) for n in "abc")
    size = len(a.layers[0])  # what the (fake) engine counts for an image
    rig = _start(tmp_path, image_store_bytes=int(size * 2.5))
    try:
        _upload(rig, a.tarball())
        pinned = rig.client.admin.PinImage(pb.PinImageRequest(digest=a.digest(), pinned=True))
        assert pinned.pinned
        _upload(rig, b.tarball())
        _upload(rig, c.tarball())  # three images over a budget of 2.5: one must go
        assert rig.images.removed == [b.digest()]  # a is pinned, c was just uploaded
        listed = rig.client.admin.ListImages(pb.ListImagesRequest()).images
        assert {i.digest for i in listed} == {a.digest(), c.digest()}
        evicted = rig.service.telemetry.registry.get_sample_value("scorer_images_evicted_total")
        assert evicted == 1
    finally:
        rig.client.close()
        rig.server.stop(grace=None)
        rig.service.stop()


def test_an_image_a_running_evaluation_needs_is_never_evicted(tmp_path: Path) -> None:
    a, b = Image(entrypoint=["/a"]), Image(entrypoint=["/b"])
    rig = _start(tmp_path, image_store_bytes=len(a.layers[0]) + 10)
    try:
        _upload(rig, a.tarball())
        rig.executor.add_image(a.digest(), image_info(a.digest()), FakeRun(hang=True))
        _benchmark(rig, tmp_path)
        ev = rig.client.submit(submission_id="s1", benchmark="b", team="t", image=a.digest())
        _upload(rig, b.tarball())  # over budget, but a is needed by a live evaluation
        # b itself may go (it is over budget and nothing needs it); a never does.
        assert a.digest() not in rig.images.removed
        assert a.digest() in rig.images.images
        rig.client.evaluations.CancelEvaluation(pb.CancelEvaluationRequest(id=ev.evaluation.id))
    finally:
        rig.client.close()
        rig.server.stop(grace=None)
        rig.service.stop()
