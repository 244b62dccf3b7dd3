"""The real sandbox against a table of adversarial images, each with its expected facts.

Every test's executor fixture proves afterwards that no container and no mount was left behind.
"""

from __future__ import annotations

import statistics
import subprocess
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import docker
import pytest

from sandbox.docker_executor import DockerExecutor, DockerExecutorConfig
from sandbox.executor import (
    ExecutorError,
    GpuAssignment,
    ImageNotFoundError,
    OutputFileStatus,
    RunSpec,
)
from sandbox.host_output import mount_tmpfs, mounts_under
from sandbox.policy import RUN_LABEL
from tests.integration.sandbox_harness import (
    SAMPLE,
    VIDEOS,
    ImageFactory,
    Outcome,
    assert_no_leftovers,
    pids_cgroup,
    run_to_end,
    unavailable,
)

pytestmark = pytest.mark.docker

MakeSpec = Callable[..., RunSpec]
OK, MISSING = OutputFileStatus.OK, OutputFileStatus.MISSING
NOT_REGULAR, TOO_LARGE = OutputFileStatus.NOT_REGULAR, OutputFileStatus.TOO_LARGE
CORRECT = b"filename,label\na.mp4,0.7\nb.mp4,0.7\n"
MALFORMED = b'filename,label\na.mp4,nan\na.mp4,0.5\nb.mp4,1.5\nc.mp4,-inf\n\xff\xfe,"x\n'
MiB = 1024**2


@dataclass(frozen=True, slots=True, kw_only=True)
class Row:
    case: str
    expect: Mapping[str, Any]  # RunResult attribute -> expected value
    timed_out: bool = False
    limits: Mapping[str, float] = field(default_factory=dict)


def _plain(exit_code: int, status: OutputFileStatus, output: bytes | None = None) -> dict[str, Any]:
    return {"exit_code": exit_code, "output_status": status, "output": output, "killed": False}


def _whoami(ids: bytes) -> dict[str, Any]:
    return _plain(0, OK, ids)


PROBE_ENV = (
    b"hostname=sandbox\nnvidia=void\ncustom=42\n"
    b"CapEff=0000000000000000\nCapBnd=0000000000000000\nNoNewPrivs=1\n"
    b"core=0\nnofile=8192\ndocker_sock=no\ntmp_exec=yes\ntmp_capped=yes\nshm_capped=yes\n"
)
KILLED = {"exit_code": 137, "output_status": MISSING, "killed": True, "oom_killed": False}

TABLE = [
    Row(case="correct", expect=_plain(0, OK, CORRECT) | {"oom_killed": False}),
    Row(case="sleep_forever", expect=KILLED, timed_out=True, limits={"time_limit_s": 1.0}),
    Row(case="busy_loop", expect=KILLED, timed_out=True, limits={"time_limit_s": 1.0}),
    Row(
        case="memory_hog",
        expect=_plain(137, MISSING) | {"oom_killed": True},
        limits={"memory_bytes": 32 * MiB},
    ),
    # init=True: only the child is killed, and the engine must still report the OOM.
    Row(
        case="memory_hog_child",
        expect=_plain(0, OK, SAMPLE) | {"oom_killed": True},
        limits={"memory_bytes": 32 * MiB},
    ),
    Row(case="no_output", expect=_plain(0, MISSING)),
    Row(case="malformed", expect=_plain(0, OK, MALFORMED)),
    Row(case="symlink_passwd", expect=_plain(0, NOT_REGULAR)),
    Row(case="symlink_data", expect=_plain(0, NOT_REGULAR)),
    Row(case="hardlink", expect=_plain(0, NOT_REGULAR)),
    Row(case="fifo", expect=_plain(0, NOT_REGULAR)),
    Row(case="directory", expect=_plain(0, NOT_REGULAR)),
    Row(case="exit3", expect=_plain(3, MISSING)),
    Row(case="too_large", expect=_plain(0, OK, bytes(MiB)) | {"output_full": True}),
    Row(case="sparse", expect=_plain(0, TOO_LARGE) | {"output_full": False}),
    Row(
        case="network_probe",
        expect=_plain(0, OK, b"interfaces=lo \nlinks=1\nroutes=0\nreachable=\n"),
    ),
    Row(case="write_inputs", expect=_plain(0, OK, b"leaks=\ntmp=yes\n")),
    Row(case="volume", expect=_plain(0, OK, b"/data2 tmpfs\n")),
    Row(case="user_none", expect=_whoami(b"65534:65534\n")),
    Row(case="user_zero", expect=_whoami(b"65534:65534\n")),
    Row(case="user_root_name", expect=_whoami(b"65534:65534\n")),
    Row(case="user_zero_gid", expect=_whoami(b"65534:65534\n")),
    Row(case="user_1234", expect=_whoami(b"1234:65534\n")),
    Row(case="user_1234_gid", expect=_whoami(b"1234:2345\n")),
    Row(case="probe_env", expect=_plain(0, OK, PROBE_ENV)),
]


