"""CLI: `scorer try` (local parity, no service) and `scorer demo` (the main job end to end)."""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import click

from scorer.cli_common import Size, fail


def register(main: click.Group) -> None:
    @main.command("try")
    @click.option("--image", required=True, help="Your image: a tag or id in your local engine.")
    @click.option(
        "--videos", required=True, type=click.Path(path_type=Path, file_okay=False, exists=True)
    )
    @click.option(
        "--time-limit-seconds",
        type=click.FloatRange(min=0, min_open=True),
        default=600,
        show_default=True,
    )
    @click.option("--memory", type=Size(), default="4g", show_default=True)
    @click.option(
        "--cpus", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True
    )
    @click.option("--missing-predictions", type=click.Choice(["fail", "impute"]), default="fail")
    @click.option("--runtime", type=click.Choice(["runc", "runsc"]), default="runc")
    def try_(
        image: str,
        videos: Path,
        time_limit_seconds: float,
        memory: int,
        cpus: float,
        missing_predictions: str,
        runtime: str,
    ) -> None:
        """Run IMAGE in the very same sandbox and validation on your own videos, no service."""
        from scorer.local import try_image

        verdict = try_image(
            image=image,
            videos=videos.resolve(),
            time_limit_s=time_limit_seconds,
            memory_bytes=memory,
            cpus=cpus,
            impute=missing_predictions == "impute",
            runtime=runtime,
            echo=lambda line: click.echo(line, err=True),
        )
        click.echo(verdict.summary)
        sys.exit(0 if verdict.ok else 1)

    @main.command()
    @click.option(
        "--image",
        default="scorer-example-detector:latest",
        show_default=True,
        help="The participant image to evaluate (build it with make demo).",
    )
    @click.option(
        "--workdir",
        type=click.Path(path_type=Path, file_okay=False),
        help="Where the demo keeps its data (default: a new temporary folder).",
    )
    @click.option(
        "--videos", "n_videos", type=click.IntRange(4, 10_000), default=40, show_default=True
    )
    def demo(image: str, workdir: Path | None, n_videos: int) -> None:
        """Synthetic hidden set, a service on loopback, a submission over gRPC, a sealed receipt."""
        from scorer.demo import run_demo

        started = time.monotonic()
        folder = workdir or Path(tempfile.mkdtemp(prefix="scorer-demo-"))
        try:
            ok = run_demo(image=image, workdir=folder, n_videos=n_videos)
        except RuntimeError as exc:
            fail(str(exc), 1)
        click.echo(
            f"demo {'passed' if ok else 'FAILED'} in {time.monotonic() - started:.1f} s "
            f"(files in {folder})"
        )
        sys.exit(0 if ok else 1)
