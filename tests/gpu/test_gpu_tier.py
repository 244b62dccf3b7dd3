"""The GPU tier: the real engine and DockerExecutor in devices mode on a host with NVIDIA GPUs.

No image with PyTorch can be built offline, so the probe image holds only `bin lib lib64` links
into /usr (and an empty /sbin for the engine's init) and runs the host's own Python and PyTorch:
the test's Docker client adds read-only, non-recursive binds of the host's /usr, /etc and /opt to
each container it creates. Every other option is the production policy, untouched. Skips only
where no GPU is discovered.
"""

from __future__ import annotations

import io
import json
import os
import statistics
import subprocess
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest
from docker.types import Mount

from sandbox.docker_executor import DockerExecutor, DockerExecutorConfig
from sandbox.executor import GpuAssignment, Limits, OutputFileStatus, RunSpec
from scorer.gpus import DEFAULT_DRIVER_DIR, GpuInfo, GpuMonitor, discover, find_smi, smi_inventory
from tests.integration.sandbox_harness import assert_no_leftovers, run_to_end

pytestmark = pytest.mark.gpu

PYTHON = Path(os.environ.get("SCORER_GPU_TEST_PYTHON", "/opt/torch/.venv/bin/python3"))
DRIVER_DIR = Path(os.environ.get("SCORER_GPU_DRIVER_DIR", str(DEFAULT_DRIVER_DIR)))
PROBE = Path(__file__).resolve().parent / "torch_probe.py"
IMAGE_TAG = "scorer-test/gpu-torch-probe:latest"
LIMITS = Limits(
    time_limit_s=240.0,
    memory_bytes=16 * 1024**3,
    cpus=float(min(4, os.cpu_count() or 1)),
    pids=1024,
    tmp_bytes=256 * 1024**2,
    output_bytes=1024**2,
    shm_bytes=64 * 1024**2,
    log_bytes=16 * 1024,
)
FIGURES: dict[str, Any] = {}
LABEL = uuid.uuid4().hex  # this session's containers, and only those, are counted and removed


@pytest.fixture(scope="module")
def gpus() -> tuple[GpuInfo, ...]:
    found = discover(DRIVER_DIR)
    if not found:
        pytest.skip("no NVIDIA GPU discovered on this host (NVML and nvidia-smi found none)")
    return found


@pytest.fixture(scope="module")
def gpu(gpus: tuple[GpuInfo, ...]) -> GpuInfo:
    return gpus[-1]  # on a multi-GPU host the last, so "numbered from 0" is really tested


@pytest.fixture(scope="module", autouse=True)
def figures() -> Iterator[dict[str, Any]]:
    """Figures for the GPU-host script: written to $SCORER_GPU_FIGURES, if set, at the end."""
    yield FIGURES
    target = os.environ.get("SCORER_GPU_FIGURES")
    if target:
        Path(target).write_text(json.dumps(FIGURES, indent=2, sort_keys=True) + "\n")


class HostSystemClient:
    """The engine's client, adding read-only binds of host system folders on container create."""

    def __init__(self, client: docker.DockerClient, folders: list[str]) -> None:
        self._client = client
        self.mounts = []
        for folder in folders:
            mount = Mount(folder, folder, type="bind", read_only=True)
            mount["BindOptions"] = {"NonRecursive": True}  # /usr/local/nvidia stays out
            self.mounts.append(mount)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    @property
    def containers(self) -> HostSystemClient:
        return self

    def create(self, **options: Any) -> Any:
        options = {**options, "mounts": [*options["mounts"], *self.mounts]}
        return self._client.containers.create(**options)


def _host_folders() -> list[str]:
    """/usr, /etc, /opt and wherever the host's Python really lives."""
    folders = ["/usr", "/etc", "/opt"]
    top = "/" + PYTHON.resolve().parts[1]
    return folders if top in folders else [*folders, top]


@pytest.fixture(scope="module")
def engine(gpus: tuple[GpuInfo, ...]) -> Iterator[docker.DockerClient]:
    """The real engine; on a GPU host its absence (or a missing PyTorch) fails, never skips."""
    assert PYTHON.is_file(), f"the GPU tier runs the host's PyTorch: {PYTHON} is missing"
    try:
        client = docker.from_env(timeout=120)
        client.ping()
    except (docker.errors.DockerException, OSError) as exc:
        pytest.fail(f"a GPU host must run the GPU tier, but no Docker engine answers: {exc}")
    yield client
    client.close()


