"""The sandbox's pure parts, with no engine: the container policy, the host-side output reader,
the cgroup readers and the error seam."""

from __future__ import annotations

import gc
import os
from collections.abc import Callable
from pathlib import Path

import docker
import pytest

from sandbox.cgroups import CgroupLayout, Usage
from sandbox.docker_executor import DockerExecutor
from sandbox.executor import (
    ExecutorError,
    GpuAssignment,
    ImageInfo,
    Limits,
    OutputFileStatus,
    RunSpec,
)
from sandbox.host_output import read_output, read_submission
from sandbox.policy import (
    DockerExecutorConfig,
    GpuMode,
    RunUser,
    create_options,
    run_user,
)

IMAGE = ImageInfo(
    id="sha256:" + "c" * 64,
    user="",
    volumes=("/data2", "/output/"),
    architecture="amd64",
    os="linux",
)
LIMITS = Limits(time_limit_s=5.0, memory_bytes=256 << 20, cpus=1.5, pids=100)
TOKEN = "0" * 32


def _spec(**overrides: object) -> RunSpec:
    fields: dict[str, object] = {
        "image_id": IMAGE.id,
        "videos_dir": Path("/srv/videos"),
        "sample_submission": Path("/srv/sample.csv"),
        "limits": LIMITS,
        "env": {"SCORER_NUM_VIDEOS": "3", "NVIDIA_VISIBLE_DEVICES": "all"},
        "labels": {"scorer.instance": "one"},
    }
    return RunSpec(**(fields | overrides))  # type: ignore[arg-type]


def _options(spec: RunSpec, **config: object) -> dict[str, object]:
    cfg = DockerExecutorConfig(work_dir=Path("/work"), **config)  # type: ignore[arg-type]
    return create_options(
        spec,
        IMAGE,
        cfg,
        token=TOKEN,
        output_dir=Path("/srv/run/output"),
        user=RunUser(uid=65534, gid=65534),
        present_gpu_nodes=frozenset({"/dev/nvidiactl", "/dev/nvidia-uvm"}),
    )


@pytest.mark.parametrize(
    ("image_user", "expected"),
    [
        ("", "65534:65534"),
        ("0", "65534:65534"),
        ("root", "65534:65534"),
        ("0:0", "65534:65534"),
        ("1000", "1000:65534"),
        ("1000:0", "1000:65534"),
        ("1000:1000", "1000:1000"),
        ("app", "65534:65534"),
        ("1000:app", "65534:65534"),
        (" 42 ", "42:65534"),
    ],
)
def test_run_user_keeps_only_a_numeric_non_root_user(image_user: str, expected: str) -> None:
    """Root, names and group 0 all fall back to the fixed unprivileged ids."""
    assert str(run_user(image_user, fallback_uid=65534, fallback_gid=65534)) == expected


def test_policy_closes_the_known_escape_routes() -> None:
    """No network, read-only root, no capabilities, no swap escape, capped pids and tmpfs."""
    options = _options(_spec())
    assert options["network_mode"] == "none" and options["read_only"] is True
    assert options["cap_drop"] == ["ALL"] and options["security_opt"] == ["no-new-privileges"]
    assert options["mem_limit"] == options["memswap_limit"] == 256 << 20
    assert (options["pids_limit"], options["nano_cpus"]) == (100, 1_500_000_000)
    assert (options["init"], options["privileged"], options["auto_remove"]) == (True, False, False)
    assert options["image"] == IMAGE.id and options["hostname"] == "sandbox"
    assert options["cgroup_parent"] == f"/scorer-sandbox/{TOKEN}"
    assert options["labels"] == {
        "scorer.instance": "one",
        "scorer.sandbox": "1",
        "scorer.run": TOKEN,
        "scorer.output_bytes": str(LIMITS.output_bytes),
        "scorer.log_bytes": str(LIMITS.log_bytes),
    }


def test_every_declared_volume_but_ours_becomes_a_capped_tmpfs() -> None:
    """VOLUME /data2 is a size-capped tmpfs; a VOLUME on /output is left to our own mount."""
    tmpfs = _options(_spec())["tmpfs"]
    assert isinstance(tmpfs, dict)
    assert set(tmpfs) == {"/tmp", "/data2"}
    assert all(
        f"size={LIMITS.tmp_bytes}," in opts and "nosuid,nodev" in opts for opts in tmpfs.values()
    )