@pytest.mark.parametrize("row", TABLE, ids=[row.case for row in TABLE])
def test_adversarial_image_yields_its_expected_facts(
    row: Row, executor: DockerExecutor, make_spec: MakeSpec
) -> None:
    """Each image of the table ends with exactly the facts its row expects, and fast."""
    outcome = run_to_end(executor, make_spec(row.case, **row.limits))
    result = outcome.result
    assert {name: getattr(result, name) for name in row.expect} == dict(row.expect), result.logs
    assert outcome.timed_out is row.timed_out
    assert outcome.collect_s < 5.0  # a FIFO or a huge file cannot stall the host
    assert result.runtime == "runc"
    assert len(result.logs) <= 4096


def test_kill_lands_within_a_second_of_the_deadline(
    executor: DockerExecutor, make_spec: MakeSpec
) -> None:
    """A run that never ends is observed dead less than 1 s after its deadline, every time."""
    latencies = []
    for _ in range(5):
        outcome = run_to_end(executor, make_spec("sleep_forever", time_limit_s=0.5))
        assert outcome.timed_out and outcome.result.killed
        assert outcome.kill_latency_s is not None
        latencies.append(outcome.kill_latency_s)
    print(
        f"kill latency after deadline: median {statistics.median(latencies):.3f} s, "
        f"max {max(latencies):.3f} s"
    )
    assert max(latencies) < 1.0


def test_usage_is_read_after_the_container_is_gone(
    executor: DockerExecutor, make_spec: MakeSpec
) -> None:
    """Peak memory and CPU time survive the container: a hog's peak reaches its limit."""
    hog = run_to_end(executor, make_spec("memory_hog", memory_bytes=32 * MiB)).result
    assert hog.peak_memory_bytes is not None and hog.peak_memory_bytes >= 30 * MiB
    assert hog.cpu_time_s is not None and hog.cpu_time_s > 0
    busy = run_to_end(executor, make_spec("busy_loop", time_limit_s=2.0, cpus=0.5)).result
    assert busy.cpu_time_s is not None
    assert 0.5 < busy.cpu_time_s < 0.5 * busy.wall_time_s + 0.3  # held to half a CPU


def test_fork_bomb_is_held_by_the_pids_limit(
    executor: DockerExecutor, make_spec: MakeSpec, docker_client: docker.DockerClient
) -> None:
    """Forks are refused at pids_limit (never exceeded), the host can fork, the run is killed."""
    handle = executor.submit(make_spec("fork_bomb", pids=32))
    try:
        parent = pids_cgroup(
            "scorer-sandbox", docker_client.containers.get(handle).labels[RUN_LABEL]
        )
        counts = []
        for _ in range(15):
            time.sleep(0.1)
            counts.append(int((parent / "pids.current").read_text()))
        refused = (parent / handle / "pids.events").read_text().split()
        assert subprocess.run(["true"], check=False).returncode == 0
        assert not executor.observe(handle, 0.2).exited
    finally:
        executor.cancel(handle)
    result = executor.collect(handle)
    assert result.killed and result.exit_code == 137
    assert max(counts) <= 32, counts
    assert refused[0] == "max" and int(refused[1]) > 0  # forks were refused at the limit


