"""The synthetic demo dataset: balanced, split, label-blind names and metadata, real H.264."""

from __future__ import annotations

import csv
import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scorer.synthetic import ClipSpec, Label, Split, generate, plan, render

NAME = re.compile(r"[a-z]{10}\.mp4")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(tmp_path_factory.mktemp("synthetic"), n_videos=12, seed=7)


def read_labels(root: Path) -> list[dict[str, str]]:
    with (root / "labels.csv").open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def ffprobe(path: Path) -> dict[str, object]:
    result = subprocess.run(
        ["ffprobe", "-v", "error", "-print_format", "json", "-show_format", "-show_streams",
         str(path)],
        capture_output=True, check=True,
    )  # fmt: skip
    probed: dict[str, object] = json.loads(result.stdout)
    return probed


@settings(max_examples=60, deadline=None)
@given(
    n_videos=st.integers(min_value=4, max_value=80),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
    private_fraction=st.floats(min_value=0.05, max_value=0.95),
)
def test_plan_is_balanced_with_both_classes_in_both_splits(
    n_videos: int, seed: int, private_fraction: float
) -> None:
    specs = plan(n_videos=n_videos, seed=seed, private_fraction=private_fraction)
    labels = [s.label for s in specs]
    assert len(specs) == n_videos
    assert labels.count(Label.FAKE) == n_videos // 2
    assert {(s.label, s.split) for s in specs} == {(lb, sp) for lb in Label for sp in Split}
    assert len({s.filename for s in specs}) == n_videos
    assert all(NAME.fullmatch(s.filename) for s in specs)
    assert all((s.strength > 0) == (s.label is Label.FAKE) for s in specs)


def test_plan_is_deterministic_per_seed_and_differs_across_seeds() -> None:
    """Same seed, same plan; another seed, other names."""
    first = plan(n_videos=40, seed=3, private_fraction=0.5)
    assert first == plan(n_videos=40, seed=3, private_fraction=0.5)
    other = plan(n_videos=40, seed=4, private_fraction=0.5)
    assert {s.filename for s in first}.isdisjoint({s.filename for s in other})


def test_name_order_carries_no_label_information() -> None:
    """Pooled over many plans, FAKE is as common among the alphabetically first half as overall."""
    early_fake = early = 0
    for seed in range(300):
        specs = plan(n_videos=20, seed=seed, private_fraction=0.5)
        ordered = sorted(specs, key=lambda s: s.filename)
        early_fake += sum(s.label is Label.FAKE for s in ordered[:10])
        early += 10
    # 3000 draws: a fair share is 0.5 +- 0.009 (1 sd); a leak through names would be far off.
    assert abs(early_fake / early - 0.5) < 0.04


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_videos": 3}, "n_videos"),
        ({"private_fraction": 0.0}, "private_fraction"),
        ({"private_fraction": 1.0}, "private_fraction"),
        ({"size": 33}, "even size"),
        ({"frames": 4}, "frames"),
    ],
)
def test_generate_refuses_impossible_requests(
    tmp_path: Path, kwargs: dict[str, float], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        generate(tmp_path, **kwargs)  # type: ignore[arg-type]


def test_labels_file_matches_videos(dataset: Path) -> None:
    """One labels row per video file, header `filename,label,split`, FAKE/REAL, public/private."""
    rows = read_labels(dataset)
    assert (dataset / "labels.csv").read_text(encoding="utf-8").startswith("filename,label,split\n")
    files = sorted(p.name for p in (dataset / "videos").iterdir())
    assert sorted(r["filename"] for r in rows) == files
    assert {r["label"] for r in rows} == {"FAKE", "REAL"}
    assert {r["split"] for r in rows} == {"public", "private"}
    assert [r["label"] for r in rows].count("FAKE") == 6


def test_videos_are_h264_with_the_requested_shape(dataset: Path) -> None:
    for path in (dataset / "videos").iterdir():
        stream = ffprobe(path)["streams"][0]  # type: ignore[index]
        assert stream["codec_name"] == "h264"
        assert (stream["width"], stream["height"], stream["nb_frames"]) == (96, 96, "24")


def test_files_carry_no_per_clip_metadata(dataset: Path) -> None:
    """Container tags and mtimes are identical for every clip; no encoder settings, no label."""
    paths = sorted((dataset / "videos").iterdir())
    tags = set()
    for path in paths:
        probed = ffprobe(path)
        stream_tags = probed["streams"][0].get("tags", {})  # type: ignore[index]
        tags.add(json.dumps([probed["format"].get("tags", {}), stream_tags], sort_keys=True))  # type: ignore[attr-defined]
        data = path.read_bytes()
        assert b"options:" not in data  # x264's SEI string: version and every encoder setting
        assert not re.search(rb"fake|real", data, re.IGNORECASE)
    assert len(tags) == 1
    assert len({p.stat().st_mtime for p in paths}) == 1


def test_generation_is_reproducible(dataset: Path, tmp_path: Path) -> None:
    """The same seed gives the same labels file and byte-identical clips (same ffmpeg build)."""
    again = generate(tmp_path, n_videos=12, seed=7)
    assert (again / "labels.csv").read_bytes() == (dataset / "labels.csv").read_bytes()
    for path in (dataset / "videos").iterdir():
        assert (again / "videos" / path.name).read_bytes() == path.read_bytes()


def block_flicker(video: np.ndarray) -> float:
    """The strongest RMS temporal second difference of an 8x8 block's mean brightness."""
    t, h, w = video.shape
    blocks = video.astype(np.float64).reshape(t, h // 8, 8, w // 8, 8).mean(axis=(2, 4))
    blocks -= np.median(blocks, axis=(1, 2), keepdims=True)
    second = blocks[2:] - 2 * blocks[1:-1] + blocks[:-2]
    return float(np.sqrt((second**2).mean(axis=0)).max())


def test_fakes_carry_a_temporal_artefact_that_reals_lack() -> None:
    """Rendered with the same content seed, a fake flickers locally far more than its real twin."""
    for content_seed in range(8):
        real = ClipSpec(filename="x.mp4", label=Label.REAL, split=Split.PUBLIC,
                        content_seed=content_seed, strength=0.0)  # fmt: skip
        fake = ClipSpec(filename="x.mp4", label=Label.FAKE, split=Split.PUBLIC,
                        content_seed=content_seed, strength=0.8)  # fmt: skip
        assert block_flicker(render(fake, frames=24, size=96)) > 2 * block_flicker(
            render(real, frames=24, size=96)
        )
