"""One attempt of one evaluation, as a sequence of durable steps: prepare, run, score, seal.

A participant's failure ends the evaluation with a verdict (and a receipt); a failure of the
service raises InfrastructureError, which the scheduler retries within a budget.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from sandbox import ExecutorError, GpuAssignment, ImageNotFoundError, Limits, RunResult, RunSpec
from sandbox.executor import Executor
from scorer import __version__
from scorer.config import ServiceConfig
from scorer.core.judge import AppliedLimits, Verdict, failure_message, judge
from scorer.core.lifecycle import FailureReason, OutputStatus, RunFacts, State
from scorer.core.manifest import Manifest, sample_submission_csv
from scorer.core.metrics import score_splits, seed_from_id
from scorer.core.receipt import build_statement
from scorer.datasets import FileStats, quick_check, refresh_stats
from scorer.gpus import GpuInfo, GpuMonitor, runtime_facts
from scorer.models import Benchmark, DatasetRecord, Evaluation
from scorer.receipts import Signer, seal_private_metrics
from scorer.store import SqliteJobStore, now
from scorer.telemetry import Telemetry

log = structlog.get_logger("scorer.runner")


class InfrastructureError(Exception):
    """The service broke; never the participant's fault."""


class Cancelled(Exception):
    """The evaluation was cancelled while this attempt ran."""


@dataclass(slots=True)
class CancelToken:
    event: threading.Event
    handle: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Prepared:
    manifest: Manifest
    spec: RunSpec
    applied: AppliedLimits