@pytest.fixture(scope="module")
def probe_image(engine: docker.DockerClient) -> Iterator[str]:
    """`docker import` of the symlinks and the probe script: nothing pulled, nothing built."""
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        for name in ("bin", "lib", "lib64"):
            link = tarfile.TarInfo(name)
            link.type, link.linkname = tarfile.SYMTYPE, f"usr/{name}"
            tar.addfile(link)
        sbin = tarfile.TarInfo("sbin")  # a real folder: the engine mounts /sbin/docker-init there
        sbin.type, sbin.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(sbin)
        script = PROBE.read_bytes()
        info = tarfile.TarInfo("probe.py")
        info.size, info.mode = len(script), 0o644
        tar.addfile(info, io.BytesIO(script))
    changes = [
        f'ENTRYPOINT ["{PYTHON}", "/probe.py"]',
        "USER 65534:65534",
        # As NVIDIA's CUDA images set it: where devices mode mounts the driver's libraries.
        f"ENV LD_LIBRARY_PATH={DRIVER_DIR}/lib64:{DRIVER_DIR}/lib",
        "ENV HOME=/tmp",
        "ENV PYTHONDONTWRITEBYTECODE=1",
    ]
    engine.api.import_image_from_data(
        data.getvalue(), repository=IMAGE_TAG.split(":")[0], tag="latest", changes=changes
    )
    yield str(engine.images.get(IMAGE_TAG).id)
    engine.images.remove(IMAGE_TAG)


@pytest.fixture(scope="module")
def sandbox(
    engine: docker.DockerClient, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[DockerExecutor, HostSystemClient]]:
    work = tmp_path_factory.mktemp("gpu-work")
    client = HostSystemClient(engine, _host_folders())
    config = DockerExecutorConfig(
        work_dir=work / "mounts",
        gpu_mode="devices",
        gpu_driver_dir=DRIVER_DIR,
        labels={"scorer.test": LABEL},
    )
    yield DockerExecutor(config, client), client
    assert_no_leftovers(engine, work / "mounts", {"scorer.test": LABEL})


def _spec(image: str, root: Path, gpus: GpuAssignment) -> RunSpec:
    videos = root / "videos"
    videos.mkdir(mode=0o755, exist_ok=True)
    sample = root / "sample_submission.csv"
    sample.write_bytes(b"filename,label\n")
    sample.chmod(0o444)
    root.chmod(0o755)
    return RunSpec(
        image_id=image,
        videos_dir=videos,
        sample_submission=sample,
        limits=LIMITS,
        env={"SCORER_SUBMISSION_PATH": "/output/submission.csv"},
        gpus=gpus,
    )


def _run(
    sandbox: tuple[DockerExecutor, HostSystemClient], spec: RunSpec, gpu: GpuInfo | None
) -> tuple[dict[str, Any], int | None]:
    executor, _client = sandbox
    with GpuMonitor([gpu.index] if gpu else [], driver_dir=DRIVER_DIR) as monitor:
        outcome = run_to_end(executor, spec)
    result = outcome.result
    logs = result.logs.decode("utf-8", "replace")
    assert not outcome.timed_out, logs
    assert (result.exit_code, result.output_status) == (0, OutputFileStatus.OK), logs
    assert result.output is not None
    return json.loads(result.output), monitor.peak_bytes


