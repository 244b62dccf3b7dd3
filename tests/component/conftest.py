"""Component tier: the real gRPC server on port 0, real SQLite in a temp dir, FakeExecutor."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from sandbox.executor import ImageInfo
from sandbox.testing import FakeExecutor, FakeRun
from scorer.client import Client
from scorer.config import ServiceConfig
from scorer.core.lifecycle import TERMINAL
from scorer.models import Evaluation
from scorer.receipts import Signer, generate_organizer_keypair
from scorer.server import build_server, set_serving
from scorer.service import Service
from scorer.store import SqliteJobStore
from scorer.telemetry import Telemetry
from scorer.v1 import scorer_pb2 as pb

# 12 videos: 6 FAKE, 6 REAL; 6 public and 6 private, both classes in both splits.
NAMES = [f"clip{i:02d}.mp4" for i in range(12)]
LABELS = {name: (i % 2, "public" if i < 6 else "private") for i, name in enumerate(NAMES)}
IMAGE_ID = "sha256:" + "ab" * 32


def image_info(image_id: str = IMAGE_ID, arch: str = "amd64") -> ImageInfo:
    return ImageInfo(id=image_id, user="", volumes=(), architecture=arch, os="linux")


def predictions_csv(probabilities: dict[str, float] | None = None) -> bytes:
    probabilities = probabilities or {n: 0.8 if LABELS[n][0] else 0.3 for n in NAMES}
    rows = "".join(f"{n},{p}\n" for n, p in probabilities.items())
    return b"filename,label\n" + rows.encode()


GOOD_RUN = FakeRun(output=predictions_csv(), duration_s=0.05)


def make_dataset(root: Path) -> tuple[Path, bytes]:
    videos = root / "videos"
    videos.mkdir()
    videos.chmod(0o755)
    for name in NAMES:
        path = videos / name
        path.write_bytes(os.urandom(256))
        path.chmod(0o644)
    labels = "filename,label,split\n" + "".join(
        f"{n},{'FAKE' if lab else 'REAL'},{split}\n" for n, (lab, split) in LABELS.items()
    )
    return videos, labels.encode()


@dataclass
class Harness:
    service: Service
    executor: FakeExecutor
    client: Client
    store: SqliteJobStore
    signer: Signer
    organizer_private: bytes
    organizer_public: bytes
    videos: Path
    labels_csv: bytes
    config: ServiceConfig
    server: grpc.Server

    def submit(
        self,
        submission_id: str,
        *,
        benchmark: str = "bench",
        image: str = "team/img:1",
        team: str = "team-a",
    ) -> pb.Evaluation:
        reply = self.client.submit(
            submission_id=submission_id, benchmark=benchmark, team=team, image=image
        )
        return reply.evaluation

    def wait(self, evaluation_id: str, timeout_s: float = 30.0) -> Evaluation:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            ev = self.store.get(evaluation_id)
            if ev is not None and ev.state in TERMINAL:
                return ev
            time.sleep(0.02)
        raise AssertionError(f"{evaluation_id} did not finish: {self.store.get(evaluation_id)}")

    def wait_state(self, evaluation_id: str, state: str, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            ev = self.store.get(evaluation_id)
            if ev is not None and ev.state.value == state:
                return
            time.sleep(0.02)
        raise AssertionError(f"{evaluation_id} never reached {state}")

    def add_benchmark(self, name: str, **limits: float) -> pb.Benchmark:
        request = pb.AddBenchmarkRequest(
            name=name,
            dataset="videos",
            limits=pb.Limits(
                time_limit_seconds=limits.get("time_limit_s", 30),
                memory_bytes=int(limits.get("memory_bytes", 2**30)),
                cpus=limits.get("cpus", 1),
                gpus=int(limits.get("gpus", 0)),
            ),
            missing_predictions=pb.IMPUTE if limits.get("impute") else pb.FAIL,
            organizer_public_key=self.organizer_public,
        )
        return self.client.call(self.client.admin.AddBenchmark, request)  # type: ignore[no-any-return]


def start_harness(
    tmp_path: Path,
    executor: FakeExecutor,
    *,
    signer: Signer | None = None,
    cpu_slots: int = 2,
    gpus: tuple[int, ...] = (0, 1),
    register: bool = True,
) -> Harness:
    config = ServiceConfig(
        state_dir=tmp_path / "state", cpu_slots=cpu_slots, gpus=gpus, self_test=False
    )
    store = SqliteJobStore(config.db_path)
    signer = signer or Signer.generate()
    service = Service(
        config=config, store=store, executor=executor, signer=signer, telemetry=Telemetry()
    )
    server, port, health = build_server(service, "127.0.0.1:0")
    server.start()
    set_serving(health, True)
    service.start()
    client = Client(f"127.0.0.1:{port}")
    private, public = generate_organizer_keypair()
    data = tmp_path / "data"
    if not data.exists():
        data.mkdir()
        data.chmod(0o755)
        videos, labels = make_dataset(data)
    else:
        videos, labels = data / "videos", b""
    harness = Harness(
        service=service,
        executor=executor,
        client=client,
        store=store,
        signer=signer,
        organizer_private=private,
        organizer_public=public,
        videos=videos,
        labels_csv=labels,
        config=config,
        server=server,
    )
    if register:
        client.call(
            client.admin.AddDataset,
            pb.AddDatasetRequest(name="videos", videos_dir=str(videos), labels_csv=labels),
        )
        harness.add_benchmark("bench")
    return harness


def stop_harness(h: Harness) -> None:
    h.client.close()
    h.server.stop(grace=None)
    h.service.stop()
    h.store.close()


@pytest.fixture
def executor() -> FakeExecutor:
    fake = FakeExecutor()
    fake.add_image("team/img:1", image_info(), GOOD_RUN)
    return fake


@pytest.fixture
def harness(tmp_path: Path, executor: FakeExecutor) -> Iterator[Harness]:
    tmp_path.chmod(0o755)
    h = start_harness(tmp_path, executor)
    yield h
    stop_harness(h)
