"""FakeExecutor: an in-memory Executor with scripted runs, for the service's component tests.

Time is real but short: a run "takes" `duration_s` of wall-clock time, and a hanging run really
blocks `observe` until `cancel` is called, so deadline and cancellation paths run for real.
Every RunSpec received is recorded, so tests assert on values (limits, env, mounts), not calls.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from sandbox.executor import (
    ExecutorError,
    ImageInfo,
    ImageNotFoundError,
    JobHandle,
    Observation,
    OutputFileStatus,
    RunResult,
    RunSpec,
)

SIGKILL_EXIT = 137


@dataclass(frozen=True, slots=True, kw_only=True)
class FakeRun:
    """What one scripted run does. `output=None` writes nothing (MISSING)."""

    exit_code: int = 0
    output: bytes | None = b"filename,label\n"
    output_status: OutputFileStatus | None = None  # force a status (e.g. NOT_REGULAR)
    output_full: bool = False
    duration_s: float = 0.0
    hang: bool = False  # runs until cancelled
    oom_killed: bool = False
    cpu_time_s: float | None = 0.0
    peak_memory_bytes: int | None = 1024 * 1024
    logs: bytes = b""


Behaviour = Callable[[RunSpec], FakeRun]
DEFAULT_RUN = FakeRun()


@dataclass(slots=True)
class _Job:
    spec: RunSpec
    run: FakeRun
    started: float
    cancelled: threading.Event = field(default_factory=threading.Event)
    cancel_time: float = float("inf")

    def finished(self, now: float) -> bool:
        natural = not self.run.hang and now >= self.started + self.run.duration_s
        return natural or self.cancelled.is_set()

    def killed(self) -> bool:
        """Cancelled before it ended on its own."""
        return self.cancelled.is_set() and (
            self.run.hang or self.cancel_time < self.started + self.run.duration_s
        )


class FakeExecutor:
    """Executor in memory. Register images, script behaviours, then inspect `specs`."""

    def __init__(self, *, runtime: str = "fake") -> None:
        self.runtime = runtime
        self.specs: list[RunSpec] = []  # every spec submit() accepted, in order
        self.cancelled: list[JobHandle] = []
        self._images: dict[str, ImageInfo] = {}
        self._behaviours: dict[str, Behaviour] = {}
        self._failures: dict[str, list[ExecutorError]] = {}
        self._jobs: dict[JobHandle, _Job] = {}
        self._lock = threading.Lock()

    # --- scripting --------------------------------------------------------------------------

    def add_image(
        self, ref: str, info: ImageInfo, behaviour: Behaviour | FakeRun = DEFAULT_RUN
    ) -> None:
        """Make `ref` (and the image's id) resolvable, running `behaviour` when submitted."""
        with self._lock:
            self._images[ref] = info
            self._images[info.id] = info
        self.behave(info.id, behaviour)

    def behave(self, image_id: str, behaviour: Behaviour | FakeRun) -> None:
        """What a run of this image does: a fixed FakeRun, or a function of its RunSpec."""
        script = _constant(behaviour) if isinstance(behaviour, FakeRun) else behaviour
        with self._lock:
            self._behaviours[image_id] = script

    def fail(self, method: str, times: int = 1, error: ExecutorError | None = None) -> None:
        """The next `times` calls of `method` ("submit", "observe", "collect", ...) raise."""
        with self._lock:
            queue = self._failures.setdefault(method, [])
            queue.extend([error or ExecutorError(f"scripted {method} failure")] * times)

    @property
    def active(self) -> frozenset[JobHandle]:
        """Handles submitted and not yet collected or reaped (leftovers, after a test)."""
        with self._lock:
            return frozenset(self._jobs)

    # --- Executor ---------------------------------------------------------------------------

    def resolve_image(self, ref: str) -> ImageInfo:
        self._maybe_fail("resolve_image")
        with self._lock:
            info = self._images.get(ref)
        if info is None:
            raise ImageNotFoundError(f"no image {ref!r}")
        return info

    def submit(self, spec: RunSpec) -> JobHandle:
        self._maybe_fail("submit")
        with self._lock:
            script = self._behaviours.get(spec.image_id)
        if script is None or spec.image_id not in self._images:
            raise ImageNotFoundError(f"no image {spec.image_id!r}")
        run = script(spec)
        handle = uuid.uuid4().hex + uuid.uuid4().hex
        with self._lock:
            self.specs.append(spec)
            self._jobs[handle] = _Job(spec=spec, run=run, started=time.monotonic())
        return handle

    def observe(self, handle: JobHandle, timeout_s: float) -> Observation:
        self._maybe_fail("observe")
        job = self._job(handle)
        end = time.monotonic() + max(timeout_s, 0.0)
        if not job.run.hang:
            end = min(end, job.started + job.run.duration_s)
        job.cancelled.wait(max(end - time.monotonic(), 0.0))
        if not job.finished(time.monotonic()):
            return Observation(exited=False)
        return Observation(exited=True, exit_code=self._exit_code(job))

    def cancel(self, handle: JobHandle) -> None:
        self._maybe_fail("cancel")
        with self._lock:
            job = self._jobs.get(handle)
            self.cancelled.append(handle)
        if job is not None and not job.finished(time.monotonic()):
            job.cancel_time = time.monotonic()
            job.cancelled.set()

    def collect(self, handle: JobHandle) -> RunResult:
        self._maybe_fail("collect")
        job = self._job(handle)
        if not job.finished(time.monotonic()):
            self.cancel(handle)  # like the real one: collecting a live run kills it
        with self._lock:
            del self._jobs[handle]
        run, cap = job.run, job.spec.limits.output_bytes
        status = run.output_status or _status(run.output, cap)
        killed = job.killed()
        return RunResult(
            exit_code=self._exit_code(job),
            oom_killed=run.oom_killed,
            killed=killed,
            output_status=status,
            output=run.output if status is OutputFileStatus.OK else None,
            output_full=run.output_full,
            output_bytes=len(run.output or b""),
            wall_time_s=(job.cancel_time if killed else job.started + run.duration_s) - job.started,
            cpu_time_s=run.cpu_time_s,
            peak_memory_bytes=run.peak_memory_bytes,
            logs=run.logs,
            runtime=self.runtime,
        )

    def reap(self, labels: Mapping[str, str], keep: frozenset[JobHandle] = frozenset()) -> int:
        self._maybe_fail("reap")
        with self._lock:
            doomed = [
                handle
                for handle, job in self._jobs.items()
                if handle not in keep
                and all(job.spec.labels.get(k) == v for k, v in labels.items())
            ]
            for handle in doomed:
                self._jobs.pop(handle).cancelled.set()
        return len(doomed)

    # --- helpers ----------------------------------------------------------------------------

    def _job(self, handle: JobHandle) -> _Job:
        with self._lock:
            job = self._jobs.get(handle)
        if job is None:
            raise ExecutorError(f"unknown run {handle[:12]}")
        return job

    def _exit_code(self, job: _Job) -> int:
        return SIGKILL_EXIT if job.killed() else job.run.exit_code

    def _maybe_fail(self, method: str) -> None:
        with self._lock:
            queue = self._failures.get(method)
            error = queue.pop(0) if queue else None
        if error is not None:
            raise error


def _constant(run: FakeRun) -> Behaviour:
    return lambda _spec: run


def _status(output: bytes | None, cap: int) -> OutputFileStatus:
    if output is None:
        return OutputFileStatus.MISSING
    return OutputFileStatus.TOO_LARGE if len(output) > cap else OutputFileStatus.OK
