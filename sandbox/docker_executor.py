"""The local Docker executor: one hardened container per run, created by image id, never pulled.

The policy itself lives in `sandbox.policy`; this module drives the engine (create, start, wait,
kill, inspect, remove), the per-run host tmpfs at /output and the per-run cgroup parent.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import docker
import docker.errors

from sandbox.cgroups import CgroupLayout, Usage
from sandbox.engine_errors import ENGINE_ERRORS, engine_errors, is_conflict, is_not_found
from sandbox.executor import (
    ExecutorError,
    ImageInfo,
    ImageNotFoundError,
    JobHandle,
    Observation,
    RunResult,
    RunSpec,
)
from sandbox.host_output import mount_tmpfs, mounts_under, read_output, unmount
from sandbox.policy import (
    LOG_CAP_LABEL,
    OUTPUT_CAP_LABEL,
    RUN_LABEL,
    SANDBOX_LABEL,
    TOKEN_RE,
    DockerExecutorConfig,
    GpuMode,
    RunUser,
    cgroup_parent,
    create_options,
    run_user,
)

__all__ = ["DockerExecutor", "DockerExecutorConfig", "GpuMode"]

_GPU_NODES = ("/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools")
_KILL_WAIT_S = 30.0

_LOG_SETTLE_BYTES = 64 * 1024  # below this, the engine's log copier is never behind in practice
_LOG_SETTLE_TRIES = 10


@dataclass(slots=True)
class _Run:
    """What this process remembers about a run it started (lost on restart, never needed)."""

    token: str
    started: float
    killed: bool = False
    usage: Usage = field(default_factory=Usage)


class DockerExecutor:
    """Executor over the local Docker engine (API 1.41+)."""

    def __init__(
        self,
        config: DockerExecutorConfig,
        client: docker.DockerClient | None = None,
        *,
        cgroups: CgroupLayout | None = None,
    ) -> None:
        self._config = config
        self._client = client
        self._cgroups = cgroups
        self._cgroup_parent_ok: bool | None = None
        self._runs: dict[JobHandle, _Run] = {}
        self._pending: set[str] = set()  # tokens between mkdir and a recorded handle
        self._lock = threading.Lock()

    # --- engine ---------------------------------------------------------------------------

    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            with engine_errors("connect to the Docker engine"):
                self._client = docker.from_env(timeout=60)
        return self._client

    @property
    def cgroups(self) -> CgroupLayout:
        if self._cgroups is None:
            self._cgroups = CgroupLayout.discover()
        return self._cgroups

    def _use_cgroup_parent(self) -> bool:
        # Per-run parents are plain cgroup paths, which only the cgroupfs driver accepts; under
        # the systemd driver the figures come from samples taken while the run is observed.
        if self._cgroup_parent_ok is None:
            with engine_errors("read the engine's info"):
                driver = self.client.info().get("CgroupDriver")
            self._cgroup_parent_ok = driver == "cgroupfs"
        return self._cgroup_parent_ok

    # --- Executor ---------------------------------------------------------------------------

    def resolve_image(self, ref: str) -> ImageInfo:
        try:
            with engine_errors(f"resolve image {ref!r}"):
                image = self.client.images.get(ref)
        except ExecutorError as exc:
            cause = exc.__cause__
            if isinstance(cause, docker.errors.NullResource) or (
                isinstance(cause, docker.errors.APIError) and cause.status_code == 400
            ):  # an empty or malformed reference names no image
                raise ImageNotFoundError(f"no image {ref!r}: {cause}") from cause
            raise
        attrs: Mapping[str, Any] = image.attrs
        config: Mapping[str, Any] = attrs.get("Config") or {}
        return ImageInfo(
            id=str(image.id),
            user=str(config.get("User") or ""),
            volumes=tuple(sorted(config.get("Volumes") or {})),
            architecture=str(attrs.get("Architecture", "")),
            os=str(attrs.get("Os", "")),
        )

    def submit(self, spec: RunSpec) -> JobHandle:
        image = self.resolve_image(spec.image_id)
        user = run_user(
            image.user,
            fallback_uid=self._config.fallback_uid,
            fallback_gid=self._config.fallback_gid,
        )
        token = uuid.uuid4().hex
        with self._lock:
            self._pending.add(token)  # from here on, reap leaves this run's folder alone
        try:
            options = create_options(
                spec,
                image,
                self._config,
                token=token,
                output_dir=self._mount_output(token, spec, user),
                user=user,
                present_gpu_nodes=frozenset(n for n in _GPU_NODES if Path(n).exists()),
                use_cgroup_parent=self._use_cgroup_parent(),
            )
            options["image"] = image.id  # the id just resolved: a short id may not be pinned
            handle = self._create_and_start(options)
        except BaseException as exc:
            with contextlib.suppress(ExecutorError):  # must not hide the original error
                self._release(token)
            with self._lock:
                self._pending.discard(token)
            if isinstance(exc, OSError):
                raise ExecutorError(f"cannot prepare the run: {exc}") from exc
            raise
        with self._lock:
            self._runs[handle] = _Run(token=token, started=time.monotonic())
            self._pending.discard(token)
        return handle

    def observe(self, handle: JobHandle, timeout_s: float) -> Observation:
        self._sample(handle)
        if timeout_s <= 0:
            with engine_errors("inspect the container"):
                state = self.client.api.inspect_container(handle)["State"]
            exited = state.get("Status") in ("exited", "dead")
            return Observation(exited=exited, exit_code=state.get("ExitCode") if exited else None)
        begun = time.monotonic()
        try:
            # An HTTP read timeout, not a deadline (docker-py #1966): the service keeps the
            # deadline on its own monotonic clock and calls cancel().
            result = self.client.api.wait(handle, timeout=timeout_s)
        except ENGINE_ERRORS as exc:
            if isinstance(exc, OSError) and time.monotonic() - begun >= timeout_s * 0.9:
                return Observation(exited=False)  # read timeout: still running
            with engine_errors("wait for the container"):
                raise
        self._sample(handle)
        return Observation(exited=True, exit_code=int(result.get("StatusCode", -1)))

    def cancel(self, handle: JobHandle) -> None:
        try:
            self.client.api.kill(handle, signal="SIGKILL")
        except ENGINE_ERRORS as exc:
            if is_not_found(exc) or is_conflict(exc):
                return  # gone or no longer running: cancel is idempotent
            with engine_errors("kill the container"):
                raise
        with self._lock:
            run = self._runs.get(handle)
            if run is not None:
                run.killed = True

    def collect(self, handle: JobHandle) -> RunResult:
        with engine_errors("inspect the container"):
            attrs = self.client.api.inspect_container(handle)
        token = self._token_of(attrs)
        with self._lock:
            run = self._runs.pop(handle, None)
        try:
            try:
                attrs, killed = self._ensure_stopped(handle, attrs, run)
                usage = self._final_usage(handle, token, run)
                logs = self._logs(handle, _label_int(attrs, LOG_CAP_LABEL))
            finally:
                self._remove(handle)
            cap = _label_int(attrs, OUTPUT_CAP_LABEL)
            output = read_output(self._run_dir(token) / "output", cap)
        finally:
            self._release(token)
        state = attrs["State"]
        return RunResult(
            exit_code=state.get("ExitCode"),
            oom_killed=bool(state.get("OOMKilled")) or (usage.oom_kills or 0) > 0,
            killed=killed,
            output_status=output.status,
            output=output.data,
            output_full=output.full,
            output_bytes=output.used_bytes,
            wall_time_s=_wall_time_s(state, run),
            cpu_time_s=usage.cpu_time_s,
            peak_memory_bytes=usage.peak_memory_bytes,
            logs=logs,
            runtime=str(attrs["HostConfig"].get("Runtime") or self._config.runtime),
        )

    def reap(self, labels: Mapping[str, str], keep: frozenset[JobHandle] = frozenset()) -> int:
        wanted = [f"{k}={v}" for k, v in labels.items()] + [f"{SANDBOX_LABEL}=1"]
        with engine_errors("list containers"):
            doomed = self.client.api.containers(all=True, filters={"label": wanted})
            ours = self.client.api.containers(all=True, filters={"label": f"{SANDBOX_LABEL}=1"})
        removed = set()
        for entry in doomed:
            if entry["Id"] in keep:
                continue
            self._remove(entry["Id"])
            removed.add(entry["Id"])
            token = (entry.get("Labels") or {}).get(RUN_LABEL, "")
            if TOKEN_RE.fullmatch(token):
                self._release(token)
        live = {(c.get("Labels") or {}).get(RUN_LABEL) for c in ours if c["Id"] not in removed}
        with self._lock:
            live |= self._pending | {run.token for run in self._runs.values()}
        return len(removed) + self._reap_orphans({t for t in live if t})

    # --- helpers ----------------------------------------------------------------------------

    def _run_dir(self, token: str) -> Path:
        return self._config.work_dir / token

    def _token_of(self, attrs: Mapping[str, Any]) -> str:
        found = attrs.get("Config", {}).get("Labels") or {}
        token = str(found.get(RUN_LABEL, ""))
        if found.get(SANDBOX_LABEL) != "1" or not TOKEN_RE.fullmatch(token):
            raise ExecutorError("not a container this sandbox started; refusing to touch it")
        return token

    def _mount_output(self, token: str, spec: RunSpec, user: RunUser) -> Path:
        """The run's host folder, with a fresh tmpfs capped at output_bytes on its output/."""
        self._config.work_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        output = self._run_dir(token) / "output"
        output.parent.mkdir(mode=0o700)
        output.mkdir(mode=0o700)
        mount_tmpfs(
            output,
            size_bytes=spec.limits.output_bytes,
            inodes=self._config.output_inodes,
            uid=user.uid,
            gid=user.gid,
        )
        return output

    def _create_and_start(self, options: dict[str, Any]) -> str:
        with engine_errors("create the container"):
            handle = str(self.client.containers.create(**options).id)
        try:
            self._refuse_volumes(handle)
            with engine_errors("start the container"):
                self.client.api.start(handle)
        except BaseException:
            with contextlib.suppress(ExecutorError):
                self._remove(handle)
            raise
        return handle

    def _refuse_volumes(self, handle: str) -> None:
        with engine_errors("inspect the new container"):
            attached = self.client.api.inspect_container(handle).get("Mounts") or []
        volumes = [m.get("Destination") for m in attached if m.get("Type") == "volume"]
        if volumes:  # defence in depth: the policy covers every VOLUME with a tmpfs
            raise ExecutorError(f"the engine attached volumes at {volumes}; refusing to run")

    def _sample(self, handle: str) -> None:
        with self._lock:
            run = self._runs.get(handle)
        if run is None:
            return
        usage = self._read_usage(handle, run.token)
        with self._lock:
            run.usage = run.usage.merge(usage)

    def _read_usage(self, handle: str, token: str) -> Usage:
        return self.cgroups.read_run(handle, cgroup_parent(self._config, token))

    def _final_usage(self, handle: str, token: str, run: _Run | None) -> Usage:
        usage = self._read_usage(handle, token)
        return usage if run is None else run.usage.merge(usage)

    def _ensure_stopped(
        self, handle: str, attrs: dict[str, Any], run: _Run | None
    ) -> tuple[dict[str, Any], bool]:
        """Kill a run that is still going (collect before exit), and wait until it has stopped."""
        killed = run is not None and run.killed
        if attrs["State"].get("Status") in ("running", "paused", "restarting"):
            self.cancel(handle)
            killed = True
        with engine_errors("wait for the killed container"):
            if attrs["State"].get("Status") != "created":
                self.client.api.wait(handle, timeout=_KILL_WAIT_S)
            return self.client.api.inspect_container(handle), killed

    def _logs(self, handle: str, cap: int) -> bytes:
        """The last `cap` bytes of stdout+stderr; the json-file's max-size bounds what is read.

        Docker 20.10 can report a chatty container as exited before its log copier has written
        the last lines, so a large log is read again until its tail stops changing (bounded).
        """
        tail, total = self._read_logs(handle, cap)
        for _ in range(_LOG_SETTLE_TRIES):
            if total < _LOG_SETTLE_BYTES:
                break
            time.sleep(0.2)
            again, total = self._read_logs(handle, cap)
            if again == tail:
                break
            tail = again
        return tail

    def _read_logs(self, handle: str, cap: int) -> tuple[bytes, int]:
        tail = bytearray()
        total = 0
        with engine_errors("read the container's logs"):
            for chunk in self.client.api.logs(handle, stream=True, follow=False):
                total += len(chunk)
                tail += chunk
                if len(tail) > cap:
                    del tail[: len(tail) - cap]
        return bytes(tail), total

    def _remove(self, handle: str) -> None:
        try:
            # v=True: should any volume have been attached, it goes with the container.
            self.client.api.remove_container(handle, v=True, force=True)
        except ENGINE_ERRORS as exc:
            if is_not_found(exc):
                return
            with engine_errors("remove the container"):
                raise

    def _release(self, token: str) -> None:
        """Unmount and delete the run's host folder and its cgroup parent (idempotent)."""
        run_dir = self._run_dir(token)
        for point in mounts_under(run_dir):
            unmount(point)
        for folder in (run_dir / "output", run_dir):
            try:
                folder.rmdir()
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise ExecutorError(f"cannot remove the run folder {folder}: {exc}") from exc
        # Busy (should never be, once the container is removed): reap tries again later.
        self.cgroups.remove(cgroup_parent(self._config, token).strip("/"))

    def _reap_orphans(self, live: set[str]) -> int:
        count = 0
        if self._config.work_dir.is_dir():
            for entry in self._config.work_dir.iterdir():
                if TOKEN_RE.fullmatch(entry.name) and entry.name not in live:
                    self._release(entry.name)
                    count += 1
        for token in self.cgroups.children(self._config.cgroup_root):
            if TOKEN_RE.fullmatch(token) and token not in live:
                self.cgroups.remove(cgroup_parent(self._config, token).strip("/"))
        return count


def _label_int(attrs: Mapping[str, Any], name: str) -> int:
    value = str((attrs.get("Config", {}).get("Labels") or {}).get(name, ""))
    if not value.isdigit():
        raise ExecutorError(f"the container lacks its {name} label")
    return int(value)


def _parse_time(value: str | None) -> datetime | None:
    if not value or value.startswith("0001-"):
        return None
    head, _, frac = value.rstrip("Z").partition(".")
    try:
        return datetime.fromisoformat(f"{head}.{(frac or '0')[:6]:0<6}+00:00")
    except ValueError:
        return None


def _wall_time_s(state: Mapping[str, Any], run: _Run | None) -> float:
    started, finished = _parse_time(state.get("StartedAt")), _parse_time(state.get("FinishedAt"))
    if started is not None and finished is not None and finished >= started:
        return (finished - started).total_seconds()
    return time.monotonic() - run.started if run is not None else 0.0
