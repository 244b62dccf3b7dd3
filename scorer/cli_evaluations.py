"""CLI: the evaluation lifecycle over gRPC, keys, and offline receipt verification."""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path
from typing import Any

import click

from scorer import convert
from scorer.cli_common import TERMINAL, call, client_of, emit, fail, metrics_line, summary
from scorer.client import Client, ClientError, file_sha256
from scorer.v1 import scorer_pb2 as pb


def _follow(client: Client, evaluation_id: str, *, quiet: bool) -> pb.Evaluation:
    """Stream state changes to stderr until terminal; return the final evaluation."""
    last: pb.Evaluation | None = None
    try:
        for event in client.watch(evaluation_id):
            last = event.evaluation
            if not quiet:
                state = pb.EvaluationState.Name(last.state)
                click.echo(
                    f"[{event.at.ToDatetime():%H:%M:%S}] {state:<9} {event.message}", err=True
                )
            if last.state in TERMINAL:
                break
    except ClientError as exc:
        fail(str(exc))
    return client.get(evaluation_id) if last is None or last.state in TERMINAL else last


def _report(ev: pb.Evaluation, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(convert.evaluation_json(ev), sort_keys=True))
        return
    click.echo(summary(ev))
    if ev.HasField("public_metrics"):
        click.echo(f"  public: {metrics_line(ev.public_metrics)}")


def _exit_for(ev: pb.Evaluation) -> None:
    sys.exit(0 if ev.state == pb.SUCCEEDED else 1)


def _image_of(client: Client, image: str | None, image_file: Path | None, quiet: bool) -> str:
    """The reference to submit: IMAGE, or the digest of IMAGE_FILE once uploaded; a refused
    upload is still submitted (as upload:sha256:<hex>) and ends FAILED IMAGE_REJECTED."""
    if (image is None) == (image_file is None):
        fail("give exactly one of --image and --image-file")
    if image_file is None:
        return str(image)
    from scorer.cli_images import upload_file

    try:
        reply = upload_file(client, image_file, image_file.name, quiet=quiet)
    except ClientError as exc:
        if (
            exc.code is None
            or exc.code.name != "INVALID_ARGUMENT"
            or "image rejected" not in str(exc)
        ):
            fail(f"upload failed: {exc}")
        click.echo(f"upload refused: {exc}", err=True)
        return f"upload:sha256:{file_sha256(image_file)[1]}"
    click.echo(f"uploaded {image_file.name} as {reply.image_digest}", err=True)
    return str(reply.image_digest)


@click.command()
@click.option("--image", help="A tag or id in the service's engine.")
@click.option(
    "--image-file",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="A `docker save` tarball (.tar, .tar.gz, .tar.zst) to upload first.",
)
@click.option("--benchmark", "benchmark_name", required=True)
@click.option("--team", required=True)
@click.option("--submission-id", default=None, help="Idempotency key (default: a new random one).")
@click.option("--wait", is_flag=True, help="Follow to the end; exit 1 unless SUCCEEDED.")
@click.option("--json", "as_json", is_flag=True, help="Print the evaluation as JSON.")
@click.pass_context
def submit(
    ctx: click.Context,
    image: str | None,
    image_file: Path | None,
    benchmark_name: str,
    team: str,
    submission_id: str | None,
    wait: bool,
    as_json: bool,
) -> None:
    """Submit IMAGE (pinned to its digest at submission), or upload IMAGE_FILE and submit it."""
    with client_of(ctx) as client:
        image = _image_of(client, image, image_file, as_json)
        reply = call(
            client,
            client.evaluations.SubmitEvaluation,
            pb.SubmitEvaluationRequest(
                submission_id=submission_id or f"cli-{uuid.uuid4().hex}",
                benchmark=benchmark_name,
                team=team,
                image=image,
            ),
        )
        ev = reply.evaluation
        if not reply.created:
            click.echo(f"submission already known: {ev.id}", err=True)
        if wait:
            ev = _follow(client, ev.id, quiet=False)
    _report(ev, as_json)
    if wait:
        _exit_for(ev)


@click.command()
@click.argument("evaluation_id")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def status(ctx: click.Context, evaluation_id: str, as_json: bool) -> None:
    """Show one evaluation."""
    with client_of(ctx) as client:
        ev = call(
            client, client.evaluations.GetEvaluation, pb.GetEvaluationRequest(id=evaluation_id)
        )
    _report(ev, as_json)


@click.command()
@click.argument("evaluation_id")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def watch(ctx: click.Context, evaluation_id: str, as_json: bool) -> None:
    """Follow an evaluation until it ends; exit 1 unless SUCCEEDED."""
    with client_of(ctx) as client:
        ev = _follow(client, evaluation_id, quiet=False)
    _report(ev, as_json)
    _exit_for(ev)


@click.command()
@click.argument("evaluation_id")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def cancel(ctx: click.Context, evaluation_id: str, as_json: bool) -> None:
    """Cancel an evaluation in any non-terminal state (a running container is killed)."""
    with client_of(ctx) as client:
        ev = call(
            client,
            client.evaluations.CancelEvaluation,
            pb.CancelEvaluationRequest(id=evaluation_id),
        )
    _report(ev, as_json)