class AttemptRunner:
    def __init__(
        self,
        *,
        config: ServiceConfig,
        store: SqliteJobStore,
        executor: Executor,
        signer: Signer,
        telemetry: Telemetry,
        instance_id: str,
        gpu_inventory: Mapping[int, GpuInfo] | None = None,
    ) -> None:
        self._config = config
        self._gpu_inventory = dict(gpu_inventory or {})  # discovered GPUs, by host index
        self._store = store
        self._executor = executor
        self._signer = signer
        self._telemetry = telemetry
        self._instance = instance_id

    def run(self, ev: Evaluation, gpus: GpuAssignment, token: CancelToken) -> None:
        """Drive ev (already PREPARING, attempt counted) to a terminal state or raise."""
        bench = self._store.get_benchmark(ev.benchmark)
        if bench is None:
            raise RuntimeError("invariant: bench must exist")
        bound = log.bind(evaluation_id=ev.id, attempt=ev.attempts)
        prepared = self._prepare(ev, bench, gpus, bound)
        if prepared is None:
            return
        with self._gpu_monitor(gpus) as monitor:
            result, timed_out = self._execute(ev, prepared, token, bound)
        usage = {**_usage(result), "peak_gpu_memory_bytes": monitor.peak_bytes}
        self._score(ev, bench, prepared, result, timed_out, usage, bound)

    def _gpu_monitor(self, gpus: GpuAssignment) -> GpuMonitor:
        """Samples the run's GPUs (only GPUs discovered at start-up; none for a CPU run)."""
        known = [i for i in gpus.indices if i in self._gpu_inventory]
        return GpuMonitor(known, driver_dir=Path(self._config.gpu_driver_dir))

    # --- PREPARING ---------------------------------------------------------------------------

    def _prepare(
        self, ev: Evaluation, bench: Benchmark, gpus: GpuAssignment, bound: Any
    ) -> Prepared | None:
        dataset = self._store.get_dataset(bench.dataset)
        if dataset is None:
            raise RuntimeError("invariant: dataset must exist")
        manifest = Manifest.from_json(dataset.manifest_json)
        problems = [dataset.problem] if dataset.problem else self._quick_check(dataset, manifest)
        if problems:
            bound.error("dataset_integrity_failed", dataset=dataset.name, problems=problems[:20])
            self.fail_before_run(
                ev,
                FailureReason.DATASET_INTEGRITY,
                failure_message(FailureReason.DATASET_INTEGRITY),
                sealed=False,
            )
            return None
        rejected = self._check_image(ev)
        if rejected:
            bound.warning("image_rejected", detail=rejected)
            self.fail_before_run(ev, FailureReason.IMAGE_REJECTED, rejected, sealed=True)
            return None
        run_dir = self._config.runs_dir / ev.id / str(ev.attempts)
        run_dir.mkdir(parents=True, exist_ok=True)
        sample = run_dir / "sample_submission.csv"
        sample.write_bytes(sample_submission_csv(manifest.names))
        sample.chmod(0o444)
        limits = Limits(
            time_limit_s=bench.limits.time_limit_s,
            memory_bytes=bench.limits.memory_bytes,
            cpus=bench.limits.cpus,
            pids=self._config.sandbox.pids,
            tmp_bytes=self._config.sandbox.tmp_bytes,
            output_bytes=self._config.sandbox.output_bytes,
            shm_bytes=self._config.sandbox.shm_bytes,
            log_bytes=self._config.sandbox.log_bytes,
        )
        spec = RunSpec(
            image_id=ev.image_digest,
            videos_dir=Path(dataset.videos_dir),
            sample_submission=sample,
            limits=limits,
            env={
                "SCORER_VIDEOS_DIR": "/data/videos",
                "SCORER_SUBMISSION_PATH": "/output/submission.csv",
                "SCORER_TIME_LIMIT_SECONDS": f"{bench.limits.time_limit_s:g}",
                "SCORER_NUM_VIDEOS": str(len(manifest.names)),
            },
            gpus=gpus,
            labels={
                "scorer.instance": self._instance,
                "scorer.evaluation_id": ev.id,
                "scorer.attempt": str(ev.attempts),
            },
            name=f"scorer-{ev.id}-{ev.attempts}",
        )
        applied = AppliedLimits(
            time_limit_s=limits.time_limit_s,
            memory_bytes=limits.memory_bytes,
            output_bytes=limits.output_bytes,
        )
        return Prepared(manifest=manifest, spec=spec, applied=applied)

    def _quick_check(self, dataset: DatasetRecord, manifest: Manifest) -> list[str]:
        """Size, mtime, ctime, inode before every run; a changed stat triggers one re-hash."""
        folder = Path(dataset.videos_dir)
        if not quick_check(folder, manifest, FileStats.from_json(dataset.stats_json)):
            return []
        problems, fresh = refresh_stats(folder, manifest)
        if not problems:
            log.info("dataset_stats_refreshed", dataset=dataset.name)
            self._store.update_dataset_stats(dataset.name, fresh.to_json().decode())
        return problems

    def _check_image(self, ev: Evaluation) -> str | None:
        """A participant-safe reason to refuse the pinned image, or None."""
        try:
            info = self._executor.resolve_image(ev.image_digest)
        except ImageNotFoundError:
            return "the submitted image is no longer present in the service's engine"
        except ExecutorError as exc:
            raise InfrastructureError(f"cannot inspect the image: {exc}") from exc
        if info.id != ev.image_digest:
            return "the image's digest no longer matches the one pinned at submission"
        if (info.os, info.architecture) != ("linux", "amd64"):
            return f"the image is built for {info.os}/{info.architecture}; linux/amd64 is required"
        return None

    # --- RUNNING -----------------------------------------------------------------------------

    def _execute(
        self, ev: Evaluation, prepared: Prepared, token: CancelToken, bound: Any
    ) -> tuple[RunResult, bool]:
        if token.event.is_set():
            raise Cancelled
        try:
            handle = self._executor.submit(prepared.spec)
        except ExecutorError as exc:
            raise InfrastructureError(f"could not start the container: {exc}") from exc
        started = time.monotonic()  # the participant's clock starts with the container
        token.handle = handle
        self._store.record_attempt(ev.id, ev.attempts, handle=handle)
        limit_s = prepared.spec.limits.time_limit_s
        moved = self._store.transition(
            ev.id,
            State.PREPARING,
            State.RUNNING,
            message=f"running the image (time limit {limit_s:g} s)",
        )
        bound.info("container_started", handle=handle[:12])
        timed_out = False
        try:
            if not moved or token.event.is_set():
                self._executor.cancel(handle)
            else:
                timed_out = wait_with_deadline(
                    self._executor, handle, started + limit_s, token.event.is_set
                )
            result = self._executor.collect(handle)
        except ExecutorError as exc:
            self._safe_cancel(handle)
            raise InfrastructureError(f"lost the container: {exc}") from exc
        if token.event.is_set() or not moved:
            raise Cancelled
        self._telemetry.observe_run(
            result.wall_time_s, timed_out=timed_out, overrun_s=time.monotonic() - started - limit_s
        )
        return result, timed_out

    def _safe_cancel(self, handle: str) -> None:
        try:
            self._executor.cancel(handle)
        except ExecutorError:
            log.warning("cancel_failed", handle=handle[:12])

    # --- SCORING and sealing -----------------------------------------------------------------

    def _score(
        self,
        ev: Evaluation,
        bench: Benchmark,
        prepared: Prepared,
        result: RunResult,
        timed_out: bool,
        usage: dict[str, Any],
        bound: Any,
    ) -> None:
        if not self._store.transition(
            ev.id, State.RUNNING, State.SCORING, message="validating and scoring the predictions"
        ):
            raise Cancelled
        facts = facts_of(result, timed_out=timed_out)
        verdict = judge(
            facts,
            result.output,
            prepared.manifest.names,
            missing=bench.missing,
            limits=prepared.applied,
        )
        bound.info(
            "run_finished",
            exit_code=result.exit_code,
            oom=result.oom_killed,
            timed_out=timed_out,
            output=result.output_status.value,
            reason=verdict.reason.value if verdict.reason else None,
            logs_tail=result.logs[-2048:].decode("utf-8", "replace"),
            **usage,
        )
        self._seal(ev, bench, prepared, result, verdict, usage, bound)

    def _seal(
        self,
        ev: Evaluation,
        bench: Benchmark,
        prepared: Prepared,
        result: RunResult,
        verdict: Verdict,
        usage: dict[str, Any],
        bound: Any,
    ) -> None:
        metrics: dict[str, dict[str, Any]] = {}
        if verdict.predictions is not None:
            metrics = score_splits(
                prepared.manifest.labels_array(),
                verdict.predictions.probabilities,
                [entry.split for entry in prepared.manifest.entries],
                seed=seed_from_id(ev.id),
            )
            for split_metrics in metrics.values():
                split_metrics["imputed"] = verdict.predictions.imputed
        public = metrics.get("public")
        private = {k: v for k, v in metrics.items() if k != "public"}
        predicate = {
            "evaluation_id": ev.id,
            "submission_id": ev.submission_id,
            "team": ev.team,
            "benchmark": bench.name,
            "dataset_manifest_digest": prepared.manifest.digest,
            "submission_sha256": hashlib.sha256(result.output).hexdigest()
            if result.output is not None
            else None,
            "limits": {
                **bench.definition(),
                "pids": prepared.spec.limits.pids,
                "output_bytes": prepared.spec.limits.output_bytes,
                "tmp_bytes": prepared.spec.limits.tmp_bytes,
            },
            "runtime": {
                "runtime": result.runtime,
                **runtime_facts(
                    self._gpu_inventory[i]
                    for i in prepared.spec.gpus.indices
                    if i in self._gpu_inventory
                ),
                "gpus": len(prepared.spec.gpus.indices),
            },
            "usage": usage,
            "outcome": {
                "state": "FAILED" if verdict.reason else "SUCCEEDED",
                "failure_reason": verdict.reason.value if verdict.reason else None,
                "message": verdict.message,
            },
            "public_metrics": public,
            "sealed_metrics": seal_private_metrics(private, bench.organizer_public_key)
            if private
            else None,
            "scorer_version": __version__,
            "created_at": ev.created_at.isoformat(),
            "finished_at": now().isoformat(),
        }
        statement = build_statement(
            subject_name=ev.image_ref,
            image_digest_hex=ev.image_digest.removeprefix("sha256:"),
            predicate=predicate,
        )
        envelope = self._signer.sign_envelope(statement)
        dst = State.FAILED if verdict.reason else State.SUCCEEDED
        ok = self._store.transition(
            ev.id,
            State.SCORING,
            dst,
            message=verdict.message if verdict.reason else "scored and sealed",
            failure=(verdict.reason, verdict.message) if verdict.reason else None,
            public_metrics=public,
            usage=usage,
            receipt=(ev.attempts, envelope, result.output),
        )
        if not ok:
            raise Cancelled
        bound.info("evaluation_sealed", state=dst.value, keyid=self._signer.keyid[:16])

    def fail_before_run(
        self, ev: Evaluation, reason: FailureReason, message: str, *, sealed: bool
    ) -> None:
        """End ev FAILED before anything ran; participant reasons are attested by a receipt."""
        receipt = None
        if sealed:
            statement = build_statement(
                subject_name=ev.image_ref,
                image_digest_hex=ev.image_digest.removeprefix("sha256:"),
                predicate={
                    "evaluation_id": ev.id,
                    "submission_id": ev.submission_id,
                    "team": ev.team,
                    "benchmark": ev.benchmark,
                    "outcome": {
                        "state": "FAILED",
                        "failure_reason": reason.value,
                        "message": message,
                    },
                    "scorer_version": __version__,
                    "finished_at": now().isoformat(),
                },
            )
            receipt = (ev.attempts, self._signer.sign_envelope(statement), None)
        if not self._store.transition(
            ev.id,
            State.PREPARING,
            State.FAILED,
            message=message,
            failure=(reason, message),
            receipt=receipt,
        ):
            raise Cancelled


