"""The `scorer` command line (CONTRACT.md §6). Exit codes: 0 ok, 1 evaluation failed, 2 usage."""

from __future__ import annotations

from pathlib import Path

import click

from scorer import __version__, convert
from scorer.cli_common import Size, client_of, emit, fail
from scorer.cli_common import call as _call
from scorer.v1 import scorer_pb2 as pb


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="scorer")
@click.option(
    "--server",
    envvar="SCORER_SERVER",
    default=None,
    help="gRPC address of the service (default 127.0.0.1:50051).",
)
@click.pass_context
def main(ctx: click.Context, server: str | None) -> None:
    """scorer: run participants' images against hidden videos and return sealed scores."""
    ctx.ensure_object(dict)
    ctx.obj["server"] = server


@main.command()
@click.option(
    "--config",
    "config_file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="TOML configuration file.",
)
@click.option("--listen", help="gRPC listen address (default 127.0.0.1:50051).")
@click.option("--metrics-listen", help="Prometheus address (default 127.0.0.1:9464).")
@click.option(
    "--state-dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="State folder (default ~/.local/share/scorer).",
)
@click.option("--runtime", type=click.Choice(["runc", "runsc"]), help="OCI runtime.")
@click.option("--log-level", envvar="SCORER_LOG_LEVEL", default="INFO", show_default=True)
def serve(
    config_file: Path | None,
    listen: str | None,
    metrics_listen: str | None,
    state_dir: Path | None,
    runtime: str | None,
    log_level: str,
) -> None:
    """Run the service (loopback and embedded SQLite unless configured otherwise)."""
    from scorer.app import serve as run
    from scorer.config import load_config
    from scorer.telemetry import configure_logging

    try:
        config = load_config(
            config_file,
            listen=listen,
            metrics_listen=metrics_listen,
            state_dir=state_dir,
            runtime=runtime,
        )
    except ValueError as exc:
        fail(str(exc))
    configure_logging(log_level.upper())
    run(config)


# --- organizer commands ---------------------------------------------------------------------


@main.group()
def dataset() -> None:
    """Register and verify hidden datasets."""


@dataset.command("add")
@click.argument("name")
@click.option(
    "--videos", required=True, type=click.Path(path_type=Path, file_okay=False, exists=True)
)
@click.option(
    "--labels", required=True, type=click.Path(path_type=Path, dir_okay=False, exists=True)
)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def dataset_add(ctx: click.Context, name: str, videos: Path, labels: Path, as_json: bool) -> None:
    """Register VIDEOS (in place, no copy) with LABELS (filename,label[,split])."""
    request = pb.AddDatasetRequest(
        name=name, videos_dir=str(videos.resolve()), labels_csv=labels.read_bytes()
    )
    with client_of(ctx) as client:
        reply = _call(client, client.admin.AddDataset, request, timeout_s=3600)
    if as_json:
        emit(convert.message_json(reply))
    else:
        splits = ", ".join(f"{k}={v}" for k, v in sorted(reply.videos_per_split.items()))
        click.echo(
            f"dataset {reply.name}: {reply.num_videos} videos ({splits}), "
            f"manifest sha256:{reply.manifest_digest}"
        )


@dataset.command("verify")
@click.argument("name")
@click.pass_context
def dataset_verify(ctx: click.Context, name: str) -> None:
    """Re-hash every file of dataset NAME against its manifest."""
    with client_of(ctx) as client:
        reply = _call(
            client,
            client.admin.VerifyDataset,
            pb.VerifyDatasetRequest(name=name),
            timeout_s=24 * 3600,
        )
    if reply.ok:
        click.echo(f"dataset {name}: every file matches its manifest")
        return
    for problem in reply.problems:
        click.echo(f"  {problem}", err=True)
    fail(f"dataset {name} does not match its manifest", 1)


@main.group()
def benchmark() -> None:
    """Define what submissions run against, and under which limits."""


@benchmark.command("add")
@click.argument("name")
@click.option("--dataset", "dataset_name", required=True)
@click.option("--time-limit-seconds", type=click.FloatRange(min=0, min_open=True), default=3600)
@click.option("--memory", type=Size(), default="4g", show_default=True)
@click.option("--cpus", type=click.FloatRange(min=0, min_open=True), default=1.0)
@click.option("--gpus", type=click.IntRange(min=0), default=0)
@click.option("--missing-predictions", type=click.Choice(["fail", "impute"]), default="fail")
@click.option(
    "--organizer-public-key", type=click.Path(path_type=Path, dir_okay=False, exists=True)
)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def benchmark_add(
    ctx: click.Context,
    name: str,
    dataset_name: str,
    time_limit_seconds: float,
    memory: int,
    cpus: float,
    gpus: int,
    missing_predictions: str,
    organizer_public_key: Path | None,
    as_json: bool,
) -> None:
    """Define benchmark NAME on a dataset; a name never changes its definition."""
    from scorer.core.receipt import ReceiptError
    from scorer.receipts import read_organizer_public_key

    key = b""
    if organizer_public_key is not None:
        try:
            key = read_organizer_public_key(organizer_public_key)
        except (ReceiptError, ValueError) as exc:
            fail(str(exc))
    request = pb.AddBenchmarkRequest(
        name=name,
        dataset=dataset_name,
        limits=pb.Limits(
            time_limit_seconds=time_limit_seconds, memory_bytes=memory, cpus=cpus, gpus=gpus
        ),
        missing_predictions=pb.IMPUTE if missing_predictions == "impute" else pb.FAIL,
        organizer_public_key=key,
    )
    with client_of(ctx) as client:
        reply = _call(client, client.admin.AddBenchmark, request)
    if as_json:
        emit(convert.message_json(reply))
    else:
        click.echo(
            f"benchmark {reply.name} on {reply.dataset}: {time_limit_seconds:g} s, "
            f"{memory} bytes, {cpus:g} CPUs, {gpus} GPUs, missing={missing_predictions}, "
            f"private metrics {'sealed' if key else 'withheld'}"
        )


from scorer.cli_evaluations import register as _register_evaluations  # noqa: E402
from scorer.cli_images import register as _register_images  # noqa: E402
from scorer.cli_local import register as _register_local  # noqa: E402

_register_evaluations(main)
_register_local(main)
_register_images(main)
