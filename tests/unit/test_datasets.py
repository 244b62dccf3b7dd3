"""Registering hidden datasets in place, and the quick and full integrity checks."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from scorer.core.manifest import DatasetError
from scorer.datasets import (
    FileStats,
    build_manifest,
    full_verify,
    quick_check,
    refresh_stats,
)

CONTENT = {"a.mp4": b"fake video A", "b.mp4": b"real video B!", "c.mp4": b"x" * (5 << 19)}
LABELS = b"filename,label,split\na.mp4,FAKE,public\nb.mp4,REAL,private\nc.mp4,1,public\n"


@pytest.fixture
def videos(tmp_path: Path) -> Path:
    folder = tmp_path / "videos"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    for name, data in CONTENT.items():
        path = folder / name
        path.write_bytes(data)
        path.chmod(0o644)
    return folder


def test_build_manifest_hashes_and_labels_every_video(videos: Path) -> None:
    manifest, stats = build_manifest(videos, LABELS)
    assert manifest.names == ("a.mp4", "b.mp4", "c.mp4")
    assert [e.sha256 for e in manifest.entries] == [
        hashlib.sha256(CONTENT[n]).hexdigest() for n in manifest.names
    ]
    assert [e.size_bytes for e in manifest.entries] == [len(CONTENT[n]) for n in manifest.names]
    assert manifest.labels_array().tolist() == [1, 0, 1]
    assert manifest.videos_per_split() == {"private": 1, "public": 2}
    assert set(stats.files) == set(CONTENT)
    assert stats.files["c.mp4"].size_bytes == len(CONTENT["c.mp4"])
    assert stats.files["a.mp4"].inode == (videos / "a.mp4").stat().st_ino


def test_a_fresh_registration_passes_both_checks(videos: Path) -> None:
    manifest, stats = build_manifest(videos, LABELS)
    assert quick_check(videos, manifest, stats) == []
    assert full_verify(videos, manifest) == []


def test_registering_twice_gives_the_same_content_but_a_new_salted_digest(videos: Path) -> None:
    first, _ = build_manifest(videos, LABELS)
    second, _ = build_manifest(videos, LABELS)
    assert first.same_content(second)
    assert first.digest != second.digest


def _unlabelled(folder: Path) -> None:
    (folder / "d.mp4").write_bytes(b"d")


def _stray_labels(folder: Path) -> None:
    (folder / "labels.csv").write_bytes(LABELS)


def _subfolder(folder: Path) -> None:
    (folder / "extra").mkdir()


def _hidden_file(folder: Path) -> None:
    (folder / ".DS_Store").write_bytes(b"")


def _symlinked_video(folder: Path) -> None:
    target = folder.parent / "elsewhere.mp4"
    target.write_bytes(CONTENT["a.mp4"])
    (folder / "a.mp4").unlink()
    (folder / "a.mp4").symlink_to(target)


def _labelled_folder(folder: Path) -> None:
    (folder / "a.mp4").unlink()
    (folder / "a.mp4").mkdir()


def _missing_video(folder: Path) -> None:
    (folder / "b.mp4").unlink()


def _private_video(folder: Path) -> None:
    (folder / "b.mp4").chmod(0o600)


def _private_folder(folder: Path) -> None:
    folder.chmod(0o700)


@pytest.mark.parametrize(
    ("spoil", "message"),
    [
        (_unlabelled, "'d.mp4': unexpected entry"),
        (_stray_labels, "'labels.csv': unexpected entry"),
        (_subfolder, "'extra': unexpected entry"),
        (_hidden_file, "'.DS_Store': unexpected entry"),
        (_symlinked_video, "a.mp4: not a regular file"),
        (_labelled_folder, "a.mp4: not a regular file"),
        (_missing_video, "b.mp4: labelled but missing"),
        (_private_video, r"b.mp4: must be readable by others \(chmod o\+r\)"),
        (_private_folder, r"must be listable by others \(chmod o\+rx\)"),
    ],
)
def test_registration_refuses_a_folder_that_is_not_exactly_the_labelled_videos(
    videos: Path, spoil: Callable[[Path], None], message: str
) -> None:
    spoil(videos)
    with pytest.raises(DatasetError, match=message):
        build_manifest(videos, LABELS)


def test_registration_lists_the_first_problems_and_counts_the_rest(videos: Path) -> None:
    for i in range(30):
        (videos / f"extra{i:02}.mp4").write_bytes(b"")
    with pytest.raises(DatasetError) as caught:
        build_manifest(videos, LABELS)
    assert "'extra00.mp4'" in str(caught.value)
    assert "(and 20 more)" in str(caught.value)


def test_registration_of_a_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="cannot be listed"):
        build_manifest(tmp_path / "nope", LABELS)
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(DatasetError, match="is not a folder"):
        build_manifest(tmp_path / "file", LABELS)


def test_registration_passes_labels_csv_errors_through(videos: Path) -> None:
    with pytest.raises(DatasetError, match="label must be"):
        build_manifest(videos, b"filename,label\na.mp4,perhaps\n")


def _grow(path: Path) -> None:
    with path.open("ab") as handle:
        handle.write(b"more")


def _touch(path: Path) -> None:
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


def _replace_keeping_size_and_mtime(path: Path) -> None:
    st = path.stat()
    fresh = path.with_name("new.tmp")
    fresh.write_bytes(b"X" * st.st_size)
    fresh.chmod(0o644)
    os.utime(fresh, ns=(st.st_atime_ns, st.st_mtime_ns))
    fresh.replace(path)


def _remove(path: Path) -> None:
    path.unlink()


def _unreadable(path: Path) -> None:
    path.chmod(0o600)


def _swap_for_symlink(path: Path) -> None:
    target = path.with_name("..target")
    path.rename(target)
    path.symlink_to(target.name)


@pytest.mark.parametrize(
    ("spoil", "message"),
    [
        (_grow, "a.mp4: size changed from 12 to 16 bytes"),
        (_touch, r"a.mp4: modified \(mtime changed\)"),
        (_replace_keeping_size_and_mtime, r"a.mp4: replaced by another file \(new inode\)"),
        (_remove, "a.mp4: labelled but missing"),
        (_unreadable, "a.mp4: .*changed"),  # chmod moves ctime first; mode is checked last
        (_swap_for_symlink, "a.mp4: not a regular file"),
    ],
)
def test_quick_check_detects_changes_to_a_registered_video(
    videos: Path, spoil: Callable[[Path], None], message: str
) -> None:
    manifest, stats = build_manifest(videos, LABELS)
    spoil(videos / "a.mp4")
    problems = quick_check(videos, manifest, stats)
    assert any(re.search(message, p) for p in problems), problems


def test_quick_check_detects_an_added_file(videos: Path) -> None:
    manifest, stats = build_manifest(videos, LABELS)
    (videos / "z.mp4").write_bytes(b"new")
    assert quick_check(videos, manifest, stats) == [
        "'z.mp4': unexpected entry; the folder may hold only labelled videos"
    ]


def test_quick_check_reports_a_missing_folder_once(videos: Path) -> None:
    manifest, stats = build_manifest(videos, LABELS)
    for path in videos.iterdir():
        path.unlink()
    videos.rmdir()
    problems = quick_check(videos, manifest, stats)
    assert len(problems) == 1
    assert "cannot be listed" in problems[0]


def test_quick_check_flags_a_name_it_has_no_stats_for(videos: Path) -> None:
    manifest, stats = build_manifest(videos, LABELS)
    partial = FileStats(files={k: v for k, v in stats.files.items() if k != "b.mp4"})
    assert quick_check(videos, manifest, partial) == [
        "b.mp4: has no registration stats; run a full verification"
    ]


def _rewrite_same_size_same_mtime(path: Path) -> None:
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[0] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)


def test_full_verify_detects_same_size_same_mtime_content_change(videos: Path) -> None:
    manifest, _ = build_manifest(videos, LABELS)
    _rewrite_same_size_same_mtime(videos / "c.mp4")
    assert full_verify(videos, manifest) == ["c.mp4: content differs from the registered sha256"]


def test_quick_check_catches_an_in_place_rewrite_through_ctime(videos: Path) -> None:
    """Restoring the mtime cannot restore the ctime, so the cheap check sees it too."""
    manifest, stats = build_manifest(videos, LABELS)
    _rewrite_same_size_same_mtime(videos / "a.mp4")
    assert quick_check(videos, manifest, stats) == [
        "a.mp4: content or metadata changed (ctime changed)"
    ]


def test_full_verify_reports_missing_and_extra_files(videos: Path) -> None:
    manifest, _ = build_manifest(videos, LABELS)
    (videos / "b.mp4").unlink()
    (videos / "z.mp4").write_bytes(b"")
    assert full_verify(videos, manifest) == [
        "b.mp4: labelled but missing from the folder",
        "'z.mp4': unexpected entry; the folder may hold only labelled videos",
    ]


def test_full_verify_detects_a_file_made_unreadable_to_containers(videos: Path) -> None:
    manifest, _ = build_manifest(videos, LABELS)
    (videos / "a.mp4").chmod(0o640)
    assert full_verify(videos, manifest) == ["a.mp4: no longer readable by others (chmod o+r)"]


def test_refresh_stats_clears_a_harmless_metadata_change(videos: Path) -> None:
    manifest, stats = build_manifest(videos, LABELS)
    (videos / "a.mp4").chmod(0o664)
    assert quick_check(videos, manifest, stats) != []
    problems, fresh = refresh_stats(videos, manifest)
    assert problems == []
    assert quick_check(videos, manifest, fresh) == []


def test_file_stats_round_trip_through_json(videos: Path) -> None:
    _, stats = build_manifest(videos, LABELS)
    assert FileStats.from_json(stats.to_json()) == stats
    assert FileStats.from_json(stats.to_json().decode()) == stats


@pytest.mark.parametrize("data", [b"nope", b"[]", b'{"a.mp4": {"size_bytes": 1}}'])
def test_malformed_file_stats_are_a_dataset_error(data: bytes) -> None:
    with pytest.raises(DatasetError, match="malformed"):
        FileStats.from_json(data)
