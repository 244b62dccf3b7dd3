"""The real-engine harness: the adversarial image table and a service-like run loop.

Images are FROM scratch + static busybox + one script from tests/images/, built on first use (no
registry, nothing pulled), tagged `scorer-test/<case>:latest`, removed at the session's end.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import docker
import docker.errors
import pytest

from sandbox.docker_executor import DockerExecutor, DockerExecutorConfig
from sandbox.executor import Limits, RunResult, RunSpec
from sandbox.host_output import mounts_under
from sandbox.images import build_busybox_image

SCRIPTS = Path(__file__).resolve().parent.parent / "images"
IMAGE_LABEL = "scorer.test-image"
SAMPLE = b"filename,label\na.mp4,0.5\nb.mp4,0.5\n"
VIDEOS = {"a.mp4": b"not really a video: a", "b.mp4": b"not really a video: b"}
TEST_LIMITS = Limits(
    time_limit_s=20.0,
    memory_bytes=64 * 1024**2,
    cpus=1.0,
    pids=64,
    tmp_bytes=16 * 1024**2,
    output_bytes=1024**2,
    shm_bytes=1024**2,
    log_bytes=4096,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class ImageCase:
    script: str  # file name under tests/images/
    user: str | None = "65534:65534"  # the image's USER; None: no USER line (root)
    extra: str = ""  # Dockerfile lines, e.g. VOLUME


IMAGE_CASES: dict[str, ImageCase] = {
    name: ImageCase(script=f"{name}.sh")
    for name in (
        "correct",
        "sleep_forever",
        "busy_loop",
        "memory_hog",
        "memory_hog_child",
        "fork_bomb",
        "no_output",
        "malformed",
        "symlink_passwd",
        "symlink_data",
        "hardlink",
        "fifo",
        "directory",
        "network_probe",
        "write_inputs",
        "exit3",
        "too_large",
        "sparse",
        "probe_env",
        "chatty",
    )
} | {
    "volume": ImageCase(script="volume.sh", extra="VOLUME /data2"),
    "user_none": ImageCase(script="whoami.sh", user=None),
    "user_zero": ImageCase(script="whoami.sh", user="0"),
    "user_root_name": ImageCase(script="whoami.sh", user="root"),
    "user_zero_gid": ImageCase(script="whoami.sh", user="0:0"),
    "user_1234": ImageCase(script="whoami.sh", user="1234"),
    "user_1234_gid": ImageCase(script="whoami.sh", user="1234:2345"),
}


def unavailable(reason: str) -> NoReturn:
    """In CI a missing engine (or runtime) is a failure, never a skip; elsewhere, a clear skip."""
    if os.environ.get("CI"):
        pytest.fail(f"the Docker tier must run in CI: {reason}", pytrace=False)
    pytest.skip(f"not available here: {reason}")


def pids_cgroup(root: str, token: str) -> Path:
    """The run's parent cgroup in the pids hierarchy: cgroup v1 (this host) or v2 (GPU hosts)."""
    for base in (Path("/sys/fs/cgroup/pids"), Path("/sys/fs/cgroup")):
        if (base / root / token / "pids.current").exists():
            return base / root / token
    raise AssertionError(f"no pids cgroup for run {token}")


GPU_LIBS = (  # what nvidia-smi needs from glibc, loaded by an explicitly invoked ld.so
    "/lib64/ld-linux-x86-64.so.2",
    "/lib/x86_64-linux-gnu/libc.so.6",
    "/lib/x86_64-linux-gnu/libm.so.6",
    "/lib/x86_64-linux-gnu/libdl.so.2",
    "/lib/x86_64-linux-gnu/libpthread.so.0",
    "/lib/x86_64-linux-gnu/librt.so.1",
)
GPU_SCRIPT = """
/ld-linux-x86-64.so.2 --library-path /:/usr/local/nvidia/lib64:/usr/local/nvidia/lib \\
  /usr/local/nvidia/bin/nvidia-smi -L > /output/submission.csv 2>&1
echo "cuda=${CUDA_VISIBLE_DEVICES:-unset}" >> /output/submission.csv
ls /dev | grep nvidia | sort | tr '\\n' ' ' >> /output/submission.csv
"""


class ImageFactory:
    """Builds each case once per session; `remove_all` deletes only what it built."""

    def __init__(self, client: docker.DockerClient) -> None:
        self._client = client
        self._built: dict[str, str] = {}

    def tag(self, case: str) -> str:
        return f"scorer-test/{case.replace('_', '-')}:latest"

    def get(self, case: str) -> str:
        if case not in self._built:
            spec = IMAGE_CASES[case]
            self._built[case] = build_busybox_image(
                self.tag(case),
                (SCRIPTS / spec.script).read_text(),
                user=spec.user,
                dockerfile_extra=spec.extra,
                labels={IMAGE_LABEL: "1"},
                client=self._client,
            )
        return self._built[case]

    def get_gpu_probe(self) -> str:
        """An image that runs the host driver's nvidia-smi against the host's own glibc."""
        if "gpu_probe" not in self._built:
            files = {Path(lib).name: Path(lib).resolve().read_bytes() for lib in GPU_LIBS}
            self._built["gpu_probe"] = build_busybox_image(
                self.tag("gpu_probe"),
                GPU_SCRIPT,
                files=files,
                labels={IMAGE_LABEL: "1"},
                client=self._client,
            )
        return self._built["gpu_probe"]

    def remove_all(self) -> None:
        for case in self._built:
            with contextlib.suppress(docker.errors.NotFound):
                self._client.images.remove(self.tag(case), noprune=False)
        self._built.clear()


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    result: RunResult
    timed_out: bool
    kill_latency_s: float | None  # from the deadline to the exit being observed
    collect_s: float
    handle: str


def run_to_end(executor: DockerExecutor, spec: RunSpec) -> Outcome:
    """What the service does: submit, observe against its own monotonic deadline, kill, collect."""
    handle = executor.submit(spec)
    deadline = time.monotonic() + spec.limits.time_limit_s
    timed_out = False
    while not timed_out:
        left = deadline - time.monotonic()
        if left <= 0:
            timed_out = True
        elif executor.observe(handle, left).exited:
            break
    latency = None
    if timed_out:
        executor.cancel(handle)
        for _ in range(10):
            if executor.observe(handle, 5.0).exited:
                break
        latency = time.monotonic() - deadline
    begun = time.monotonic()
    result = executor.collect(handle)
    return Outcome(
        result=result,
        timed_out=timed_out,
        kill_latency_s=latency,
        collect_s=time.monotonic() - begun,
        handle=handle,
    )


def assert_no_leftovers(
    client: docker.DockerClient, work_dir: Path, labels: dict[str, str]
) -> None:
    """After a test: no container with its labels, no mount and no run folder in work_dir."""
    filters = {"label": [f"{k}={v}" for k, v in labels.items()]}
    containers = client.containers.list(all=True, filters=filters)
    mounts = mounts_under(work_dir)
    folders = sorted(p.name for p in work_dir.iterdir()) if work_dir.is_dir() else []
    cleaner = DockerExecutor(DockerExecutorConfig(work_dir=work_dir), client)
    cleaner.reap(labels)  # clean up first, so a failure here leaves nothing behind either
    assert (containers, mounts, folders) == ([], [], [])
