"""Self-test before serving (DMOJ's run_self_test): a known image must run in the real sandbox,
with no network, and produce the expected output, before health says SERVING."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from sandbox import ExecutorError, Limits, RunSpec
from sandbox.executor import Executor, OutputFileStatus
from sandbox.images import build_busybox_image
from scorer import __version__
from scorer.config import ServiceConfig

SELF_TEST_TAG = f"scorer-selftest:{__version__}"
# Echo the sample back, and prove the network is absent: only `lo` may exist.
SELF_TEST_SCRIPT = """
set -eu
for dev in /sys/class/net/*; do [ "$(basename "$dev")" = lo ] || { echo "net: $dev"; exit 3; }; done
cp /data/sample_submission.csv "$SCORER_SUBMISSION_PATH"
"""


def run_self_test(executor: Executor, config: ServiceConfig) -> str | None:
    """None when the sandbox works; otherwise what went wrong, for the operators."""
    try:
        image_id = build_busybox_image(
            SELF_TEST_TAG, SELF_TEST_SCRIPT, labels={"scorer.selftest": "1"}
        )
    except ExecutorError as exc:
        return f"cannot build the self-test image: {exc}"
    with tempfile.TemporaryDirectory(prefix="scorer-selftest-") as tmp:
        videos = Path(tmp) / "videos"
        videos.mkdir()
        (videos / "a.mp4").write_bytes(b"not a real video")
        sample = Path(tmp) / "sample_submission.csv"
        expected = b"filename,label\na.mp4,0.5\n"
        sample.write_bytes(expected)
        for path in (Path(tmp), videos):
            path.chmod(0o755)
        for path in (sample, videos / "a.mp4"):
            path.chmod(0o444)
        spec = RunSpec(
            image_id=image_id,
            videos_dir=videos,
            sample_submission=sample,
            limits=Limits(
                time_limit_s=30,
                memory_bytes=64 * 1024**2,
                cpus=1.0,
                pids=64,
                tmp_bytes=1024**2,
                output_bytes=1024**2,
                shm_bytes=1024**2,
            ),
            env={"SCORER_SUBMISSION_PATH": "/output/submission.csv"},
            labels={"scorer.selftest": "1"},
            name=f"scorer-selftest-{int(time.time())}",
        )
        try:
            handle = executor.submit(spec)
            if not executor.observe(handle, 30).exited:
                executor.cancel(handle)
            result = executor.collect(handle)
        except ExecutorError as exc:
            return f"the sandbox failed: {exc}"
    if result.exit_code != 0:
        return f"the self-test image exited {result.exit_code}: {result.logs[-500:]!r}"
    if result.output_status is not OutputFileStatus.OK or result.output != expected:
        return f"the self-test output was {result.output_status.value}, not the expected file"
    return None
