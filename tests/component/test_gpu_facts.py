"""A service handed discovered GPUs: assignments carry UUIDs, receipts name model and driver,
and CPU runs say None; pinning a GPU the host lacks stops `serve` with a clear message."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox.testing import FakeExecutor
from scorer.app import discover_gpus
from scorer.config import ServiceConfig
from scorer.gpus import MIB, GpuInfo
from scorer.models import Benchmark, BenchmarkLimits, Evaluation
from scorer.receipts import Signer, verify_envelope
from scorer.service import Service, SubmitRequest
from scorer.store import SqliteJobStore
from scorer.telemetry import Telemetry
from tests.component.conftest import GOOD_RUN, image_info, make_dataset

GPUS = tuple(
    GpuInfo(
        index=i,
        uuid=f"GPU-0000000{i}-aaaa-bbbb-cccc-dddddddddddd",
        name="NVIDIA H200",
        driver_version="580.159.03",
        memory_total_bytes=143771 * MIB,
    )
    for i in (0, 1)
)


@pytest.fixture
def service(tmp_path: Path) -> Iterator[tuple[Service, FakeExecutor, Signer]]:
    tmp_path.chmod(0o755)
    executor = FakeExecutor()
    executor.add_image("team/img:1", image_info(), GOOD_RUN)
    # No GPU with these indices is read here: the monitor finds no NVML or nvidia-smi on a CPU
    # host, and on a GPU host it only reads memory.
    config = ServiceConfig(state_dir=tmp_path / "state", self_test=False, gpu_driver_dir="/none")
    store = SqliteJobStore(config.db_path)
    signer = Signer.generate()
    svc = Service(
        config=config,
        store=store,
        executor=executor,
        signer=signer,
        telemetry=Telemetry(),
        gpus=GPUS,
    )
    svc.start()
    videos, labels = make_dataset(tmp_path)
    svc.catalog.add_dataset("videos", str(videos), labels)
    for name, gpus in (("gpu", 1), ("cpu", 0)):
        limits = BenchmarkLimits(time_limit_s=30, memory_bytes=2**30, cpus=1, gpus=gpus)
        svc.catalog.add_benchmark(Benchmark(name=name, dataset="videos", limits=limits))
    yield svc, executor, signer
    svc.stop()
    store.close()


def _run(svc: Service, benchmark: str) -> Evaluation:
    ev, _ = svc.submit(
        SubmitRequest(
            submission_id=f"s-{benchmark}", benchmark=benchmark, team="t", image="team/img:1"
        )
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        done = svc.get(ev.id)
        if done.receipt is not None:
            return done
        time.sleep(0.02)
    raise AssertionError(f"{ev.id} did not finish: {svc.get(ev.id)}")


def test_a_gpu_run_gets_its_uuid_and_its_receipt_names_model_and_driver(
    service: tuple[Service, FakeExecutor, Signer],
) -> None:
    svc, executor, signer = service
    done = _run(svc, "gpu")
    assert [spec.gpus.uuids for spec in executor.specs] == [(GPUS[0].uuid,)]
    predicate = verify_envelope(done.receipt or {}, signer.public_key_pem())["predicate"]
    assert predicate["runtime"]["gpu_model"] == "NVIDIA H200"
    assert predicate["runtime"]["driver_version"] == "580.159.03"
    assert predicate["runtime"]["gpus"] == 1
    assert "peak_gpu_memory_bytes" in predicate["usage"]


def test_a_cpu_run_has_no_gpu_facts(service: tuple[Service, FakeExecutor, Signer]) -> None:
    svc, executor, signer = service
    done = _run(svc, "cpu")
    assert [spec.gpus.indices for spec in executor.specs] == [()]
    predicate = verify_envelope(done.receipt or {}, signer.public_key_pem())["predicate"]
    assert predicate["runtime"]["gpu_model"] is None
    assert predicate["runtime"]["driver_version"] is None
    assert predicate["usage"]["peak_gpu_memory_bytes"] is None


def test_a_benchmark_asking_for_more_gpus_than_discovered_is_refused(
    service: tuple[Service, FakeExecutor, Signer],
) -> None:
    svc, _, _ = service
    limits = BenchmarkLimits(time_limit_s=30, memory_bytes=2**30, cpus=1, gpus=3)
    with pytest.raises(Exception, match="asks for 3 GPUs; this service has 2"):
        svc.catalog.add_benchmark(Benchmark(name="big", dataset="videos", limits=limits))


def test_serve_refuses_to_start_with_a_pinned_gpu_the_host_lacks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("scorer.app.discover", lambda _driver_dir: GPUS[:1])
    config = ServiceConfig(state_dir=tmp_path / "state", gpus=(0, 2))
    with pytest.raises(SystemExit, match="GPU index 2, which this host does not have"):
        discover_gpus(config)
    assert discover_gpus(ServiceConfig(state_dir=tmp_path / "s", gpus=None)) == GPUS[:1]
