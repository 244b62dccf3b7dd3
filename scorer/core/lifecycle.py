"""Evaluation lifecycle: states, the transitions table, failure reasons and run classification."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class State(enum.Enum):
    QUEUED = "QUEUED"
    PREPARING = "PREPARING"
    RUNNING = "RUNNING"
    SCORING = "SCORING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({State.SUCCEEDED, State.FAILED, State.CANCELLED})

# Every allowed move. PREPARING/RUNNING/SCORING -> QUEUED is the bounded INFRASTRUCTURE retry.
TRANSITIONS: dict[State, frozenset[State]] = {
    State.QUEUED: frozenset({State.PREPARING, State.FAILED, State.CANCELLED}),
    State.PREPARING: frozenset({State.RUNNING, State.QUEUED, State.FAILED, State.CANCELLED}),
    State.RUNNING: frozenset({State.SCORING, State.QUEUED, State.FAILED, State.CANCELLED}),
    State.SCORING: frozenset({State.SUCCEEDED, State.QUEUED, State.FAILED, State.CANCELLED}),
    State.SUCCEEDED: frozenset(),
    State.FAILED: frozenset(),
    State.CANCELLED: frozenset(),
}


def can_transition(src: State, dst: State) -> bool:
    return dst in TRANSITIONS[src]


class FailureReason(enum.Enum):
    TIMEOUT = "TIMEOUT"
    OUT_OF_MEMORY = "OUT_OF_MEMORY"
    NONZERO_EXIT = "NONZERO_EXIT"
    MISSING_OUTPUT = "MISSING_OUTPUT"
    INVALID_OUTPUT = "INVALID_OUTPUT"
    OUTPUT_TOO_LARGE = "OUTPUT_TOO_LARGE"
    IMAGE_REJECTED = "IMAGE_REJECTED"
    DATASET_INTEGRITY = "DATASET_INTEGRITY"
    INFRASTRUCTURE = "INFRASTRUCTURE"

    @property
    def service_fault(self) -> bool:
        """The service's fault: never counted against a team's quota."""
        return self in (FailureReason.INFRASTRUCTURE, FailureReason.DATASET_INTEGRITY)


# Where several participant reasons apply, the first in this order wins (CONTRACT.md §2).
PRECEDENCE: tuple[FailureReason, ...] = (
    FailureReason.TIMEOUT,
    FailureReason.OUT_OF_MEMORY,
    FailureReason.OUTPUT_TOO_LARGE,
    FailureReason.NONZERO_EXIT,
    FailureReason.MISSING_OUTPUT,
    FailureReason.INVALID_OUTPUT,
)

SAFE_MESSAGES: dict[FailureReason, str] = {
    FailureReason.TIMEOUT: "the run exceeded its time limit of {time_limit_s:g} s and was stopped",
    FailureReason.OUT_OF_MEMORY: "the run exceeded its memory limit of {memory_bytes} bytes",
    FailureReason.OUTPUT_TOO_LARGE: "the output exceeded its size cap of {output_bytes} bytes",
    FailureReason.NONZERO_EXIT: "the image's process exited with status {exit_code}",
    FailureReason.MISSING_OUTPUT: "no /output/submission.csv was written",
    FailureReason.INVALID_OUTPUT: "{detail}",
    FailureReason.IMAGE_REJECTED: "{detail}",
    FailureReason.DATASET_INTEGRITY: "the hidden dataset failed its integrity check; "
    "this is not the participant's fault and does not count against a quota",
    FailureReason.INFRASTRUCTURE: "the service failed to run the evaluation ({detail}); "
    "this is not the participant's fault and does not count against a quota",
}


class OutputStatus(enum.Enum):
    """What the host found at /output/submission.csv after the container was gone."""

    OK = "OK"
    MISSING = "MISSING"
    TOO_LARGE = "TOO_LARGE"  # over the file cap, or /output filled up
    NOT_REGULAR = "NOT_REGULAR"  # symlink, FIFO, directory, hard link: never followed or read


@dataclass(frozen=True, slots=True, kw_only=True)
class RunFacts:
    """The facts of a finished run, as the sandbox observed them."""

    timed_out: bool
    oom_killed: bool
    exit_code: int | None
    output: OutputStatus
    output_full: bool = False  # /output reached its cap (ENOSPC) even if the file itself is small


def classify(facts: RunFacts) -> FailureReason | None:
    """The participant reason a run earns before its predictions are read, or None to go on.

    INVALID_OUTPUT is decided later, by parsing; it comes last in the precedence anyway.
    """
    applicable: set[FailureReason] = set()
    if facts.timed_out:
        applicable.add(FailureReason.TIMEOUT)
    if facts.oom_killed:
        applicable.add(FailureReason.OUT_OF_MEMORY)
    if facts.output is OutputStatus.TOO_LARGE or facts.output_full:
        applicable.add(FailureReason.OUTPUT_TOO_LARGE)
    if facts.exit_code not in (0, None):
        applicable.add(FailureReason.NONZERO_EXIT)
    if facts.output is OutputStatus.MISSING:
        applicable.add(FailureReason.MISSING_OUTPUT)
    if facts.output is OutputStatus.NOT_REGULAR:
        applicable.add(FailureReason.INVALID_OUTPUT)
    for reason in PRECEDENCE:
        if reason in applicable:
            return reason
    return None
