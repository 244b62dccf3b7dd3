"""Local parity: run a participant's image through the same sandbox and judge as the service."""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sandbox import ExecutorError, ImageNotFoundError, Limits, RunSpec
from sandbox.docker_executor import DockerExecutor, DockerExecutorConfig
from scorer.config import SandboxDefaults
from scorer.core.judge import AppliedLimits, judge
from scorer.core.manifest import name_problem, sample_submission_csv
from scorer.core.predictions import MissingPolicy
from scorer.runner import facts_of, wait_with_deadline


@dataclass(frozen=True, slots=True, kw_only=True)
class LocalVerdict:
    ok: bool
    summary: str


def video_names(videos: Path) -> list[str]:
    names = sorted(p.name for p in videos.iterdir() if p.suffix == ".mp4" and p.is_file())
    for name in names:
        problem = name_problem(name)
        if problem:
            raise ValueError(f"{name}: {problem}")
    if not names:
        raise ValueError(f"no .mp4 files in {videos}")
    return names


def try_image(
    *,
    image: str,
    videos: Path,
    time_limit_s: float,
    memory_bytes: int,
    cpus: float,
    impute: bool,
    runtime: str,
    echo: Callable[[str], None],
) -> LocalVerdict:
    defaults = SandboxDefaults()
    try:
        names = video_names(videos)
    except ValueError as exc:
        return LocalVerdict(ok=False, summary=f"cannot run: {exc}")
    with tempfile.TemporaryDirectory(prefix="scorer-try-") as tmp:
        executor = DockerExecutor(
            DockerExecutorConfig(runtime=runtime, work_dir=Path(tmp) / "mounts")
        )
        try:
            info = executor.resolve_image(image)
        except ImageNotFoundError:
            return LocalVerdict(ok=False, summary=f"image {image} is not in your Docker engine")
        except ExecutorError as exc:
            return LocalVerdict(ok=False, summary=f"the Docker engine is unavailable: {exc}")
        sample = Path(tmp) / "sample_submission.csv"
        sample.write_bytes(sample_submission_csv(names))
        sample.chmod(0o444)
        Path(tmp).chmod(0o755)
        limits = Limits(
            time_limit_s=time_limit_s,
            memory_bytes=memory_bytes,
            cpus=cpus,
            pids=defaults.pids,
            tmp_bytes=defaults.tmp_bytes,
            output_bytes=defaults.output_bytes,
            shm_bytes=defaults.shm_bytes,
            log_bytes=defaults.log_bytes,
        )
        spec = RunSpec(
            image_id=info.id,
            videos_dir=videos,
            sample_submission=sample,
            limits=limits,
            env={
                "SCORER_VIDEOS_DIR": "/data/videos",
                "SCORER_SUBMISSION_PATH": "/output/submission.csv",
                "SCORER_TIME_LIMIT_SECONDS": f"{time_limit_s:g}",
                "SCORER_NUM_VIDEOS": str(len(names)),
            },
            labels={"scorer.try": "1"},
        )
        echo(
            f"running {image} ({info.id[:19]}) on {len(names)} videos, "
            f"limit {time_limit_s:g} s, no network..."
        )
        try:
            handle = executor.submit(spec)
        except ExecutorError as exc:
            hint = (
                ""
                if os.geteuid() == 0
                else (
                    " (the sandbox mounts a size-capped tmpfs for /output, as the service does: "
                    "run scorer try as root, e.g. with sudo)"
                )
            )
            return LocalVerdict(ok=False, summary=f"could not start the sandbox: {exc}{hint}")
        try:
            timed_out = wait_with_deadline(
                executor, handle, time.monotonic() + time_limit_s, lambda: False
            )
        finally:
            result = executor.collect(handle)
    if result.logs:
        echo("--- your image's output (last lines) ---")
        echo(result.logs[-4000:].decode("utf-8", "replace").rstrip())
        echo("---")
    facts = facts_of(result, timed_out=timed_out)
    verdict = judge(
        facts,
        result.output,
        names,
        missing=MissingPolicy.IMPUTE if impute else MissingPolicy.FAIL,
        limits=AppliedLimits(
            time_limit_s=time_limit_s, memory_bytes=memory_bytes, output_bytes=limits.output_bytes
        ),
    )
    usage = f"wall {result.wall_time_s:.2f} s" + (
        f", peak memory {result.peak_memory_bytes / 2**20:.0f} MiB"
        if result.peak_memory_bytes
        else ""
    )
    if verdict.reason is None:
        return LocalVerdict(
            ok=True,
            summary=f"the service would accept this run: "
            f"{verdict.message} ({len(names)} videos; {usage})",
        )
    return LocalVerdict(
        ok=False,
        summary=f"the service would say FAILED {verdict.reason.value}: {verdict.message} ({usage})",
    )
