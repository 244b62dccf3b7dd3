"""Translation between domain records and scorer.v1 messages (the only place that does it)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from google.protobuf import json_format, struct_pb2, timestamp_pb2

from scorer.core.lifecycle import State
from scorer.models import Benchmark, BenchmarkLimits, DatasetRecord, Evaluation, MissingPolicy
from scorer.v1 import scorer_pb2 as pb

_POLICY_TO_PB = {MissingPolicy.FAIL: pb.FAIL, MissingPolicy.IMPUTE: pb.IMPUTE}


def timestamp(value: datetime) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value)
    return ts


def split_metrics(split: str, metrics: dict[str, Any] | None) -> pb.SplitMetrics | None:
    if not metrics:
        return None
    msg = pb.SplitMetrics(
        split=split, n=int(metrics.get("n") or 0), imputed=int(metrics.get("imputed") or 0)
    )
    for key in ("log_loss", "roc_auc", "average_precision", "accuracy"):
        if metrics.get(key) is not None:
            setattr(msg, key, float(metrics[key]))
    if metrics.get("log_loss_ci95"):
        msg.log_loss_ci95.extend(float(x) for x in metrics["log_loss_ci95"])
    return msg


def evaluation(ev: Evaluation) -> pb.Evaluation:
    msg = pb.Evaluation(
        id=ev.id,
        submission_id=ev.submission_id,
        team=ev.team,
        benchmark=ev.benchmark,
        image_ref=ev.image_ref,
        image_digest=ev.image_digest,
        state=pb.EvaluationState.Value(ev.state.value),
        failure_reason=pb.FailureReason.Value(ev.failure_reason.value)
        if ev.failure_reason
        else pb.FAILURE_REASON_UNSPECIFIED,
        failure_message=ev.failure_message,
        status_message=ev.status_message,
        created_at=timestamp(ev.created_at),
        updated_at=timestamp(ev.updated_at),
        attempts=ev.attempts,
    )
    public = split_metrics("public", ev.public_metrics)
    if public is not None:
        msg.public_metrics.CopyFrom(public)
    if ev.receipt is not None:
        receipt = struct_pb2.Struct()
        receipt.update(ev.receipt)
        msg.receipt.CopyFrom(receipt)
    if ev.usage:
        u = ev.usage
        msg.usage.CopyFrom(
            pb.Usage(
                wall_seconds=u.get("wall_seconds") or 0.0,
                cpu_seconds=u.get("cpu_seconds") or 0.0,
                peak_memory_bytes=u.get("peak_memory_bytes") or 0,
                output_bytes=u.get("output_bytes") or 0,
                peak_gpu_memory_bytes=u.get("peak_gpu_memory_bytes") or 0,
            )
        )
    if ev.limits:
        lim = ev.limits
        msg.limits.CopyFrom(
            pb.Limits(
                time_limit_seconds=lim["time_limit_s"],
                memory_bytes=lim["memory_bytes"],
                cpus=lim["cpus"],
                gpus=lim["gpus"],
            )
        )
    return msg


def benchmark(
    bench: Benchmark, *, dataset_digest: str = "", splits: list[str] | None = None
) -> pb.Benchmark:
    return pb.Benchmark(
        name=bench.name,
        dataset=bench.dataset,
        limits=pb.Limits(
            time_limit_seconds=bench.limits.time_limit_s,
            memory_bytes=bench.limits.memory_bytes,
            cpus=bench.limits.cpus,
            gpus=bench.limits.gpus,
        ),
        missing_predictions=_POLICY_TO_PB[bench.missing],
        organizer_public_key=bench.organizer_public_key or b"",
        dataset_digest=dataset_digest,
        splits=splits or [],
        created_at=timestamp(bench.created_at) if bench.created_at else None,
    )


def benchmark_from_request(req: pb.AddBenchmarkRequest) -> Benchmark:
    defaults = BenchmarkLimits()
    lim = req.limits
    return Benchmark(
        name=req.name,
        dataset=req.dataset,
        limits=BenchmarkLimits(
            time_limit_s=lim.time_limit_seconds or defaults.time_limit_s,
            memory_bytes=lim.memory_bytes or defaults.memory_bytes,
            cpus=lim.cpus or defaults.cpus,
            gpus=lim.gpus,
        ),
        missing=MissingPolicy.IMPUTE
        if req.missing_predictions == pb.IMPUTE
        else MissingPolicy.FAIL,
        organizer_public_key=bytes(req.organizer_public_key) or None,
    )


def dataset(record: DatasetRecord, per_split: dict[str, int]) -> pb.Dataset:
    return pb.Dataset(
        name=record.name,
        videos_dir=record.videos_dir,
        manifest_digest=record.manifest_digest,
        num_videos=sum(per_split.values()),
        videos_per_split=per_split,
        created_at=timestamp(record.created_at),
    )


def state_from_pb(value: int) -> State | None:
    if value == pb.EVALUATION_STATE_UNSPECIFIED:
        return None
    return State(pb.EvaluationState.Name(pb.EvaluationState.ValueType(value)))


def reason_name(value: int) -> str | None:
    if value == pb.FAILURE_REASON_UNSPECIFIED:
        return None
    return pb.FailureReason.Name(pb.FailureReason.ValueType(value))


def metrics_json(m: pb.SplitMetrics) -> dict[str, Any]:
    out: dict[str, Any] = {"split": m.split, "n": m.n, "imputed": m.imputed}
    for key in ("log_loss", "roc_auc", "average_precision", "accuracy"):
        out[key] = getattr(m, key) if m.HasField(key) else None
    out["log_loss_ci95"] = list(m.log_loss_ci95) if m.log_loss_ci95 else None
    return out


def evaluation_json(msg: pb.Evaluation) -> dict[str, Any]:
    """CONTRACT.md §6: snake_case names, plain enum names, failure_reason null when none."""
    return {
        "id": msg.id,
        "submission_id": msg.submission_id,
        "team": msg.team,
        "benchmark": msg.benchmark,
        "image_ref": msg.image_ref,
        "image_digest": msg.image_digest,
        "state": pb.EvaluationState.Name(msg.state),
        "failure_reason": reason_name(msg.failure_reason),
        "failure_message": msg.failure_message,
        "status_message": msg.status_message,
        "public_metrics": metrics_json(msg.public_metrics)
        if msg.HasField("public_metrics")
        else None,
        "receipt": json_format.MessageToDict(msg.receipt) if msg.HasField("receipt") else None,
        "attempts": msg.attempts,
        "usage": {
            "wall_seconds": msg.usage.wall_seconds,
            "cpu_seconds": msg.usage.cpu_seconds,
            "peak_memory_bytes": msg.usage.peak_memory_bytes,
            "output_bytes": msg.usage.output_bytes,
            "peak_gpu_memory_bytes": msg.usage.peak_gpu_memory_bytes,
        }
        if msg.HasField("usage")
        else None,
        "limits": {
            "time_limit_seconds": msg.limits.time_limit_seconds,
            "memory_bytes": msg.limits.memory_bytes,
            "cpus": msg.limits.cpus,
            "gpus": msg.limits.gpus,
        }
        if msg.HasField("limits")
        else None,
        "created_at": msg.created_at.ToJsonString(),
        "updated_at": msg.updated_at.ToJsonString(),
    }


def message_json(msg: Any) -> dict[str, Any]:
    out: dict[str, Any] = json_format.MessageToDict(
        msg, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    return out
