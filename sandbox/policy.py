"""The hardened container policy as data: one RunSpec in, the engine's create options out.

Pure (no engine, no file system): every option names the threat it closes, and unit tests read
the policy without a Docker engine.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from docker.types import DeviceRequest, Mount, Ulimit

from sandbox.executor import GpuAssignment, ImageInfo, RunSpec

SANDBOX_LABEL = "scorer.sandbox"  # on every container this package starts: what reap looks for
RUN_LABEL = "scorer.run"  # the run's token: names its host folder and its cgroup parent
OUTPUT_CAP_LABEL = "scorer.output_bytes"  # caps a later process (after a restart) reads back
LOG_CAP_LABEL = "scorer.log_bytes"
OUTPUT_DIR = "/output"
VIDEOS_DIR = "/data/videos"
SAMPLE_PATH = "/data/sample_submission.csv"
TMP_DIR = "/tmp"  # noqa: S108 - the container's own /tmp, a capped tmpfs, not the host's
HOSTNAME = "sandbox"
TOKEN_RE = re.compile(r"^[0-9a-f]{32}$")
_NUMERIC_USER = re.compile(r"^(\d+)(?::(\d+))?$")


class GpuMode(enum.StrEnum):
    DEVICES = "devices"  # plain device nodes + the driver's libraries, read-only
    TOOLKIT = "toolkit"  # NVIDIA Container Toolkit via device_requests (untested here)


@dataclass(frozen=True, slots=True, kw_only=True)
class DockerExecutorConfig:
    """How the local Docker executor runs every container; parsed once at the entry point."""

    work_dir: Path  # host folder for per-run output mounts (root-owned, 0700)
    runtime: str = "runc"  # or "runsc" (gVisor)
    fallback_uid: int = 65534
    fallback_gid: int = 65534
    gpu_mode: GpuMode | str = GpuMode.DEVICES
    gpu_driver_dir: Path | str | None = Path("/usr/local/nvidia")
    labels: Mapping[str, str] = field(default_factory=dict)  # extra fixed labels
    cgroup_root: str = "scorer-sandbox"  # per-run cgroup parents live under it (cgroupfs driver)
    nofile: int = 8192  # must not exceed the engine's own hard limit (runc cannot raise it)
    runsc_pids_headroom: int = 512  # gVisor's own host threads count against the pids cgroup
    output_inodes: int = 4096
    log_file_bytes: int = 1024 * 1024  # per json-file log, one file kept

    def __post_init__(self) -> None:
        object.__setattr__(self, "gpu_mode", GpuMode(self.gpu_mode))
        if self.gpu_driver_dir is not None:
            object.__setattr__(self, "gpu_driver_dir", Path(self.gpu_driver_dir))
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", self.cgroup_root):
            raise ValueError(f"cgroup_root must be one plain path component: {self.cgroup_root!r}")
        if self.fallback_uid == 0 or self.fallback_gid == 0:
            raise ValueError("the fallback user must not be root")


@dataclass(frozen=True, slots=True, kw_only=True)
class RunUser:
    uid: int
    gid: int

    def __str__(self) -> str:
        return f"{self.uid}:{self.gid}"


def run_user(image_user: str, *, fallback_uid: int, fallback_gid: int) -> RunUser:
    """The image's USER when it is numeric and non-root, else the fixed unprivileged user.

    A name is never resolved (it would need the image's /etc/passwd, which the image controls),
    and group 0 is never kept: a bare "uid" would otherwise run with the root group.
    """
    match = _NUMERIC_USER.fullmatch(image_user.strip())
    if match is None or int(match.group(1)) == 0:
        return RunUser(uid=fallback_uid, gid=fallback_gid)
    gid = int(match.group(2)) if match.group(2) is not None else 0
    return RunUser(uid=int(match.group(1)), gid=gid or fallback_gid)


def cgroup_parent(config: DockerExecutorConfig, token: str) -> str:
    return f"/{config.cgroup_root}/{token}"


def tmpfs_options(size_bytes: int) -> str:
    # nosuid,nodev: no set-id binaries or device nodes smuggled onto a writable mount. exec is
    # kept on purpose: JIT compilers (Triton, torch.compile, numba) write shared objects to /tmp
    # and dlopen them, and noexec would stop no attacker who already runs arbitrary code.
    return f"size={size_bytes},mode=1777,nosuid,nodev,exec"


def volume_tmpfs(image: ImageInfo, size_bytes: int) -> dict[str, str]:
    """Cover every image-declared VOLUME with a capped tmpfs, so the engine never creates an
    anonymous volume (unbounded, host-disk-backed, left behind after the container)."""
    ours = {OUTPUT_DIR, VIDEOS_DIR, SAMPLE_PATH, TMP_DIR}
    return {
        path: tmpfs_options(size_bytes) for path in image.volumes if path.rstrip("/") not in ours
    }


def _bind(source: Path, target: str, *, read_only: bool) -> Mount:
    mount = Mount(target, str(source), type="bind", read_only=read_only)
    # Non-recursive: a mount nested under the source (the engine leaves those writable even on
    # a read-only bind) is never exposed inside the container.
    mount["BindOptions"] = {"NonRecursive": True}
    return mount


def mounts(spec: RunSpec, output_dir: Path, driver_dir: Path | None) -> list[Mount]:
    result = [
        _bind(output_dir, OUTPUT_DIR, read_only=False),  # a host tmpfs capped at output_bytes
        _bind(spec.videos_dir, VIDEOS_DIR, read_only=True),  # the hidden set: never modified
        _bind(spec.sample_submission, SAMPLE_PATH, read_only=True),
    ]
    if driver_dir is not None and spec.gpus.indices:
        result.append(_bind(driver_dir, str(driver_dir), read_only=True))  # the driver's libs
    return result


def environment(spec: RunSpec, mode: GpuMode) -> dict[str, str]:
    """spec.env, then the GPU variables, which the spec cannot override."""
    env = dict(spec.env)
    count = len(spec.gpus.indices) or len(spec.gpus.uuids)
    if count:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in range(count))  # from 0
    if not count or mode is GpuMode.DEVICES:
        # "void": a Container Toolkit hook on the host, if any, injects no GPU (an image's own
        # ENV often says NVIDIA_VISIBLE_DEVICES=all); in devices mode the nodes grant access.
        env["NVIDIA_VISIBLE_DEVICES"] = "void"
    return env


def gpu_options(
    gpus: GpuAssignment, mode: GpuMode, present_nodes: frozenset[str]
) -> dict[str, Any]:
    """Only the assigned GPUs' device nodes (or the Toolkit's request for exactly those UUIDs)."""
    if not gpus.indices and not gpus.uuids:
        return {}
    if mode is GpuMode.TOOLKIT:
        request = DeviceRequest(
            driver="nvidia",
            device_ids=list(gpus.uuids),
            capabilities=[["gpu", "compute", "utility"]],
        )
        return {"device_requests": [request]}
    nodes = [f"/dev/nvidia{i}" for i in gpus.indices]
    nodes += [
        n
        for n in ("/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools")
        if n in present_nodes
    ]
    return {"devices": [f"{node}:{node}:rwm" for node in nodes]}


def labels(spec: RunSpec, config: DockerExecutorConfig, token: str) -> dict[str, str]:
    return {
        **spec.labels,
        **config.labels,
        SANDBOX_LABEL: "1",
        RUN_LABEL: token,
        OUTPUT_CAP_LABEL: str(spec.limits.output_bytes),
        LOG_CAP_LABEL: str(spec.limits.log_bytes),
    }


def create_options(
    spec: RunSpec,
    image: ImageInfo,
    config: DockerExecutorConfig,
    *,
    token: str,
    output_dir: Path,
    user: RunUser,
    present_gpu_nodes: frozenset[str] = frozenset(),
    use_cgroup_parent: bool = True,
) -> dict[str, Any]:
    """Keyword arguments for `client.containers.create`: the whole hardening policy."""
    limits = spec.limits
    mode = GpuMode(config.gpu_mode)
    driver = Path(config.gpu_driver_dir) if config.gpu_driver_dir else None
    pids = limits.pids + (config.runsc_pids_headroom if config.runtime == "runsc" else 0)
    options: dict[str, Any] = {
        "image": spec.image_id,  # the pinned id: a tag could be re-pointed, and nothing is pulled
        "name": spec.name,
        "runtime": config.runtime,
        "network_mode": "none",  # no route out: no exfiltration of the hidden set, no C2
        "read_only": True,  # the image cannot be altered to persist or to smuggle data
        "cap_drop": ["ALL"],  # no capabilities: no raw sockets, mounts, chown, ptrace, ...
        "security_opt": ["no-new-privileges"],  # set-id binaries cannot regain privileges
        "user": str(user),  # never root inside: a runtime escape lands unprivileged
        "pids_limit": pids,  # a fork bomb stops at the cgroup, not at the host's pid table
        "mem_limit": limits.memory_bytes,
        "memswap_limit": limits.memory_bytes,  # equal: no escape from the limit into swap
        "nano_cpus": int(limits.cpus * 1e9),  # a busy loop cannot starve the host
        "shm_size": limits.shm_bytes,  # /dev/shm is tmpfs: capped like every writable mount
        "tmpfs": {
            TMP_DIR: tmpfs_options(limits.tmp_bytes),
            **volume_tmpfs(image, limits.tmp_bytes),
        },
        "mounts": mounts(spec, output_dir, driver),
        "init": True,  # a real PID 1 reaps zombies and forwards our SIGKILL to every process
        "ipc_mode": "private",  # no System V IPC shared with other containers
        "cgroupns": "private",  # the container sees only its own cgroup tree
        "hostname": HOSTNAME,  # the host's name does not leak
        "labels": labels(spec, config, token),
        "environment": environment(spec, mode),
        "log_config": {  # container output cannot fill the host's disk
            "type": "json-file",
            "config": {
                "max-size": str(max(config.log_file_bytes, 4 * limits.log_bytes)),
                "max-file": "1",
            },
        },
        "ulimits": [
            Ulimit(name="core", soft=0, hard=0),  # no core dumps (disk, or secrets in memory)
            Ulimit(name="nofile", soft=config.nofile, hard=config.nofile),
        ],
        "oom_score_adj": 1000,  # under host-wide memory pressure the sandbox dies first
        "stop_signal": "SIGKILL",  # a stop is a kill: no grace period to outlive a deadline
        "auto_remove": False,  # we remove it ourselves, after reading its facts
        "privileged": False,
        **gpu_options(spec.gpus, mode, present_gpu_nodes),
    }
    if use_cgroup_parent:
        # A per-run parent cgroup outlives the container: its peak memory and CPU time can be
        # read after exit (the container's own cgroup is deleted the moment it stops).
        options["cgroup_parent"] = cgroup_parent(config, token)
    return options
