"""Example deepfake detector for scorer: a template for participants' images.

Decodes every /data/videos/*.mp4, scores a temporal-flicker heuristic (face-swap pastes tend to
flicker against their surroundings from frame to frame) and writes P(FAKE) per video to
/output/submission.csv. No training, no labels: the score-to-probability mapping is hand-set.
"""

from __future__ import annotations

import csv
import math
import os
import sys
import time
from pathlib import Path

import av  # PyAV (Debian's python3-av): FFmpeg's decoders, in process
import numpy as np

# --- The container contract (see the scorer's CONTRACT.md, section 1) ---------------------
VIDEOS_DIR = Path(os.environ.get("SCORER_VIDEOS_DIR", "/data/videos"))
SAMPLE_PATH = Path("/data/sample_submission.csv")  # lists every video once, label 0.5
SUBMISSION_PATH = Path(os.environ.get("SCORER_SUBMISSION_PATH", "/output/submission.csv"))

# --- The heuristic's knobs ----------------------------------------------------------------
BLOCK_PX = 8  # frames are averaged over BLOCK_PX x BLOCK_PX blocks before looking at time
TOP_BLOCKS = 4  # the artefact is local: compare the few most flickery blocks to the typical one
MAX_FRAMES = 64  # enough frames to see flicker; keeps long videos cheap
# Hand-set mapping from log(flicker ratio) to P(FAKE): a logistic curve centred between the
# ratios seen on untouched clips (~0.5) and on pasted ones (~1.5), with a gentle slope.
MIDPOINT = 0.95
SLOPE = 3.0
# Never be certain: log loss punishes a confident mistake without bound.
P_MIN, P_MAX = 0.05, 0.95


def decode_gray(path: Path, max_frames: int = MAX_FRAMES) -> np.ndarray:
    """Returns up to `max_frames` decoded frames as a float32 array (frames, height, width)."""
    frames = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # let FFmpeg use the CPUs the sandbox grants
        for frame in container.decode(stream):
            frames.append(frame.to_ndarray(format="gray"))
            if len(frames) >= max_frames:
                break
    return np.asarray(frames, dtype=np.float32)


def flicker_score(frames: np.ndarray) -> float:
    """log(flicker of the most flickery blocks / flicker of the median block).

    Flicker is the RMS temporal second difference of a block's mean brightness: smooth motion
    and slow lighting changes have almost none; a patch re-exposed every frame has a lot.
    """
    if frames.shape[0] < 3:
        return 0.0
    t, h, w = frames.shape
    hb, wb = h // BLOCK_PX, w // BLOCK_PX
    blocks = frames[:, : hb * BLOCK_PX, : wb * BLOCK_PX]
    blocks = blocks.reshape(t, hb, BLOCK_PX, wb, BLOCK_PX).mean(axis=(2, 4))
    # Whole-frame exposure changes are camera behaviour, not manipulation: remove them.
    blocks -= np.median(blocks, axis=(1, 2), keepdims=True)
    second_diff = blocks[2:] - 2 * blocks[1:-1] + blocks[:-2]
    energy = np.sqrt(np.mean(second_diff**2, axis=0)).ravel()
    top = np.sort(energy)[-TOP_BLOCKS:].mean()
    return float(np.log((top + 1e-3) / (np.median(energy) + 1e-3)))


def probability_fake(score: float) -> float:
    """Maps a flicker score to a clipped P(FAKE)."""
    p = 1.0 / (1.0 + math.exp(-SLOPE * (score - MIDPOINT)))
    return min(P_MAX, max(P_MIN, p))


def predict(path: Path) -> float:
    """P(FAKE) for one video; 0.5 (the uninformed guess) if it cannot be decoded."""
    try:
        return probability_fake(flicker_score(decode_gray(path)))
    except (av.error.FFmpegError, OSError, ValueError) as error:
        print(f"could not score {path.name}: {error}", file=sys.stderr)
        return 0.5


def video_names() -> list[str]:
    """The names to predict: the sample submission's, else every .mp4 in the folder."""
    if SAMPLE_PATH.is_file():
        with SAMPLE_PATH.open(newline="", encoding="utf-8-sig") as handle:
            return [row["filename"] for row in csv.DictReader(handle)]
    return sorted(p.name for p in VIDEOS_DIR.glob("*.mp4"))


def main() -> int:
    started = time.monotonic()
    names = video_names()
    # Write to a temporary file and rename, so a run cut short never leaves half a CSV.
    partial = SUBMISSION_PATH.with_name(SUBMISSION_PATH.name + ".partial")
    with partial.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["filename", "label"])
        for name in names:
            writer.writerow([name, f"{predict(VIDEOS_DIR / name):.6f}"])
    partial.replace(SUBMISSION_PATH)
    print(f"scored {len(names)} videos in {time.monotonic() - started:.1f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