@click.command("list")
@click.option("--team", default="")
@click.option("--benchmark", "benchmark_name", default="")
@click.option(
    "--state",
    type=click.Choice([pb.EvaluationState.Name(v) for v in pb.EvaluationState.values() if v]),
)
@click.option("--limit", type=click.IntRange(1, 10_000), default=100)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def list_(
    ctx: click.Context,
    team: str,
    benchmark_name: str,
    state: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """List evaluations, oldest first."""
    rows: list[pb.Evaluation] = []
    token = ""
    with client_of(ctx) as client:
        while len(rows) < limit:
            reply = call(
                client,
                client.evaluations.ListEvaluations,
                pb.ListEvaluationsRequest(
                    team=team,
                    benchmark=benchmark_name,
                    page_token=token,
                    state=pb.EvaluationState.Value(state)
                    if state
                    else pb.EVALUATION_STATE_UNSPECIFIED,
                    page_size=min(500, limit - len(rows)),
                ),
            )
            rows.extend(reply.evaluations)
            token = reply.next_page_token
            if not token:
                break
    if as_json:
        click.echo(json.dumps([convert.evaluation_json(e) for e in rows], sort_keys=True))
        return
    for ev in rows:
        click.echo(f"{summary(ev)}  team={ev.team} benchmark={ev.benchmark}")


@click.group()
def keys() -> None:
    """Receipt-signing and organizer keys."""


@keys.command("public")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def keys_public(ctx: click.Context, as_json: bool) -> None:
    """Print the service's receipt-signing public key (PEM)."""
    with client_of(ctx) as client:
        key = call(client, client.audit.GetPublicKey, pb.GetPublicKeyRequest())
    if as_json:
        emit(
            {
                "keyid": key.keyid,
                "algorithm": key.algorithm,
                "public_key_pem": key.public_key_pem,
            }
        )
    else:
        click.echo(key.public_key_pem, nl=not key.public_key_pem.endswith("\n"))


@keys.command("organizer")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path, file_okay=False))
def keys_organizer(out_dir: Path) -> None:
    """Create an X25519 key pair for sealing private-split metrics."""
    from scorer.receipts import write_organizer_keypair

    private, public = write_organizer_keypair(out_dir)
    click.echo(f"private key: {private} (keep it secret)\npublic key:  {public}")


@click.command()
@click.argument("receipt", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option(
    "--public-key", required=True, type=click.Path(path_type=Path, dir_okay=False, exists=True)
)
@click.option(
    "--organizer-private-key",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="Also open the sealed private-split metrics and check their commitment.",
)
@click.option("--json", "as_json", is_flag=True)
def verify(
    receipt: Path, public_key: Path, organizer_private_key: Path | None, as_json: bool
) -> None:
    """Verify RECEIPT offline; exit 0 only if it is valid."""
    _verify(receipt, public_key, organizer_private_key, as_json)


def register(main: click.Group) -> None:
    for command in (submit, status, watch, cancel, list_, keys, verify):
        main.add_command(command)


def _verify(receipt: Path, public_key: Path, organizer_key: Path | None, as_json: bool) -> None:
    from scorer.core.receipt import ReceiptError
    from scorer.receipts import open_sealed_metrics, read_organizer_private_key, verify_envelope

    try:
        envelope = json.loads(receipt.read_text(encoding="utf-8"))
        if isinstance(envelope, dict) and "receipt" in envelope and "payload" not in envelope:
            envelope = envelope["receipt"]  # accept `scorer submit --json` output too
        statement = verify_envelope(envelope, public_key.read_bytes())
        predicate: Any = statement["predicate"]
        revealed = None
        if organizer_key is not None:
            sealed = predicate.get("sealed_metrics")
            if not sealed:
                fail("this receipt carries no sealed metrics", 1)
            revealed = open_sealed_metrics(sealed, read_organizer_private_key(organizer_key))
    except (ReceiptError, ValueError, KeyError, TypeError, OSError) as exc:
        fail(f"receipt is NOT valid: {exc}", 1)
    if as_json:
        emit({"valid": True, "statement": statement, "revealed_metrics": revealed})
        return
    subject = statement["subject"][0]  # type: ignore[index]
    outcome = predicate.get("outcome", {})
    click.echo(f"receipt is valid: {subject['name']} sha256:{subject['digest']['sha256']}")
    click.echo(
        f"  evaluation {predicate.get('evaluation_id')} team={predicate.get('team')} "
        f"benchmark={predicate.get('benchmark')}: {outcome.get('state')}"
        + (f" {outcome['failure_reason']}" if outcome.get("failure_reason") else "")
    )
    if predicate.get("public_metrics"):
        click.echo(f"  public metrics: {json.dumps(predicate['public_metrics'], sort_keys=True)}")
    if revealed is not None:
        click.echo(
            f"  private metrics (commitment checked): {json.dumps(revealed, sort_keys=True)}"
        )
