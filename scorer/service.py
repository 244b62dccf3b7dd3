"""The service's use cases behind the gRPC surface: submission, cancel, watch, recovery, and the
FIFO scheduler that hands out CPU slots and whole GPUs exclusively. Datasets and benchmarks are
the catalog's (catalog.py); uploads the intake's (intake.py)."""

from __future__ import annotations

import contextlib
import re
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace

import structlog

from sandbox import ExecutorError, GpuAssignment, ImageNotFoundError
from sandbox.executor import Executor
from sandbox.image_store import DockerImageStore, ImageStore
from scorer.catalog import Catalog
from scorer.config import ServiceConfig
from scorer.core.lifecycle import TERMINAL, FailureReason, State
from scorer.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
)
from scorer.gpus import GpuInfo
from scorer.intake import REJECTED_PREFIX, ImageIntake
from scorer.models import Benchmark, Evaluation, Event
from scorer.receipts import Signer
from scorer.runner import AttemptRunner, Cancelled, CancelToken, InfrastructureError
from scorer.store import ACTIVE, SqliteJobStore, now
from scorer.telemetry import Telemetry

log = structlog.get_logger("scorer.service")

_SUBMISSION_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@/-]{0,127}$")
_IMAGE_REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@-]{0,254}$")


@dataclass(frozen=True, slots=True, kw_only=True)
class SubmitRequest:
    submission_id: str
    benchmark: str
    team: str
    image: str


