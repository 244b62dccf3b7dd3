"""The executor seam: submit, observe, collect, cancel — one run of one untrusted image.

The local Docker executor is the reference; cluster engines (Slurm, Kubernetes) implement the same
protocol. Handles are plain strings so the service can persist them in its durable job table and
reap them after a crash. No engine-specific exception crosses this seam: they map to ExecutorError.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

JobHandle = str


class ExecutorError(Exception):
    """The sandbox or its engine failed (the service's fault, retried as INFRASTRUCTURE)."""


class ImageNotFoundError(ExecutorError):
    """The image is not present in the engine (it is never pulled)."""


class OutputFileStatus(enum.Enum):
    OK = "OK"
    MISSING = "MISSING"
    TOO_LARGE = "TOO_LARGE"
    NOT_REGULAR = "NOT_REGULAR"


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    time_limit_s: float
    memory_bytes: int
    cpus: float
    pids: int = 256
    tmp_bytes: int = 256 * 1024 * 1024
    output_bytes: int = 64 * 1024 * 1024
    shm_bytes: int = 64 * 1024 * 1024
    log_bytes: int = 64 * 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class GpuAssignment:
    """Whole GPUs handed to one run. `indices` are host device indices, `uuids` NVML UUIDs."""

    indices: tuple[int, ...] = ()
    uuids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class RunSpec:
    image_id: str  # "sha256:<hex>": the pinned image; never a tag, never pulled
    videos_dir: Path  # host folder, bind-mounted read-only at /data/videos
    sample_submission: Path  # host file, bind-mounted read-only at /data/sample_submission.csv
    limits: Limits
    env: Mapping[str, str] = field(default_factory=dict)
    gpus: GpuAssignment = GpuAssignment()
    labels: Mapping[str, str] = field(default_factory=dict)  # engine labels, for reaping
    name: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ImageInfo:
    id: str  # "sha256:<hex>"
    user: str
    volumes: tuple[str, ...]
    architecture: str
    os: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Observation:
    exited: bool
    exit_code: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RunResult:
    exit_code: int | None
    oom_killed: bool
    killed: bool  # the service killed it (deadline or cancel)
    output_status: OutputFileStatus
    output: bytes | None  # submission.csv's bytes when output_status is OK
    output_full: bool  # /output hit its cap
    output_bytes: int  # bytes found in /output in total
    wall_time_s: float
    cpu_time_s: float | None
    peak_memory_bytes: int | None
    logs: bytes  # bounded tail of stdout+stderr; operators only, never shown to a participant
    runtime: str


class Executor(Protocol):
    def resolve_image(self, ref: str) -> ImageInfo:
        """Pin a reference (tag or id) to the image's id; ImageNotFoundError if absent."""
        ...

    def submit(self, spec: RunSpec) -> JobHandle:
        """Create and start the run; returns once the process has started."""
        ...

    def observe(self, handle: JobHandle, timeout_s: float) -> Observation:
        """Block up to timeout_s for the run to exit."""
        ...

    def cancel(self, handle: JobHandle) -> None:
        """Kill the run now (idempotent; a finished or unknown run is fine)."""
        ...

    def collect(self, handle: JobHandle) -> RunResult:
        """After exit or cancel: gather facts and output, then remove every trace of the run."""
        ...

    def reap(self, labels: Mapping[str, str], keep: frozenset[JobHandle] = frozenset()) -> int:
        """Remove leftovers carrying these labels (from a crashed process); returns how many."""
        ...
