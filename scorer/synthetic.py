"""Synthetic hidden dataset for the demo: tiny H.264 clips of a drawn "face", half of them faked.

A fake pastes a face from another source over the face with a seam and a per-frame flicker and
jitter (a temporal artefact a frame-decoding detector can pick up); a real has none of it.
"""

from __future__ import annotations

import csv
import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

Frames = NDArray[np.float32]  # (frames, height, width), gray levels 0..255

# A fixed timestamp for every clip, so modification times cannot order clips by label.
_FIXED_MTIME_S = 946_684_800
_NAME_LENGTH = 10
_FPS = 24


class Label(StrEnum):
    FAKE = "FAKE"
    REAL = "REAL"


class Split(StrEnum):
    PUBLIC = "public"
    PRIVATE = "private"


@dataclass(frozen=True, slots=True, kw_only=True)
class ClipSpec:
    """One clip to render: its public name, hidden label and split, and its content seed."""

    filename: str
    label: Label
    split: Split
    content_seed: int
    # 0 for reals; for fakes in (0, 1], how visible the paste is (many fakes are subtle).
    strength: float


def plan(*, n_videos: int, seed: int, private_fraction: float) -> tuple[ClipSpec, ...]:
    """Decides names, labels, splits and artefact strengths: half FAKE, stratified splits."""
    if n_videos < 4:
        raise ValueError("n_videos must be at least 4 (both classes in both splits)")
    if not 0.0 < private_fraction < 1.0:
        raise ValueError("private_fraction must be strictly between 0 and 1")
    rng = np.random.default_rng([seed, 0x5C0E])
    n_fake = n_videos // 2
    rows: list[tuple[Label, Split]] = []
    for label, count in ((Label.FAKE, n_fake), (Label.REAL, n_videos - n_fake)):
        n_private = min(count - 1, max(1, round(private_fraction * count)))
        rows += [(label, Split.PRIVATE)] * n_private + [(label, Split.PUBLIC)] * (count - n_private)
    order = rng.permutation(len(rows))
    names = _random_names(rng, len(rows))
    seeds = rng.integers(0, 2**32, size=len(rows))
    strengths = rng.uniform(0.0, 1.0, size=len(rows))
    return tuple(
        ClipSpec(
            filename=names[i],
            label=rows[k][0],
            split=rows[k][1],
            content_seed=int(seeds[i]),
            strength=float(strengths[i]) if rows[k][0] is Label.FAKE else 0.0,
        )
        for i, k in enumerate(order)
    )


def _random_names(rng: np.random.Generator, count: int) -> list[str]:
    """Draws unique `<10 lowercase letters>.mp4` names, independent of everything else."""
    names: list[str] = []
    while len(names) < count:
        letters = rng.integers(ord("a"), ord("z") + 1, size=_NAME_LENGTH)
        name = "".join(map(chr, letters)) + ".mp4"
        if name not in names:
            names.append(name)
    return names


def render(spec: ClipSpec, *, frames: int, size: int) -> NDArray[np.uint8]:
    """Draws one clip: panning background, a moving face, sensor noise; the paste if FAKE."""
    rng = np.random.default_rng(spec.content_seed)
    t = np.arange(frames, dtype=np.float32)[:, None, None]
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    video = _background(rng, t, yy, xx)
    pose = _face_pose(rng, t, size)
    face_mask = _ellipse_mask(pose, yy, xx, radius_scale=1.0, feather_px=1.5)
    video = video * (1 - face_mask) + _face(rng, pose, yy, xx) * face_mask
    if spec.label is Label.FAKE:
        video = _paste_foreign_face(rng, video, pose, yy, xx, spec.strength)
    # Whole-frame exposure drift and sensor noise hit reals and fakes alike.
    video *= 1 + np.float32(rng.uniform(0, 0.02)) * rng.standard_normal((frames, 1, 1), np.float32)
    video += np.float32(rng.uniform(1.0, 5.0)) * rng.standard_normal(video.shape, np.float32)
    return np.clip(np.rint(video), 0, 255).astype(np.uint8)


def _background(rng: np.random.Generator, t: Frames, yy: Frames, xx: Frames) -> Frames:
    """A few slowly panning sinusoidal gratings around a random mean brightness."""
    velocity = rng.uniform(-0.5, 0.5, size=2)
    y, x = yy - velocity[0] * t, xx - velocity[1] * t
    out = np.full(np.broadcast_shapes(y.shape, x.shape), rng.uniform(60, 160), np.float32)
    for _ in range(3):
        theta, freq = rng.uniform(0, np.pi), rng.uniform(0.02, 0.09)
        phase = rng.uniform(0, 2 * np.pi)
        out += rng.uniform(8, 30) * np.sin(
            2 * np.pi * freq * (np.cos(theta) * x + np.sin(theta) * y) + phase
        )
    return out


@dataclass(frozen=True, slots=True, kw_only=True)
class _Pose:
    """Per-frame face centre (arrays shaped (frames, 1, 1)) and fixed radii, in pixels."""

    cy: Frames
    cx: Frames
    ry: float
    rx: float