def _usage(result: RunResult) -> dict[str, Any]:
    return {
        "wall_seconds": result.wall_time_s,
        "cpu_seconds": result.cpu_time_s,
        "peak_memory_bytes": result.peak_memory_bytes,
        "output_bytes": result.output_bytes,
    }


def facts_of(result: RunResult, *, timed_out: bool) -> RunFacts:
    """What the judge needs from a finished run; the service's deadline verdict wins."""
    return RunFacts(
        timed_out=timed_out,
        oom_killed=result.oom_killed,
        exit_code=None if timed_out else result.exit_code,
        output=OutputStatus(result.output_status.value),
        output_full=result.output_full,
    )


def wait_with_deadline(
    executor: Executor, handle: str, deadline: float, cancelled: Callable[[], bool]
) -> bool:
    """Service-side monotonic deadline, then kill (wait(timeout) is no deadline: docker-py #1966).

    Returns True if the deadline fired. `cancelled` is polled at least once a second.
    """
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            executor.cancel(handle)
            return True
        if cancelled():
            executor.cancel(handle)
            return False
        if executor.observe(handle, min(remaining, 1.0)).exited:
            return False


__all__ = [
    "AttemptRunner",
    "CancelToken",
    "Cancelled",
    "InfrastructureError",
    "facts_of",
    "wait_with_deadline",
]
