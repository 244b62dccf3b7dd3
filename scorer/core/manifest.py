"""A hidden dataset's manifest: file names, sizes, hashes, labels and splits; the labels CSV parser.

Pure: bytes and values in, values out. Messages here are organizer-facing and may name files.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import re
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import numpy.typing as npt

from scorer.core.receipt import canonical_json, is_sha256_hex, sha256_hex

FAKE: Final = 1
REAL: Final = 0
DEFAULT_SPLIT: Final = "public"
MAX_NAME_BYTES: Final = 255
MAX_REPORTED_PROBLEMS: Final = 10
MANIFEST_VERSION: Final = 1

_LABELS: Final = {"fake": FAKE, "1": FAKE, "real": REAL, "0": REAL}
_SPLIT = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
# Characters that would break a naive `line.split(",")` reader of the sample CSV, or a shell.
_FORBIDDEN_IN_NAME: Final = frozenset('/\\,"')


class DatasetError(Exception):
    """A dataset that cannot be registered or no longer matches its manifest (organizer-facing)."""


def _invisible(name: str) -> bool:
    # Cs: surrogates, which is how os.scandir spells bytes that are not UTF-8.
    return any(unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Zl", "Zp") for ch in name)


# Checked in order; the first rule a name breaks is the one reported.
_NAME_RULES: Final[tuple[tuple[Callable[[str], bool], str], ...]] = (
    (lambda n: not n.endswith(".mp4") or n == ".mp4", "must be a plain file name ending in '.mp4'"),
    (lambda n: n.startswith((".", "-")), "must not start with '.' or '-'"),
    (lambda n: n != n.strip(), "must not start or end with whitespace"),
    (
        lambda n: any(ch in _FORBIDDEN_IN_NAME for ch in n),
        "must not contain '/', '\\', ',' or '\"'",
    ),
    (_invisible, "must be UTF-8 with no control or invisible formatting characters"),
    (lambda n: len(n.encode("utf-8")) > MAX_NAME_BYTES, f"must be at most {MAX_NAME_BYTES} bytes"),
)


def name_problem(name: str) -> str | None:
    """Why `name` is not an acceptable hidden-video file name, or None if it is."""
    return next((message for broken, message in _NAME_RULES if broken(name)), None)


@dataclass(frozen=True, slots=True, kw_only=True)
class ManifestEntry:
    name: str
    size_bytes: int
    sha256: str
    label: int  # 1 FAKE, 0 REAL
    split: str

    def __post_init__(self) -> None:
        problem = name_problem(self.name)
        if problem is not None:
            raise DatasetError(f"{self.name!r}: the file name {problem}")
        if self.size_bytes < 0 or not is_sha256_hex(self.sha256):
            raise DatasetError(f"{self.name!r}: size or sha256 is malformed")
        if self.label not in (FAKE, REAL) or isinstance(self.label, bool):
            raise DatasetError(f"{self.name!r}: label must be 1 (FAKE) or 0 (REAL)")
        if _SPLIT.fullmatch(self.split) is None:
            raise DatasetError(f"{self.name!r}: split {self.split!r} is not a valid split name")

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "size_bytes": self.size_bytes,
            "sha256": self.sha256,
            "label": self.label,
            "split": self.split,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Manifest:
    """Entries sorted by name, plus a secret salt that keeps the public digest label-blind.

    `digest` = hex sha256 of `canonical_json({"entries": [...], "salt": salt_hex})`. Without the
    salt, anyone who can hash the videos (a participant's container can) could brute-force the
    labels of a small dataset from the digest published in every receipt.
    """

    entries: tuple[ManifestEntry, ...]
    salt_hex: str
    digest: str = field(init=False)

    def __post_init__(self) -> None:
        ordered = tuple(sorted(self.entries, key=lambda entry: entry.name))
        for before, after in itertools.pairwise(ordered):
            if before.name == after.name:
                raise DatasetError(f"{after.name!r} appears twice in the manifest")
        if not ordered:
            raise DatasetError("a dataset needs at least one video")
        if not is_sha256_hex(self.salt_hex):
            raise DatasetError("the manifest salt must be 64 lowercase hex characters")
        object.__setattr__(self, "entries", ordered)
        body = {"entries": [entry.to_dict() for entry in ordered], "salt": self.salt_hex}
        object.__setattr__(self, "digest", sha256_hex(canonical_json(body)))

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(entry.name for entry in self.entries)

    @property
    def splits(self) -> tuple[str, ...]:
        """The distinct split names, sorted."""
        return tuple(sorted({entry.split for entry in self.entries}))

    def videos_per_split(self) -> dict[str, int]:
        counts = dict.fromkeys(self.splits, 0)
        for entry in self.entries:
            counts[entry.split] += 1
        return counts

    def labels_array(self) -> npt.NDArray[np.int8]:
        """Labels (1 FAKE, 0 REAL) in `names` order."""
        return np.fromiter((entry.label for entry in self.entries), dtype=np.int8)

    def split_mask(self, split: str) -> npt.NDArray[np.bool_]:
        """True where the video in `names` order belongs to `split`."""
        return np.fromiter((entry.split == split for entry in self.entries), dtype=np.bool_)

    def same_content(self, other: Manifest) -> bool:
        """The same files, labels and splits, whatever the salts."""
        return self.entries == other.entries

    def to_json(self) -> bytes:
        body = {
            "version": MANIFEST_VERSION,
            "salt": self.salt_hex,
            "entries": [entry.to_dict() for entry in self.entries],
        }
        return canonical_json(body)

    @classmethod
    def from_json(cls, data: bytes | str) -> Manifest:
        try:
            body = json.loads(data)
            if body.get("version") != MANIFEST_VERSION:
                raise DatasetError(f"unsupported manifest version {body.get('version')!r}")
            entries = tuple(ManifestEntry(**item) for item in body["entries"])
            return cls(entries=entries, salt_hex=body["salt"])
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise DatasetError(f"the stored manifest is malformed: {exc}") from exc


def parse_labels_csv(data: bytes) -> dict[str, tuple[int, str]]:
    """`filename,label[,split]` rows to {name: (label, split)}, in file order.

    UTF-8 with or without BOM, LF or CRLF, RFC 4180 quoting; header names are case-insensitive;
    label is FAKE/REAL (any case) or 1/0; without a split column every video is `public`.
    Blank lines are skipped. Raises DatasetError listing the first problems with line numbers.
    """
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DatasetError(f"the labels CSV is not UTF-8 (byte {exc.start})") from exc
    if "\x00" in text:
        raise DatasetError("the labels CSV contains a NUL byte")
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        rows = [(reader.line_num, row) for row in reader if row]
    except csv.Error as exc:
        line = reader.line_num
        raise DatasetError(f"the labels CSV is malformed near line {line}: {exc}") from exc
    if not rows:
        raise DatasetError("the labels CSV is empty; expected a header 'filename,label[,split]'")
    has_split = _check_header(rows[0][1])
    parsed: dict[str, tuple[int, str]] = {}
    problems: list[str] = []
    for line, row in rows[1:]:
        problem = _parse_row(row, has_split=has_split, seen=parsed)
        if problem is not None:
            problems.append(f"line {line}: {problem}")
    if not parsed and not problems:
        problems.append("no videos are listed")
    if problems:
        raise DatasetError(summarise("the labels CSV has problems", problems))
    return parsed


def _check_header(header: list[str]) -> bool:
    names = [cell.strip().lower() for cell in header]
    if names == ["filename", "label"]:
        return False
    if names == ["filename", "label", "split"]:
        return True
    raise DatasetError(
        f"line 1: the header must be 'filename,label' or 'filename,label,split', got {header!r}"
    )


def _parse_row(row: list[str], *, has_split: bool, seen: dict[str, tuple[int, str]]) -> str | None:
    """Add the row to `seen`, or say what is wrong with it."""
    width = 3 if has_split else 2
    if len(row) != width:
        return f"expected {width} columns, got {len(row)}"
    name, raw_label = row[0], row[1].strip().lower()
    problem = name_problem(name)
    if problem is not None:
        return f"{name!r}: the file name {problem}"
    if name in seen:
        return f"{name!r} is listed twice"
    if raw_label not in _LABELS:
        return f"{name!r}: label must be FAKE, REAL, 1 or 0, got {row[1]!r}"
    split = row[2].strip().lower() if has_split else DEFAULT_SPLIT
    if _SPLIT.fullmatch(split) is None:
        return f"{name!r}: split must be 1-64 of a-z, 0-9, '_' or '-', got {row[2]!r}"
    seen[name] = (_LABELS[raw_label], split)
    return None


def sample_submission_csv(names: Iterable[str]) -> bytes:
    """The participant's `sample_submission.csv`: header `filename,label`, each name with 0.5.

    LF line endings; RFC 4180 quoting where a name needs it (validated names never do).
    """
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
    writer.writerow(["filename", "label"])
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ValueError(f"{name!r} appears twice")
        seen.add(name)
        writer.writerow([name, "0.5"])
    return out.getvalue().encode("utf-8")


def summarise(headline: str, problems: list[str]) -> str:
    """`headline: p1; p2; ... (and N more)`, with at most MAX_REPORTED_PROBLEMS listed."""
    shown = "; ".join(problems[:MAX_REPORTED_PROBLEMS])
    extra = len(problems) - MAX_REPORTED_PROBLEMS
    return f"{headline}: {shown}" + (f" (and {extra} more)" if extra > 0 else "")