def test_logs_come_back_as_a_bounded_tail(executor: DockerExecutor, make_spec: MakeSpec) -> None:
    """600 kB of output yields exactly log_bytes of the container's own lines, never more.

    Docker 20.10 may report a chatty container as exited before its log copier wrote the last
    lines (the executor re-reads a large log until it settles, best effort), so under load the
    tail can end a little early: the bound and the content are what is asserted.
    """
    result = run_to_end(executor, make_spec("chatty", log_bytes=1000)).result
    assert len(result.logs) == 1000
    lines = result.logs.split(b"\n")[1:-1]  # the first may be cut; the last is after a newline
    allowed = {b"a line of noise on stderr", b"a line of noise on stdout", b"THE END"}
    assert lines and set(lines) <= allowed


def test_writes_to_inputs_leave_the_host_files_unchanged(
    executor: DockerExecutor, make_spec: MakeSpec
) -> None:
    """Every write to the hidden inputs, the image or /etc fails; the host files are intact."""
    spec = make_spec("write_inputs")
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in spec.videos_dir.iterdir()}
    result = run_to_end(executor, spec).result
    assert result.output == b"leaks=\ntmp=yes\n"
    after = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in spec.videos_dir.iterdir()}
    assert after == before and set(after) == set(VIDEOS)
    assert spec.sample_submission.read_bytes() == SAMPLE


def test_declared_volume_creates_no_anonymous_volume(
    executor: DockerExecutor, make_spec: MakeSpec, docker_client: docker.DockerClient
) -> None:
    """VOLUME /data2 becomes a writable tmpfs; the engine's volume list is unchanged."""
    spec = make_spec("volume")
    before = {v.name for v in docker_client.volumes.list()}
    handle = executor.submit(spec)
    attached = docker_client.api.inspect_container(handle)["Mounts"]
    during = {v.name for v in docker_client.volumes.list()}
    assert executor.observe(handle, 20).exited
    result = executor.collect(handle)
    assert result.output == b"/data2 tmpfs\n"
    assert [m for m in attached if m["Type"] == "volume"] == []
    assert during - before == set()


def test_absent_image_is_never_pulled(executor: DockerExecutor, make_spec: MakeSpec) -> None:
    """A reference or id the engine lacks is ImageNotFoundError, with no pull attempted."""
    with pytest.raises(ImageNotFoundError):
        executor.resolve_image(f"scorer-test/absent-{uuid.uuid4().hex}:latest")
    with pytest.raises(ImageNotFoundError):
        executor.resolve_image("")
    spec = make_spec("correct")
    missing = RunSpec(
        image_id="sha256:" + "0" * 64,
        videos_dir=spec.videos_dir,
        sample_submission=spec.sample_submission,
        limits=spec.limits,
        labels=spec.labels,
    )
    with pytest.raises(ImageNotFoundError):
        executor.submit(missing)


def test_resolve_image_pins_the_id_and_reads_the_config(
    executor: DockerExecutor, images: ImageFactory
) -> None:
    """A tag resolves to the image's id, with its USER, VOLUMEs, architecture and OS."""
    image_id = images.get("volume")
    info = executor.resolve_image(images.tag("volume"))
    assert (info.id, info.user, info.volumes) == (image_id, "65534:65534", ("/data2",))
    assert (info.os, info.architecture) == ("linux", "amd64")
    assert executor.resolve_image(image_id) == info


def test_failed_submit_leaves_nothing_behind(executor: DockerExecutor, make_spec: MakeSpec) -> None:
    """A run that cannot start raises ExecutorError; no container, mount or folder remains."""
    spec = make_spec("correct")
    broken = RunSpec(
        image_id=spec.image_id,
        videos_dir=spec.videos_dir / "absent",
        sample_submission=spec.sample_submission,
        limits=spec.limits,
        labels=spec.labels,
    )
    with pytest.raises(ExecutorError):
        executor.submit(broken)


def test_observe_returns_at_its_timeout_while_the_run_goes_on(
    executor: DockerExecutor, make_spec: MakeSpec
) -> None:
    """observe(0.3) on a live run returns not-exited after about 0.3 s; cancel is idempotent."""
    handle = executor.submit(make_spec("sleep_forever"))
    begun = time.monotonic()
    assert not executor.observe(handle, 0.3).exited
    assert 0.25 < time.monotonic() - begun < 1.5
    assert not executor.observe(handle, 0).exited
    executor.cancel(handle)
    executor.cancel(handle)
    assert executor.observe(handle, 5).exited
    result = executor.collect(handle)
    assert result.killed and result.exit_code == 137
    executor.cancel(handle)  # after removal: still fine


