"""Helpers shared by the CLI's command modules."""

from __future__ import annotations

import json
import sys
from typing import Any, NoReturn

import click

from scorer.client import Client, ClientError, server_address
from scorer.core.units import parse_size
from scorer.v1 import scorer_pb2 as pb

TERMINAL = {pb.SUCCEEDED, pb.FAILED, pb.CANCELLED}


class Size(click.ParamType):  # type: ignore[type-arg]
    """512m, 2g or bytes."""

    name = "SIZE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        try:
            return parse_size(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def client_of(ctx: click.Context) -> Client:
    return Client(server_address(ctx.obj.get("server") if ctx.obj else None))


def fail(message: str, code: int = 2) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def emit(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, sort_keys=True))


def call(client: Client, method: Any, request: Any, *, timeout_s: float | None = None) -> Any:
    try:
        return client.call(method, request, timeout_s=timeout_s)
    except ClientError as exc:
        fail(str(exc))


def summary(ev: pb.Evaluation) -> str:
    line = f"{ev.id}  {pb.EvaluationState.Name(ev.state)}"
    if ev.failure_reason:
        line += f"  {pb.FailureReason.Name(ev.failure_reason)}: {ev.failure_message}"
    elif ev.status_message:
        line += f"  ({ev.status_message})"
    return line


def metrics_line(m: pb.SplitMetrics) -> str:
    parts = [f"n={m.n}"]
    for key in ("log_loss", "roc_auc", "average_precision", "accuracy"):
        parts.append(f"{key}={getattr(m, key):.4f}" if m.HasField(key) else f"{key}=null")
    if len(m.log_loss_ci95) == 2:
        parts.append(f"log_loss_ci95=[{m.log_loss_ci95[0]:.4f}, {m.log_loss_ci95[1]:.4f}]")
    if m.imputed:
        parts.append(f"imputed={m.imputed}")
    return " ".join(parts)