@pytest.fixture(scope="module")
def gpu_run(
    sandbox: tuple[DockerExecutor, HostSystemClient],
    probe_image: str,
    gpu: GpuInfo,
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[dict[str, Any], int | None]:
    assignment = GpuAssignment(indices=(gpu.index,), uuids=(gpu.uuid,))
    spec = _spec(probe_image, tmp_path_factory.mktemp("gpu-run"), assignment)
    return _run(sandbox, spec, gpu)


@pytest.fixture(scope="module")
def cpu_run(
    sandbox: tuple[DockerExecutor, HostSystemClient],
    probe_image: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Any]:
    spec = _spec(probe_image, tmp_path_factory.mktemp("cpu-run"), GpuAssignment())
    report, peak = _run(sandbox, spec, None)
    assert peak is None
    return report


def test_discovery_finds_the_gpu_with_its_model_and_driver(gpus: tuple[GpuInfo, ...]) -> None:
    """NVML's inventory is complete and agrees with nvidia-smi's (the fallback) where it exists."""
    for found in gpus:
        assert found.uuid.startswith("GPU-") and found.name, found
        assert found.driver_version.split(".")[0].isdigit(), found
        assert found.memory_total_bytes > 1024**3, found
    assert [g.index for g in gpus] == list(range(len(gpus)))
    if find_smi(DRIVER_DIR):
        smi = smi_inventory(DRIVER_DIR)
        strip = [(g.index, g.uuid, g.name, g.driver_version) for g in gpus]
        assert [(g.index, g.uuid, g.name, g.driver_version) for g in smi] == strip
        for a, b in zip(gpus, smi, strict=True):
            assert abs(a.memory_total_bytes - b.memory_total_bytes) < 1024**2
    FIGURES.update(
        gpu_count=len(gpus),
        gpu_model=gpus[0].name,
        driver_version=gpus[0].driver_version,
        gpu_memory_total_bytes=gpus[0].memory_total_bytes,
    )


def test_the_assigned_gpu_is_visible_as_device_0_and_runs_a_cuda_matmul(
    gpu_run: tuple[dict[str, Any], int | None], gpu: GpuInfo
) -> None:
    report, _ = gpu_run
    assert report["uid"] == 65534
    assert report["cuda_visible_devices"] == "0"
    assert report["device_names"] == [gpu.name]
    assert report["matmul_ok"] is True
    FIGURES.update(
        sandboxed_matmul_seconds=report["matmul_seconds"],
        sandboxed_matmul_tflops=report["matmul_tflops"],
        torch=report["torch"],
    )


def test_no_other_gpu_is_visible_in_the_gpu_container(
    gpu_run: tuple[dict[str, Any], int | None], gpu: GpuInfo, gpus: tuple[GpuInfo, ...]
) -> None:
    """Exactly the assigned count (on a one-GPU host: one), and only its device node."""
    report, _ = gpu_run
    assert report["device_count"] == 1
    numbered = [n for n in report["dev_nodes"] if n.removeprefix("nvidia").isdigit()]
    assert numbered == [f"nvidia{gpu.index}"], report["dev_nodes"]
    FIGURES["host_gpus_vs_visible"] = [len(gpus), report["device_count"]]


def test_the_network_is_unreachable_from_the_gpu_container(
    gpu_run: tuple[dict[str, Any], int | None],
) -> None:
    report, _ = gpu_run
    assert report["interfaces"] == ["lo"]
    assert "connected" not in report["network"].values(), report["network"]


def test_the_monitor_sees_the_gpu_run_s_peak_memory(
    gpu_run: tuple[dict[str, Any], int | None],
) -> None:
    """Two 128 MiB bf16 operands, a result and the CUDA context: well above 256 MiB."""
    report, peak = gpu_run
    assert peak is not None and peak > 256 * 1024**2, (peak, report["torch_allocated_bytes"])
    FIGURES["peak_gpu_memory_bytes"] = peak


def test_a_cpu_run_sees_no_gpu(cpu_run: dict[str, Any]) -> None:
    assert cpu_run["nvidia_visible_devices"] == "void"
    assert cpu_run["dev_nodes"] == []
    assert (cpu_run["cuda_available"], cpu_run["device_count"]) == (False, 0)
    assert cpu_run["interfaces"] == ["lo"]


def test_the_sandbox_costs_a_matmul_no_more_than_ten_percent(
    gpu_run: tuple[dict[str, Any], int | None], gpu: GpuInfo, tmp_path: Path
) -> None:
    """The same probe bare on the host, for comparison (median of three rounds each)."""
    out = tmp_path / "bare.json"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": str(gpu.index)}
    subprocess.run([str(PYTHON), str(PROBE), str(out)], env=env, check=True, timeout=300)
    bare = json.loads(out.read_text())
    sandboxed = statistics.median(gpu_run[0]["matmul_seconds"])
    FIGURES.update(
        bare_matmul_seconds=bare["matmul_seconds"], bare_matmul_tflops=bare["matmul_tflops"]
    )
    assert bare["matmul_ok"] is True
    assert sandboxed <= statistics.median(bare["matmul_seconds"]) * 1.10