def _face_pose(rng: np.random.Generator, t: Frames, size: int) -> _Pose:
    """A smooth path: slow drift plus a gentle sway, so the face's motion has no jerks."""
    rx = float(rng.uniform(0.15, 0.21) * size)
    ry = rx * float(rng.uniform(1.15, 1.35))
    start = rng.uniform(0.4, 0.6, size=2) * size
    drift = rng.uniform(-0.3, 0.3, size=2)
    sway, omega, phase = rng.uniform(0, 2.5), rng.uniform(0.1, 0.3), rng.uniform(0, 2 * np.pi)
    cy = start[0] + drift[0] * t
    cx = start[1] + drift[1] * t + sway * np.sin(omega * t + phase)
    return _Pose(cy=cy.astype(np.float32), cx=cx.astype(np.float32), ry=ry, rx=rx)


def _ellipse_mask(
    pose: _Pose, yy: Frames, xx: Frames, *, radius_scale: float, feather_px: float
) -> Frames:
    """Soft ellipse mask: 1 inside, 0 outside, a sigmoid edge `feather_px` wide."""
    r = np.sqrt(((yy - pose.cy) / pose.ry) ** 2 + ((xx - pose.cx) / pose.rx) ** 2)
    edge_px = (radius_scale - r) * min(pose.rx, pose.ry)
    return (1 / (1 + np.exp(-edge_px / max(feather_px, 1e-3)))).astype(np.float32)


def _face(rng: np.random.Generator, pose: _Pose, yy: Frames, xx: Frames) -> Frames:
    """A shaded oval with dark eyes and mouth, drawn in the face's own coordinates."""
    u, v = (xx - pose.cx) / pose.rx, (yy - pose.cy) / pose.ry
    skin = rng.uniform(110, 210) + rng.uniform(-25, 25) * u + rng.uniform(-15, 15) * v
    features = np.zeros_like(u)
    # (centre u, centre v, half-width u, half-height v) of the left eye, right eye and mouth.
    parts = ((-0.4, -0.25, 0.14, 0.09), (0.4, -0.25, 0.14, 0.09), (0.0, 0.45, 0.3, 0.07))
    for fu, fv, su, sv in parts:
        features += np.exp(-(((u - fu) / su) ** 2 + ((v - fv) / sv) ** 2))
    return (skin - rng.uniform(50, 90) * features).astype(np.float32)


def _paste_foreign_face(
    rng: np.random.Generator,
    video: Frames,
    pose: _Pose,
    yy: Frames,
    xx: Frames,
    strength: float,
) -> Frames:
    """Blends another face over the inner face, misaligned and re-exposed every frame."""
    frames = video.shape[0]
    jitter_px = strength * 1.2 * rng.standard_normal((2, frames, 1, 1)).astype(np.float32)
    shaky = _Pose(cy=pose.cy + jitter_px[0], cx=pose.cx + jitter_px[1], ry=pose.ry, rx=pose.rx)
    source = _face(rng, shaky, yy, xx)
    # Per-frame exposure mismatch of the pasted patch: the flicker a detector can pick up.
    flicker = strength * rng.uniform(2.0, 7.0) * rng.standard_normal((frames, 1, 1))
    # Stronger fakes also get a harder seam and a larger brightness mismatch.
    offset = strength * rng.uniform(-15, 15)
    mask = _ellipse_mask(shaky, yy, xx, radius_scale=0.85, feather_px=4.0 - 3.0 * strength)
    return (video * (1 - mask) + (source + flicker + offset) * mask).astype(np.float32)


def encode(video: NDArray[np.uint8], path: Path) -> None:
    """Encodes gray frames to H.264 MP4 with no metadata and no x264 settings (SEI) string."""
    _, height, width = video.shape
    command = [
        "ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
        "-f", "rawvideo", "-pix_fmt", "gray", "-s", f"{width}x{height}", "-r", str(_FPS),
        "-i", "pipe:0", "-an", "-map_metadata", "-1",
        "-c:v", "libx264", "-preset", "veryfast", "-crf", "20", "-pix_fmt", "yuv420p",
        "-threads", "1",
        # SEI NAL units (type 6) carry x264's version and settings: drop them.
        "-bsf:v", "filter_units=remove_types=6",
        "-fflags", "+bitexact", "-flags:v", "+bitexact",
        str(path),
    ]  # fmt: skip
    result = subprocess.run(command, input=video.tobytes(), capture_output=True, check=False)
    if result.returncode != 0:
        detail = result.stderr.decode(errors="replace")
        raise RuntimeError(f"ffmpeg failed on {path.name}: {detail}")
    os.utime(path, (_FIXED_MTIME_S, _FIXED_MTIME_S))


def write_labels(specs: tuple[ClipSpec, ...], path: Path) -> None:
    """Writes `filename,label,split`, rows sorted by file name."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["filename", "label", "split"])
        for spec in sorted(specs, key=lambda s: s.filename):
            writer.writerow([spec.filename, spec.label.value, spec.split.value])


def generate(
    out_dir: Path,
    *,
    n_videos: int = 40,
    seed: int = 0,
    private_fraction: float = 0.5,
    frames: int = 24,
    size: int = 96,
) -> Path:
    """Writes `out_dir/videos/*.mp4` and `out_dir/labels.csv`; returns `out_dir`."""
    if frames < 8 or size < 32 or size % 2:
        raise ValueError("need frames >= 8 and an even size >= 32")
    specs = plan(n_videos=n_videos, seed=seed, private_fraction=private_fraction)
    videos_dir = out_dir / "videos"
    videos_dir.mkdir(parents=True, exist_ok=True)

    def render_and_encode(spec: ClipSpec) -> None:
        encode(render(spec, frames=frames, size=size), videos_dir / spec.filename)

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        list(pool.map(render_and_encode, specs))
    write_labels(specs, out_dir / "labels.csv")
    return out_dir