def test_inputs_are_read_only_non_recursive_binds_and_output_is_writable() -> None:
    """/data/* are read-only and never expose nested mounts; /output is the only writable bind."""
    mounts = {m["Target"]: m for m in _options(_spec())["mounts"]}  # type: ignore[attr-defined]
    assert {t: (m["Source"], m["ReadOnly"]) for t, m in mounts.items()} == {
        "/output": ("/srv/run/output", False),
        "/data/videos": ("/srv/videos", True),
        "/data/sample_submission.csv": ("/srv/sample.csv", True),
    }
    assert all(m["BindOptions"] == {"NonRecursive": True} for m in mounts.values())


def test_cpu_runs_get_no_gpu_and_cannot_ask_for_one() -> None:
    """A CPU run sees NVIDIA_VISIBLE_DEVICES=void even if the spec says otherwise; no devices."""
    options = _options(_spec())
    assert options["environment"] == {"SCORER_NUM_VIDEOS": "3", "NVIDIA_VISIBLE_DEVICES": "void"}
    assert "devices" not in options and "device_requests" not in options


def test_gpu_runs_get_only_their_devices_numbered_from_zero() -> None:
    """Devices mode: the assigned nodes plus the control nodes present, the driver dir read-only."""
    spec = _spec(gpus=GpuAssignment(indices=(2, 5), uuids=("GPU-a", "GPU-b")))
    options = _options(spec)
    assert options["devices"] == [
        "/dev/nvidia2:/dev/nvidia2:rwm",
        "/dev/nvidia5:/dev/nvidia5:rwm",
        "/dev/nvidiactl:/dev/nvidiactl:rwm",
        "/dev/nvidia-uvm:/dev/nvidia-uvm:rwm",
    ]
    env = options["environment"]
    assert isinstance(env, dict) and env["CUDA_VISIBLE_DEVICES"] == "0,1"
    driver = [m for m in options["mounts"] if m["Target"] == "/usr/local/nvidia"]  # type: ignore[attr-defined]
    assert [m["ReadOnly"] for m in driver] == [True]


def test_toolkit_mode_requests_exactly_the_assigned_uuids() -> None:
    """Toolkit mode: one device request naming the UUIDs, no raw device nodes."""
    spec = _spec(gpus=GpuAssignment(indices=(1,), uuids=("GPU-a",)))
    options = _options(spec, gpu_mode="toolkit")
    requests = options["device_requests"]
    assert isinstance(requests, list) and requests[0]["DeviceIDs"] == ["GPU-a"]
    assert "devices" not in options
    assert options["environment"]["CUDA_VISIBLE_DEVICES"] == "0"  # type: ignore[index]


def test_gvisor_gets_pid_headroom_for_its_own_threads() -> None:
    """Under runsc the sentry's host threads count against pids, so the limit is raised."""
    assert _options(_spec(), runtime="runsc")["pids_limit"] == 100 + 512


def test_config_refuses_a_root_fallback_and_odd_cgroup_names() -> None:
    """The fallback user is never root; the cgroup root is one plain component."""
    with pytest.raises(ValueError, match="root"):
        DockerExecutorConfig(work_dir=Path("/w"), fallback_uid=0)
    with pytest.raises(ValueError, match="cgroup_root"):
        DockerExecutorConfig(work_dir=Path("/w"), cgroup_root="../escape")
    assert DockerExecutorConfig(work_dir=Path("/w"), gpu_mode="toolkit").gpu_mode is GpuMode.TOOLKIT


# --- host-side output reading ------------------------------------------------------------------


def test_regular_submission_is_read_back(tmp_path: Path) -> None:
    """A regular file under the cap comes back byte for byte."""
    (tmp_path / "submission.csv").write_bytes(b"filename,label\n")
    assert read_submission(tmp_path / "submission.csv", 100) == (
        OutputFileStatus.OK,
        b"filename,label\n",
    )


def test_missing_and_oversized_submissions(tmp_path: Path) -> None:
    """No file is MISSING; one byte over the cap is TOO_LARGE, exactly the cap is OK."""
    path = tmp_path / "submission.csv"
    assert read_submission(path, 10) == (OutputFileStatus.MISSING, None)
    path.write_bytes(b"x" * 11)
    assert read_submission(path, 10) == (OutputFileStatus.TOO_LARGE, None)
    assert read_submission(path, 11) == (OutputFileStatus.OK, b"x" * 11)


