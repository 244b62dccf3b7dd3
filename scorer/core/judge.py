"""From the facts of a finished run and its output bytes to a verdict: shared by the service and
`scorer try`, so a participant's local run says exactly what the service would say."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from scorer.core.lifecycle import SAFE_MESSAGES, FailureReason, RunFacts, classify
from scorer.core.predictions import MissingPolicy, Predictions, PredictionsError, parse_predictions


@dataclass(frozen=True, slots=True, kw_only=True)
class Verdict:
    reason: FailureReason | None  # None: the predictions are valid and can be scored
    message: str  # safe to show the participant
    predictions: Predictions | None = None
    rule: str | None = None  # which predictions rule broke, for INVALID_OUTPUT


@dataclass(frozen=True, slots=True, kw_only=True)
class AppliedLimits:
    time_limit_s: float
    memory_bytes: int
    output_bytes: int


def judge(
    facts: RunFacts,
    output: bytes | None,
    expected: Sequence[str],
    *,
    missing: MissingPolicy,
    limits: AppliedLimits,
) -> Verdict:
    reason = classify(facts)
    if reason is FailureReason.INVALID_OUTPUT:
        return Verdict(
            reason=reason,
            rule="not_regular_file",
            message="/output/submission.csv must be a regular file (not a link, FIFO or folder)",
        )
    if reason is not None:
        return Verdict(reason=reason, message=failure_message(reason, facts=facts, limits=limits))
    if output is None:
        return Verdict(
            reason=FailureReason.MISSING_OUTPUT,
            message=SAFE_MESSAGES[FailureReason.MISSING_OUTPUT],
        )
    try:
        predictions = parse_predictions(output, expected, missing=missing)
    except PredictionsError as exc:
        return Verdict(reason=FailureReason.INVALID_OUTPUT, message=exc.message, rule=exc.rule)
    message = "predictions are valid"
    if predictions.imputed:
        message += f"; {predictions.imputed} missing predictions were imputed as 0.5"
    return Verdict(reason=None, message=message, predictions=predictions)


def failure_message(
    reason: FailureReason,
    *,
    facts: RunFacts | None = None,
    limits: AppliedLimits | None = None,
    detail: str = "",
) -> str:
    """The participant-safe message for a reason; only numbers the participant set or chose."""
    return SAFE_MESSAGES[reason].format(
        time_limit_s=limits.time_limit_s if limits else 0,
        memory_bytes=limits.memory_bytes if limits else 0,
        output_bytes=limits.output_bytes if limits else 0,
        exit_code=facts.exit_code if facts else None,
        detail=detail,
    )
