"""Overhead of the service around one trivial evaluation, against a bare `docker run`.

Measures, alternating in the same run (this machine is noisy):
  bare:     `docker run --rm --network none IMAGE` of a trivial busybox image (CLI, wall time);
  service:  SubmitEvaluation -> WatchEvaluation reports SUCCEEDED with its receipt stored, for the
            same image, through a real `scorer serve` (gRPC, SQLite, hardened sandbox, scoring,
            signing). Target: median(service) / median(bare) <= 1.5.

Run: .venv/bin/python bench/bench_overhead.py [--runs 15]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sandbox.images import build_busybox_image
from scorer.client import Client
from scorer.v1 import scorer_pb2 as pb
from tests.integration.service_process import ServiceProcess

TAG = "scorer-bench/trivial:latest"
SCRIPT = 'cp /data/sample_submission.csv "${SCORER_SUBMISSION_PATH:-/tmp/x}" 2>/dev/null || true\n'


def bare_run() -> float:
    t0 = time.perf_counter()
    subprocess.run(
        ["docker", "run", "--rm", "--network", "none", TAG], check=True, capture_output=True
    )
    return time.perf_counter() - t0


def service_run(client: Client) -> float:
    t0 = time.perf_counter()
    reply = client.submit(
        submission_id=f"bench-{uuid.uuid4().hex}", benchmark="bench", team="bench", image=TAG
    )
    for event in client.watch(reply.evaluation.id):
        if event.evaluation.state in (pb.SUCCEEDED, pb.FAILED, pb.CANCELLED):
            elapsed = time.perf_counter() - t0
            if event.evaluation.state != pb.SUCCEEDED:
                raise SystemExit(f"evaluation ended {event.evaluation}")
            return elapsed
    raise SystemExit("watch ended early")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    build_busybox_image(TAG, SCRIPT, labels={"scorer.bench": "1"})
    with tempfile.TemporaryDirectory(prefix="scorer-bench-") as tmp:
        root = Path(tmp)
        root.chmod(0o755)
        videos = root / "videos"
        videos.mkdir(mode=0o755)
        for i in range(10):
            (videos / f"v{i}.mp4").write_bytes(b"x" * 1000)
            (videos / f"v{i}.mp4").chmod(0o644)
        labels = root / "labels.csv"
        labels.write_text("filename,label\n" + "".join(f"v{i}.mp4,{i % 2}\n" for i in range(10)))
        svc = ServiceProcess(root / "state", root / "serve.log")
        svc.start()
        try:
            svc.cli(
                "dataset", "add", "d", "--videos", str(videos), "--labels", str(labels), check=True
            )
            svc.cli(
                "benchmark",
                "add",
                "bench",
                "--dataset",
                "d",
                "--memory",
                "256m",
                "--time-limit-seconds",
                "60",
                check=True,
            )
            with Client(svc.address) as client:
                service_run(client)  # warm-up: imports, first container of the image
                bare_run()
                bare, service = [], []
                for _ in range(args.runs):
                    bare.append(bare_run())
                    service.append(service_run(client))
        finally:
            svc.stop()
    b, s = statistics.median(bare), statistics.median(service)
    print(f"{'':32}{'median s':>10}{'p10 s':>9}{'p90 s':>9}")
    for name, xs in (("bare docker run --rm", bare), ("service submit->SUCCEEDED", service)):
        q = statistics.quantiles(xs, n=10)
        print(f"{name:32}{statistics.median(xs):10.3f}{q[0]:9.3f}{q[-1]:9.3f}")
    verdict = "meets" if s / b <= 1.5 else "MISSES"
    print(
        f"overhead ratio service/bare = {s / b:.2f}x ({verdict} the 1.5x target; {args.runs} runs)"
    )


if __name__ == "__main__":
    main()
