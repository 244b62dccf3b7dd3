"""The dataset manifest, the labels CSV parser and the sample submission file."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from scorer.core.manifest import (
    DatasetError,
    Manifest,
    ManifestEntry,
    name_problem,
    parse_labels_csv,
    sample_submission_csv,
)

SALT = "5a" * 32
SHA = "0f" * 32


def _entry(name: str, label: int = 1, split: str = "public", size: int = 10) -> ManifestEntry:
    return ManifestEntry(name=name, size_bytes=size, sha256=SHA, label=label, split=split)


def _manifest() -> Manifest:
    return Manifest(
        entries=(_entry("b.mp4", 0, "private"), _entry("a.mp4", 1), _entry("c.mp4", 0)),
        salt_hex=SALT,
    )


def test_parses_labels_without_a_split_column_as_public() -> None:
    assert parse_labels_csv(b"filename,label\na.mp4,FAKE\nb.mp4,real\nc.mp4,1\nd.mp4,0\n") == {
        "a.mp4": (1, "public"),
        "b.mp4": (0, "public"),
        "c.mp4": (1, "public"),
        "d.mp4": (0, "public"),
    }


def test_parses_splits_bom_crlf_quotes_and_blank_lines() -> None:
    data = '\ufeffFileName,Label,Split\r\n"a b.mp4", Fake ,Private\r\n\r\nc.mp4,0,public\r\n'
    assert parse_labels_csv(data.encode()) == {"a b.mp4": (1, "private"), "c.mp4": (0, "public")}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"\n\n", "empty"),
        (b"filename,label\n", "no videos are listed"),
        (b"name,label\na.mp4,1\n", "line 1: the header must be"),
        (b"filename,label,split,extra\na.mp4,1,x,y\n", "line 1: the header must be"),
        (b"filename,label\na.mp4,1,public\n", "line 2: expected 2 columns, got 3"),
        (b"filename,label,split\na.mp4,1\n", "line 2: expected 3 columns, got 2"),
        (b"filename,label\na.mp4,maybe\n", "line 2: 'a.mp4': label must be FAKE, REAL, 1 or 0"),
        (b"filename,label\na.mp4,0.5\n", "label must be"),
        (b"filename,label\na.mp4,1\na.mp4,0\n", "line 3: 'a.mp4' is listed twice"),
        (b"filename,label,split\na.mp4,1,\n", "split must be"),
        (b"filename,label,split\na.mp4,1,pub lic\n", "split must be"),
        (b"filename,label\nvideos/a.mp4,1\n", "must not contain '/'"),
        (b"filename,label\n../a.mp4,1\n", "must not start with '.'"),
        (b"filename,label\n.hidden.mp4,1\n", "must not start with '.'"),
        (b"filename,label\n-rf.mp4,1\n", "must not start with '.' or '-'"),
        (b"filename,label\na.avi,1\n", "ending in '.mp4'"),
        (b"filename,label\na.MP4,1\n", "ending in '.mp4'"),
        (b"filename,label\n.mp4,1\n", "ending in '.mp4'"),
        (b"filename,label\n,1\n", "ending in '.mp4'"),
        (b'filename,label\n"a,b.mp4",1\n', "must not contain"),
        (b'filename,label\n"a""b.mp4",1\n', "must not contain"),
        (b'filename,label\n"a\nb.mp4",1\n', "control"),
        (b"filename,label\na\tb.mp4,1\n", "control"),
        (b"filename,label\na\xe2\x80\x8bb.mp4,1\n", "invisible"),  # zero-width space
        (b"filename,label\n a.mp4,1\n", "whitespace"),
        (b"filename,label\n" + b"x" * 252 + b".mp4,1\n", "at most 255 bytes"),
        (b"filename,label\na.mp4,1\n\xff.mp4,0\n", "not UTF-8"),
        (b"filename,label\na\x00.mp4,1\n", "NUL"),
        (b'filename,label\n"a.mp4,1\n', "malformed"),
    ],
)
def test_labels_csv_problems_are_reported_clearly(data: bytes, message: str) -> None:
    with pytest.raises(DatasetError, match=message):
        parse_labels_csv(data)


def test_labels_csv_lists_several_problems_at_once_but_not_all() -> None:
    rows = "".join(f"v{i}.mp4,x\n" for i in range(25))
    with pytest.raises(DatasetError) as caught:
        parse_labels_csv(("filename,label\n" + rows).encode())
    message = str(caught.value)
    assert "line 2:" in message
    assert "line 11:" in message
    assert "line 12:" not in message
    assert "(and 15 more)" in message


@pytest.mark.parametrize("name", ["a.mp4", "AAQAIFQRWN.mp4", "a b.mp4", "vidéo.mp4", "x.y.mp4"])
def test_acceptable_names(name: str) -> None:
    assert name_problem(name) is None


def test_manifest_sorts_entries_by_name() -> None:
    assert _manifest().names == ("a.mp4", "b.mp4", "c.mp4")


def test_manifest_digest_is_stable_across_order_and_serialisation() -> None:
    manifest = _manifest()
    shuffled = Manifest(entries=tuple(reversed(manifest.entries)), salt_hex=SALT)
    assert shuffled.digest == manifest.digest
    assert Manifest.from_json(manifest.to_json()) == manifest
    assert Manifest.from_json(manifest.to_json()).digest == manifest.digest
    assert len(manifest.digest) == 64


def test_manifest_digest_pins_the_known_value() -> None:
    """The digest formula is part of every receipt; changing it must be deliberate."""
    import hashlib

    body = (
        b'{"entries":[{"label":1,"name":"a.mp4","sha256":"' + SHA.encode() + b'","size_bytes":10,'
        b'"split":"public"}],"salt":"' + SALT.encode() + b'"}'
    )
    manifest = Manifest(entries=(_entry("a.mp4"),), salt_hex=SALT)
    assert manifest.digest == hashlib.sha256(body).hexdigest()


@pytest.mark.parametrize(
    "change",
    [
        {"label": 0},
        {"split": "private"},
        {"sha256": "1f" * 32},
        {"size_bytes": 11},
        {"name": "z.mp4"},
    ],
)
def test_manifest_digest_changes_with_any_field(change: dict[str, object]) -> None:
    manifest = _manifest()
    first = dataclasses.replace(manifest.entries[0], **change)  # type: ignore[arg-type]
    changed = Manifest(entries=(first, *manifest.entries[1:]), salt_hex=SALT)
    assert changed.digest != manifest.digest


def test_salt_hides_labels_from_the_digest_but_not_from_same_content() -> None:
    manifest = _manifest()
    resalted = Manifest(entries=manifest.entries, salt_hex="a5" * 32)
    assert resalted.digest != manifest.digest
    assert resalted.same_content(manifest)


def test_manifest_arrays_and_splits() -> None:
    manifest = _manifest()
    assert manifest.labels_array().tolist() == [1, 0, 0]
    assert manifest.labels_array().dtype == np.int8
    assert manifest.split_mask("private").tolist() == [False, True, False]
    assert manifest.splits == ("private", "public")
    assert manifest.videos_per_split() == {"private": 1, "public": 2}


@pytest.mark.parametrize(
    ("entries", "salt", "message"),
    [
        ((), SALT, "at least one video"),
        ((_entry("a.mp4"), _entry("a.mp4", 0)), SALT, "appears twice"),
        ((_entry("a.mp4"),), "short", "salt"),
    ],
)
def test_invalid_manifests_are_refused(
    entries: tuple[ManifestEntry, ...], salt: str, message: str
) -> None:
    with pytest.raises(DatasetError, match=message):
        Manifest(entries=entries, salt_hex=salt)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"name": "../x.mp4"}, "file name"),
        ({"label": 2}, "label must be"),
        ({"label": True}, "label must be"),
        ({"sha256": "xyz"}, "malformed"),
        ({"size_bytes": -1}, "malformed"),
        ({"split": "Public"}, "not a valid split"),
    ],
)
def test_invalid_entries_are_refused(fields: dict[str, object], message: str) -> None:
    base: dict[str, object] = {
        "name": "a.mp4",
        "size_bytes": 1,
        "sha256": SHA,
        "label": 1,
        "split": "public",
    }
    with pytest.raises(DatasetError, match=message):
        ManifestEntry(**{**base, **fields})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "data", [b"not json", b'{"version":2,"salt":"","entries":[]}', b'{"version":1}', b"[]"]
)
def test_malformed_stored_manifest_is_a_dataset_error(data: bytes) -> None:
    with pytest.raises(DatasetError):
        Manifest.from_json(data)


def test_sample_submission_has_every_name_once_at_one_half() -> None:
    assert sample_submission_csv(["b.mp4", "a.mp4"]) == b"filename,label\nb.mp4,0.5\na.mp4,0.5\n"


def test_sample_submission_quotes_per_rfc4180() -> None:
    data = sample_submission_csv(['odd,"name".mp4'])
    assert data == b'filename,label\n"odd,""name"".mp4",0.5\n'
    assert list(csv.reader(io.StringIO(data.decode()))) == [
        ["filename", "label"],
        ['odd,"name".mp4', "0.5"],
    ]


def test_sample_submission_refuses_duplicates() -> None:
    with pytest.raises(ValueError, match="twice"):
        sample_submission_csv(["a.mp4", "a.mp4"])


@given(
    st.binary(max_size=300)
    | st.text(max_size=200).map(lambda body: ("filename,label,split\n" + body).encode())
)
def test_parser_raises_only_dataset_errors(data: bytes) -> None:
    """Whatever the bytes, the organizer gets a DatasetError, never a crash."""
    with contextlib.suppress(DatasetError):
        parse_labels_csv(data)


_NAMES = (
    st.text(min_size=1, max_size=20)
    .map(lambda s: s + ".mp4")
    .filter(lambda n: name_problem(n) is None)
)


@given(
    st.dictionaries(
        _NAMES,
        st.tuples(st.sampled_from([0, 1]), st.sampled_from(["public", "private"])),
        min_size=1,
    )
)
def test_labels_csv_round_trips(labels: dict[str, tuple[int, str]]) -> None:
    """A labels CSV written by the csv module parses back to the same labels."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["filename", "label", "split"])
    for name, (label, split) in labels.items():
        writer.writerow([name, "FAKE" if label else "REAL", split])
    assert parse_labels_csv(out.getvalue().encode()) == labels


@given(st.lists(_NAMES, unique=True, min_size=1))
def test_sample_submission_parses_back_to_the_names(names: list[str]) -> None:
    rows = list(csv.reader(io.StringIO(sample_submission_csv(names).decode(), newline="")))
    assert rows[0] == ["filename", "label"]
    assert [row[0] for row in rows[1:]] == names
    assert {row[1] for row in rows[1:]} == {"0.5"}