@pytest.mark.parametrize("kind", ["symlink", "dangling", "hardlink", "fifo", "directory"])
def test_anything_but_a_lone_regular_file_is_not_regular(tmp_path: Path, kind: str) -> None:
    """Symlinks are not followed, hard links and FIFOs and directories are refused, never read."""
    path = tmp_path / "submission.csv"
    target = tmp_path / "target"
    target.write_bytes(b"secret")
    if kind == "symlink":
        path.symlink_to(target)
    elif kind == "dangling":
        path.symlink_to(tmp_path / "absent")
    elif kind == "hardlink":
        os.link(target, path)
    elif kind == "fifo":
        os.mkfifo(path)  # no writer: a blocking open would hang here
    else:
        path.mkdir()
    assert read_submission(path, 100) == (OutputFileStatus.NOT_REGULAR, None)


def test_output_usage_is_reported(tmp_path: Path) -> None:
    """read_output reports the folder's filesystem usage alongside the file."""
    (tmp_path / "submission.csv").write_bytes(b"a,b\n")
    found = read_output(tmp_path, 1 << 40)
    assert (found.status, found.data, found.full) == (OutputFileStatus.OK, b"a,b\n", False)
    assert found.used_bytes > 0


# --- cgroups -----------------------------------------------------------------------------------


def test_cgroup_v1_figures_are_read_from_memory_and_cpuacct(tmp_path: Path) -> None:
    """v1: max_usage_in_bytes, oom_control's oom_kill and cpuacct.usage (ns)."""
    memory, cpuacct = tmp_path / "memory" / "run", tmp_path / "cpuacct" / "run"
    memory.mkdir(parents=True)
    cpuacct.mkdir(parents=True)
    (memory / "memory.max_usage_in_bytes").write_text("1048576\n")
    (memory / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n")
    (cpuacct / "cpuacct.usage").write_text("1500000000\n")
    layout = CgroupLayout(memory_v1=tmp_path / "memory", cpuacct_v1=tmp_path / "cpuacct")
    assert layout.read("run") == Usage(cpu_time_s=1.5, peak_memory_bytes=1048576, oom_kills=2)
    assert layout.read("absent") == Usage()


def test_cgroup_v2_figures_are_read_from_the_unified_tree(tmp_path: Path) -> None:
    """v2: memory.peak, memory.events' oom_kill and cpu.stat's usage_usec."""
    group = tmp_path / "docker" / "abc"
    group.mkdir(parents=True)
    (group / "memory.peak").write_text("4096\n")
    (group / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
    (group / "cpu.stat").write_text("usage_usec 250000\nuser_usec 200000\n")
    layout = CgroupLayout(unified=tmp_path, roots=(tmp_path,))
    assert layout.read("docker/abc") == Usage(cpu_time_s=0.25, peak_memory_bytes=4096, oom_kills=1)
    assert "system.slice/docker-abc.scope" in layout.candidates("abc", None)


def test_usage_merge_keeps_the_largest_known_figure() -> None:
    """Samples merge by maximum; an unknown figure never hides a known one."""
    merged = Usage(cpu_time_s=1.0).merge(Usage(cpu_time_s=0.5, peak_memory_bytes=7))
    assert merged == Usage(cpu_time_s=1.0, peak_memory_bytes=7, oom_kills=None)


# --- the error seam ----------------------------------------------------------------------------


def _raised(call: Callable[[], object]) -> type[BaseException] | None:
    try:
        call()
    except Exception as exc:  # the point is to see which type escapes
        return type(exc)
    return None


# docker-py leaves the socket of a refused connection for the garbage collector to close.
@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_an_unreachable_engine_is_an_executor_error_never_a_docker_one(tmp_path: Path) -> None:
    """Every method maps the SDK's and the transport's failures to ExecutorError."""
    client = docker.DockerClient(base_url=f"unix://{tmp_path}/absent.sock", version="1.41")
    executor = DockerExecutor(
        DockerExecutorConfig(work_dir=tmp_path / "work"), client, cgroups=CgroupLayout()
    )
    calls = [
        lambda: executor.resolve_image("x:latest"),
        lambda: executor.submit(
            RunSpec(
                image_id=IMAGE.id,
                videos_dir=tmp_path,
                sample_submission=tmp_path / "s",
                limits=LIMITS,
            )
        ),
        lambda: executor.observe("abc", 0.1),
        lambda: executor.cancel("abc"),
        lambda: executor.collect("abc"),
        lambda: executor.reap({"scorer.instance": "one"}),
    ]
    assert [_raised(call) for call in calls] == [ExecutorError] * len(calls)
    client.close()
    gc.collect()
