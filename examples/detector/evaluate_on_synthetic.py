"""Hand check (not a test): runs the example image on synthetic sets and prints log loss per split.

Usage: .venv/bin/python examples/detector/evaluate_on_synthetic.py [--seeds 0 1 2] [--n-videos 40]
Needs the image from scripts/build_detector_image.sh. The run uses the sandbox's hardening flags.
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import log_loss, roc_auc_score

from scorer.synthetic import generate


def run_image(image: str, root: Path) -> tuple[dict[str, float], float]:
    """Runs the image on root/videos; returns its predictions and wall time in seconds."""
    names = sorted(p.name for p in (root / "videos").glob("*.mp4"))
    sample = root / "sample_submission.csv"
    sample.write_text("filename,label\n" + "".join(f"{n},0.5\n" for n in names), encoding="utf-8")
    out = root / "output"
    out.mkdir(mode=0o777)
    out.chmod(0o777)  # the image runs as nobody
    started = time.monotonic()
    subprocess.run(
        ["docker", "run", "--rm", "--network", "none", "--read-only", "--user", "65534:65534",
         "--cap-drop", "ALL", "--security-opt", "no-new-privileges", "--tmpfs", "/tmp",  # noqa: S108 (the container's tmpfs)
         "-v", f"{root / 'videos'}:/data/videos:ro",
         "-v", f"{sample}:/data/sample_submission.csv:ro", "-v", f"{out}:/output", image],
        check=True,
    )  # fmt: skip
    wall_s = time.monotonic() - started
    with (out / "submission.csv").open(newline="", encoding="utf-8") as handle:
        return {r["filename"]: float(r["label"]) for r in csv.DictReader(handle)}, wall_s


def report(seed: int, n_videos: int, image: str) -> None:
    """Generates one set, runs the image, prints metrics per split."""
    with tempfile.TemporaryDirectory() as tmp:
        root = generate(Path(tmp), n_videos=n_videos, seed=seed)
        predictions, wall_s = run_image(image, root)
        with (root / "labels.csv").open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    for split in sorted({r["split"] for r in rows}):
        chosen = [r for r in rows if r["split"] == split]
        y = np.array([r["label"] == "FAKE" for r in chosen], dtype=int)
        p = np.array([predictions[r["filename"]] for r in chosen])
        print(
            f"seed={seed} split={split} n={len(y)} log_loss={log_loss(y, p, labels=[0, 1]):.3f}"
            f" auc={roc_auc_score(y, p):.3f} wall_s={wall_s:.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--n-videos", type=int, default=40)
    parser.add_argument("--image", default="scorer-example-detector:latest")
    args = parser.parse_args()
    for seed in args.seeds:
        report(seed, args.n_videos, args.image)


if __name__ == "__main__":
    main()
