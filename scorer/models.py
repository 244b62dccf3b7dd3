"""Records the service persists and passes around (values only; no I/O)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from scorer.core.lifecycle import FailureReason, State
from scorer.core.predictions import MissingPolicy

__all__ = ["Benchmark", "BenchmarkLimits", "DatasetRecord", "Evaluation", "Event", "MissingPolicy"]


@dataclass(frozen=True, slots=True, kw_only=True)
class BenchmarkLimits:
    time_limit_s: float = 3600.0
    memory_bytes: int = 4 * 1024**3
    cpus: float = 1.0
    gpus: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Benchmark:
    name: str
    dataset: str
    limits: BenchmarkLimits
    missing: MissingPolicy = MissingPolicy.FAIL
    organizer_public_key: bytes | None = None
    created_at: datetime | None = None

    def definition(self) -> dict[str, Any]:
        """What makes two benchmark definitions the same (re-adding must match exactly)."""
        return {
            "dataset": self.dataset,
            "time_limit_s": self.limits.time_limit_s,
            "memory_bytes": self.limits.memory_bytes,
            "cpus": self.limits.cpus,
            "gpus": self.limits.gpus,
            "missing": self.missing.value,
            "organizer_public_key": (self.organizer_public_key or b"").hex(),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class DatasetRecord:
    name: str
    videos_dir: str
    manifest_json: str
    manifest_digest: str
    stats_json: str
    created_at: datetime
    verified_at: datetime | None = None
    problem: str | None = None  # set by a full verification that found a change


@dataclass(frozen=True, slots=True, kw_only=True)
class Evaluation:
    id: str
    seq: int
    submission_id: str
    team: str
    benchmark: str
    image_ref: str
    image_digest: str
    state: State
    failure_reason: FailureReason | None = None
    failure_message: str = ""
    status_message: str = ""
    public_metrics: dict[str, Any] | None = None
    usage: dict[str, Any] | None = None
    limits: dict[str, Any] | None = None
    receipt: dict[str, Any] | None = None
    attempts: int = 0
    gpus: int = 0
    created_at: datetime = field(default_factory=lambda: datetime.min)
    updated_at: datetime = field(default_factory=lambda: datetime.min)


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    seq: int
    evaluation_id: str
    state: State
    message: str
    at: datetime