def test_collecting_a_live_run_kills_it(executor: DockerExecutor, make_spec: MakeSpec) -> None:
    """collect() before exit kills the run and still cleans everything up."""
    handle = executor.submit(make_spec("sleep_forever"))
    result = executor.collect(handle)
    assert (result.killed, result.exit_code, result.output_status) == (True, 137, MISSING)


def test_another_process_can_collect_a_run(
    executor: DockerExecutor,
    make_spec: MakeSpec,
    docker_client: docker.DockerClient,
    work_dir: Path,
) -> None:
    """A fresh executor (as after a restart) observes and collects a run it did not start."""
    handle = executor.submit(make_spec("correct"))
    successor = DockerExecutor(DockerExecutorConfig(work_dir=work_dir), docker_client)
    assert successor.observe(handle, 20).exited
    result = successor.collect(handle)
    assert (result.exit_code, result.output) == (0, CORRECT)
    assert result.peak_memory_bytes is not None and result.cpu_time_s is not None


def test_reap_removes_leftovers_but_keeps_what_it_is_told(
    executor: DockerExecutor,
    make_spec: MakeSpec,
    docker_client: docker.DockerClient,
    work_dir: Path,
    run_labels: dict[str, str],
) -> None:
    """reap removes labelled containers (not the kept one) and orphaned output mounts."""
    kept = executor.submit(make_spec("sleep_forever"))
    lost = executor.submit(make_spec("sleep_forever"))
    orphan = work_dir / ("f" * 32) / "output"
    orphan.mkdir(parents=True)
    mount_tmpfs(orphan, size_bytes=MiB, inodes=16, uid=65534, gid=65534)
    successor = DockerExecutor(DockerExecutorConfig(work_dir=work_dir), docker_client)
    assert successor.reap(run_labels, keep=frozenset({kept})) == 2
    assert not orphan.parent.exists()
    with pytest.raises(docker.errors.NotFound):
        docker_client.containers.get(lost)
    assert not executor.observe(kept, 0.2).exited
    assert len(mounts_under(work_dir)) == 1
    executor.cancel(kept)
    assert executor.collect(kept).killed


def test_gvisor_gives_the_same_verdict(
    docker_client: docker.DockerClient,
    make_spec: MakeSpec,
    work_dir: Path,
    run_labels: dict[str, str],
) -> None:
    """The correct predictor under runsc (gVisor) yields the same facts as under runc."""
    if "runsc" not in docker_client.info().get("Runtimes", {}):
        unavailable("gVisor (runsc) is not registered with this engine")
    gvisor = DockerExecutor(DockerExecutorConfig(work_dir=work_dir, runtime="runsc"), docker_client)
    try:
        outcome: Outcome = run_to_end(gvisor, make_spec("correct"))
    finally:
        assert_no_leftovers(docker_client, work_dir, run_labels)
    result = outcome.result
    assert (result.exit_code, result.output_status, result.output) == (0, OK, CORRECT)
    assert (result.runtime, result.oom_killed, result.killed) == ("runsc", False, False)


@pytest.mark.gpu
def test_a_gpu_run_sees_only_its_assigned_gpu_and_a_cpu_run_none(
    executor: DockerExecutor, make_spec: MakeSpec, images: ImageFactory
) -> None:
    """Devices mode: GPU 0 alone is visible as device 0; a CPU run sees no GPU at all."""
    if not Path("/dev/nvidia0").exists() or not Path("/usr/local/nvidia/bin/nvidia-smi").exists():
        pytest.skip("no NVIDIA GPU and driver folder here")
    probe = images.get_gpu_probe()
    gpu = replace(make_spec("correct"), image_id=probe, gpus=GpuAssignment(indices=(0,)))
    seen = run_to_end(executor, gpu).result
    assert seen.exit_code == 0 and seen.output is not None, seen.logs
    lines = seen.output.decode().splitlines()
    assert [line.split(":")[0] for line in lines if line.startswith("GPU ")] == ["GPU 0"], lines
    assert "cuda=0" in lines and "nvidia0 " in lines[-1] and "nvidia1 " not in lines[-1]
    blind = run_to_end(executor, replace(gpu, gpus=GpuAssignment())).result
    assert blind.output is not None and b"GPU 0:" not in blind.output, blind.output
    assert b"cuda=unset" in blind.output