class Service:
    def __init__(
        self,
        *,
        config: ServiceConfig,
        store: SqliteJobStore,
        executor: Executor,
        signer: Signer,
        telemetry: Telemetry,
        gpus: Sequence[GpuInfo] | None = None,
        images: ImageStore | None = None,
    ) -> None:
        """`gpus`: the discovered GPUs to hand out (with their UUIDs); None: config.gpus' indices
        as they are, with no UUIDs and no GPU facts (tests, and hosts that skip discovery).
        `images`: where uploads are loaded; None: the local Docker engine (connected on first use).
        """
        self.config = config
        self.store = store
        self.executor = executor
        self.signer = signer
        self.telemetry = telemetry
        self.instance_id = store.instance_id()
        self._gpu_info = {gpu.index: gpu for gpu in gpus or ()}
        self._gpu_pool = (
            tuple(gpu.index for gpu in gpus) if gpus is not None else tuple(config.gpus or ())
        )
        self._runner = AttemptRunner(
            config=config,
            store=store,
            executor=executor,
            signer=signer,
            telemetry=telemetry,
            instance_id=self.instance_id,
            gpu_inventory=self._gpu_info,
        )
        self.catalog = Catalog(store=store, gpu_count=len(self._gpu_pool))
        self.intake = ImageIntake(
            config=config, store=store, images=images or DockerImageStore(), telemetry=telemetry
        )
        self._lock = threading.Lock()
        self._tokens: dict[str, CancelToken] = {}
        self._free_gpus = list(self._gpu_pool)
        self._cpu_running = 0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._runs: set[threading.Thread] = set()
        telemetry.track_depth(lambda: store.count_in_state(State.QUEUED), lambda: len(self._tokens))

    # --- life cycle ----------------------------------------------------------------------------

    def start(self) -> None:
        self.recover()
        for target, name in ((self._schedule_loop, "scheduler"), (self._verify_loop, "verifier")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop scheduling; running attempts are killed and recovered at the next start."""
        self._stop.set()
        # The scheduler first: once it is gone no run can start behind the snapshot below.
        for thread in self._threads:
            thread.join(timeout_s)
        with self._lock:
            tokens = list(self._tokens.values())
            runs = list(self._runs)
        for token in tokens:
            token.event.set()
            if token.handle:
                self._kill(token.handle)
        for thread in runs:
            thread.join(timeout_s)

    def recover(self) -> None:
        """After a crash: reap our containers, then retry or fail what was in flight."""
        try:
            reaped = self.executor.reap({"scorer.instance": self.instance_id})
        except ExecutorError as exc:
            raise RuntimeError(f"cannot reap leftover containers: {exc}") from exc
        interrupted = self.store.in_states(ACTIVE)
        for ev in interrupted:
            self._retry_or_fail(ev, "the service restarted while the evaluation ran")
        shutil.rmtree(self.config.runs_dir, ignore_errors=True)
        log.info("recovered", reaped_containers=reaped, interrupted=len(interrupted))

    # --- evaluations ---------------------------------------------------------------------------

    def submit(self, req: SubmitRequest) -> tuple[Evaluation, bool]:
        if not _SUBMISSION_ID.match(req.submission_id):
            raise InvalidArgumentError(
                "submission_id must be 1-128 characters of letters, digits and ._:@/-"
            )
        if not req.team or len(req.team) > 128 or not req.team.isprintable():
            raise InvalidArgumentError("team must be 1-128 printable characters")
        if not _IMAGE_REF.match(req.image):
            raise InvalidArgumentError("image must be an image reference (a tag or an id)")
        existing = self.store.get_by_submission(req.submission_id)
        if existing is not None:
            return self._replay(existing, req)
        bench = self.store.get_benchmark(req.benchmark)
        if bench is None:
            raise NotFoundError(f"no benchmark named {req.benchmark}")
        if req.image.startswith(REJECTED_PREFIX):
            return self._submit_rejected(req, bench)
        try:
            info = self.executor.resolve_image(req.image)
        except ImageNotFoundError:
            raise NotFoundError(
                f"image {req.image} is not present in the service's engine (it is never pulled)"
            ) from None
        except ExecutorError as exc:
            raise FailedPreconditionError(f"the container engine is unavailable: {exc}") from exc
        ev = _new_evaluation(req, bench, image_digest=info.id, message="queued")
        stored, created = self.store.create_evaluation(ev)
        if not created:
            return self._replay(stored, req)
        self.store.touch_image(info.id)
        self.telemetry.submitted.inc()
        log.info(
            "evaluation_submitted",
            evaluation_id=stored.id,
            team=req.team,
            benchmark=bench.name,
            image_digest=info.id,
        )
        return stored, True

    def _submit_rejected(self, req: SubmitRequest, bench: Benchmark) -> tuple[Evaluation, bool]:
        """An upload that was refused: the evaluation exists, and ends IMAGE_REJECTED at once,
        attested by a receipt whose subject digest is the tarball's sha256 (there is no image)."""
        reason = self.intake.rejection(req.image)
        if reason is None:
            raise NotFoundError(f"no refused upload {req.image.removeprefix('upload:')}")
        ev = _new_evaluation(
            req,
            bench,
            image_digest=req.image.removeprefix("upload:"),
            message="the uploaded image was rejected",
        )
        # Under the scheduler's lock, so it never picks this evaluation up in between.
        with self._lock:
            stored, created = self.store.create_evaluation(ev)
            if not created:
                return self._replay(stored, req)
            self.store.transition(
                ev.id, State.QUEUED, State.PREPARING, new_attempt=True, message="image rejected"
            )
        self.telemetry.submitted.inc()
        with contextlib.suppress(Cancelled):  # cancelled in between: nothing left to do
            # The runner's own "failed before anything ran" path, so the receipt is the same kind.
            self._runner.fail_before_run(
                self.get(ev.id), FailureReason.IMAGE_REJECTED, reason, sealed=True
            )
        final = self.get(ev.id)
        self.telemetry.observe_finished(final.state.value, "IMAGE_REJECTED", 0.0)
        log.info("evaluation_submitted", evaluation_id=ev.id, team=req.team, rejected=reason)
        return final, True

    @staticmethod
    def _replay(existing: Evaluation, req: SubmitRequest) -> tuple[Evaluation, bool]:
        if (existing.benchmark, existing.team, existing.image_ref) != (
            req.benchmark,
            req.team,
            req.image,
        ):
            raise AlreadyExistsError(
                f"submission_id {req.submission_id} was already used for another submission"
            )
        return existing, False

    def get(self, evaluation_id: str) -> Evaluation:
        ev = self.store.get(evaluation_id)
        if ev is None:
            raise NotFoundError(f"no evaluation {evaluation_id}")
        return ev

    def cancel(self, evaluation_id: str) -> Evaluation:
        """Cancel in any non-terminal state; a running container is killed at once."""
        for _ in range(10):
            ev = self.get(evaluation_id)
            if ev.state in TERMINAL:
                return ev
            if self.store.transition(
                ev.id, ev.state, State.CANCELLED, message="cancelled by the caller"
            ):
                break
        with self._lock:
            token = self._tokens.get(evaluation_id)
        if token is not None:
            token.event.set()
            if token.handle:
                self._kill(token.handle)
        ev = self.get(evaluation_id)
        if ev.state is State.CANCELLED:
            self.telemetry.observe_finished("CANCELLED", None, _age_s(ev))
            log.info("evaluation_cancelled", evaluation_id=ev.id)
        return ev

    def watch(
        self, evaluation_id: str, active: Callable[[], bool]
    ) -> Iterator[tuple[Evaluation, Event]]:
        """Every state change and status message until terminal (or the caller goes away)."""
        self.get(evaluation_id)
        last = 0
        while active():
            events = self.store.events(evaluation_id, last)
            current = self.get(evaluation_id)
            for i, event in enumerate(events):
                last = event.seq
                snapshot = (
                    current
                    if i == len(events) - 1
                    else replace(current, state=event.state, status_message=event.message)
                )
                yield snapshot, event
            if current.state in TERMINAL and not self.store.events(evaluation_id, last):
                return
            self.store.wait_for_change(0.5)

    def _kill(self, handle: str) -> None:
        try:
            self.executor.cancel(handle)
        except ExecutorError as exc:
            log.warning("kill_failed", handle=handle[:12], error=str(exc))

    # --- scheduling ----------------------------------------------------------------------------

    def _schedule_loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._dispatch()
            except Exception:
                log.exception("scheduler_failed")
            self.store.wait_for_change(0.5)

    def _dispatch(self) -> None:
        """FIFO per pool: CPU jobs take CPU slots; GPU jobs take whole GPUs, head first."""
        gpu_blocked = False
        ahead = {"cpu": 0, "gpu": 0}
        for ev in self.store.in_states([State.QUEUED]):
            if self._stop.is_set():
                return
            pool = "gpu" if ev.gpus else "cpu"
            with self._lock:
                if ev.gpus == 0:
                    if self._cpu_running >= self.config.cpu_slots:
                        self._say_waiting(ev, "a CPU slot", ahead, pool)
                        continue
                    self._cpu_running += 1
                    gpus = GpuAssignment()
                else:
                    if gpu_blocked or len(self._free_gpus) < ev.gpus:
                        gpu_blocked = True  # no backfill past the head: strict FIFO
                        self._say_waiting(ev, f"{ev.gpus} free GPU(s)", ahead, pool)
                        continue
                    taken = tuple(self._free_gpus[: ev.gpus])
                    del self._free_gpus[: ev.gpus]
                    gpus = GpuAssignment(indices=taken, uuids=self._uuids(taken))
                token = CancelToken(event=threading.Event())
                self._tokens[ev.id] = token
            if not self.store.transition(
                ev.id,
                State.QUEUED,
                State.PREPARING,
                new_attempt=True,
                message="preparing: checking the dataset and the image",
            ):
                self._release(ev.id, gpus)
                continue
            started = self.get(ev.id)
            thread = threading.Thread(
                target=self._run,
                args=(started, gpus, token),
                name=f"run-{ev.id[:11]}",
                daemon=True,
            )
            with self._lock:
                self._runs.add(thread)
            thread.start()

    def _say_waiting(self, ev: Evaluation, what: str, ahead: dict[str, int], pool: str) -> None:
        """Never "queued" with no explanation: say what it waits for and how many are ahead."""
        message = f"queued: waiting for {what}; {ahead[pool]} ahead in the queue"
        ahead[pool] += 1
        if ev.status_message != message:
            self.store.set_status(ev.id, message)

    def _uuids(self, indices: tuple[int, ...]) -> tuple[str, ...]:
        """The UUIDs of these GPUs (the Container Toolkit's names), or () where not discovered."""
        if all(i in self._gpu_info for i in indices):
            return tuple(self._gpu_info[i].uuid for i in indices)
        return ()

    def _run(self, ev: Evaluation, gpus: GpuAssignment, token: CancelToken) -> None:
        try:
            self.store.touch_image(ev.image_digest)
            try:
                self.intake.evict()
            except Exception:  # eviction must never stop a run
                log.exception("image_eviction_crashed")
            self._attempt(ev, gpus, token)
        finally:
            with self._lock:
                self._runs.discard(threading.current_thread())

    def _attempt(self, ev: Evaluation, gpus: GpuAssignment, token: CancelToken) -> None:
        t0 = time.monotonic()
        with structlog.contextvars.bound_contextvars(evaluation_id=ev.id):
            try:
                self._runner.run(ev, gpus, token)
            except Cancelled:
                log.info("attempt_cancelled", attempt=ev.attempts)
            except (InfrastructureError, ExecutorError, OSError) as exc:
                log.warning("attempt_failed", attempt=ev.attempts, error=str(exc))
                self._retry_or_fail(ev, str(exc))
            except Exception as exc:
                log.exception("attempt_crashed", attempt=ev.attempts)
                self._retry_or_fail(ev, f"internal error: {type(exc).__name__}")
            finally:
                if token.handle and not self._stop.is_set():
                    self.store.record_attempt(ev.id, ev.attempts, outcome="done")
                self._release(ev.id, gpus)
                shutil.rmtree(self.config.runs_dir / ev.id, ignore_errors=True)
        final = self.get(ev.id)
        if final.state in (State.SUCCEEDED, State.FAILED):
            reason = final.failure_reason.value if final.failure_reason else None
            self.telemetry.observe_finished(final.state.value, reason, _age_s(final))
        log.info(
            "attempt_ended",
            evaluation_id=ev.id,
            state=final.state.value,
            seconds=round(time.monotonic() - t0, 3),
        )

    def _release(self, evaluation_id: str, gpus: GpuAssignment) -> None:
        with self._lock:
            self._tokens.pop(evaluation_id, None)
            if gpus.indices:
                self._free_gpus.extend(gpus.indices)
                self._free_gpus.sort()
            else:
                self._cpu_running -= 1

    def _retry_or_fail(self, ev: Evaluation, detail: str) -> None:
        current = self.get(ev.id)
        if current.state not in ACTIVE:
            return
        self.store.record_attempt(ev.id, current.attempts, outcome="infrastructure", detail=detail)
        if current.attempts < self.config.max_attempts:
            if self.store.transition(
                ev.id,
                current.state,
                State.QUEUED,
                message=f"retrying after an infrastructure failure "
                f"(attempt {current.attempts} of {self.config.max_attempts} failed)",
            ):
                self.telemetry.retries.inc()
            return
        message = (
            f"the service failed to run the evaluation {current.attempts} times; this is "
            "not the participant's fault and does not count against a quota"
        )
        self.store.transition(
            ev.id,
            current.state,
            State.FAILED,
            message=message,
            failure=(FailureReason.INFRASTRUCTURE, message),
        )

    def _verify_loop(self) -> None:
        """Full re-hash of every dataset on a schedule (quick checks run before every attempt)."""
        while not self._stop.wait(60.0):
            self.catalog.verify_due(self.config.dataset_verify_interval_s)


def _age_s(ev: Evaluation) -> float:
    return max((now() - ev.created_at).total_seconds(), 0.0)


def _new_evaluation(
    req: SubmitRequest, bench: Benchmark, *, image_digest: str, message: str
) -> Evaluation:
    """A QUEUED evaluation of `req` on `bench`, not yet stored."""
    stamp = now()
    return Evaluation(
        id=f"ev_{uuid.uuid4().hex}",
        seq=0,
        submission_id=req.submission_id,
        team=req.team,
        benchmark=bench.name,
        image_ref=req.image,
        image_digest=image_digest,
        state=State.QUEUED,
        gpus=bench.limits.gpus,
        limits=bench.definition(),
        created_at=stamp,
        updated_at=stamp,
        status_message=message,
    )
