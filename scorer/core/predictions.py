"""Strict parsing and validation of a participant's submission.csv (CONTRACT.md §2).

Messages say which rule broke and how many rows, with 1-based line numbers at most: they never
echo a file name or a value from the file, so nothing hidden can leak back through them.
"""

from __future__ import annotations

import csv
import enum
import io
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

HEADER = ("filename", "label")
# Plain decimal or scientific notation; no nan/inf, hex, underscores or signs other than one '-'.
_NUMBER = re.compile(r"^-?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$")


class MissingPolicy(enum.Enum):
    FAIL = "FAIL"
    IMPUTE = "IMPUTE"


class PredictionsError(Exception):
    """A rule of the predictions format broke; `message` is safe to show the participant."""

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.rule = rule
        self.message = message


@dataclass(frozen=True, slots=True, kw_only=True)
class Predictions:
    probabilities: npt.NDArray[np.float64]  # aligned with the `expected` names
    imputed: int


def _rows(n: int) -> str:
    return f"{n} row{'s' if n != 1 else ''}"


def _decode(data: bytes) -> str:
    if not data.strip():
        raise PredictionsError("empty_file", "the file is empty; expected a header filename,label")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PredictionsError(
            "not_utf8", f"the file is not valid UTF-8 (first bad byte at offset {exc.start})"
        ) from None
    return text.removeprefix("\ufeff")


def _read(text: str, limit: int) -> tuple[list[list[str]], list[int]]:
    """Rows and their 1-based line numbers; blank lines are skipped."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    rows: list[list[str]] = []
    lines: list[int] = []
    try:
        for row in reader:
            if not row or row == [""]:
                continue
            rows.append(row)
            lines.append(reader.line_num)
            if len(rows) > limit:
                raise PredictionsError(
                    "too_many_rows", f"the file has more than {limit - 1} data rows"
                )
    except csv.Error:
        raise PredictionsError(
            "malformed_csv", f"the file is not valid CSV (RFC 4180) near line {reader.line_num}"
        ) from None
    return rows, lines


def parse_predictions(
    data: bytes, expected: Sequence[str], *, missing: MissingPolicy = MissingPolicy.FAIL
) -> Predictions:
    """Validate `data` against the hidden names `expected`; return probabilities in that order."""
    rows, lines = _read(_decode(data), limit=len(expected) * 2 + 2)
    if not rows or len(rows[0]) != 2 or tuple(c.strip() for c in rows[0]) != HEADER:
        raise PredictionsError("bad_header", "the first line must be exactly: filename,label")
    index = {name: i for i, name in enumerate(expected)}
    values = [math.nan] * len(expected)
    seen = bytearray(len(expected))
    problems: dict[str, list[int]] = {}
    match, isfinite = _NUMBER.match, math.isfinite
    for row, line in zip(rows[1:], lines[1:], strict=True):
        rule = None
        if len(row) != 2:
            rule = "wrong_columns"
        elif (position := index.get(row[0])) is None:
            rule = "unknown_names"
        elif seen[position]:
            rule = "duplicate_names"
        elif not match(row[1].strip()):
            lowered = row[1].strip().lower().lstrip("+-")
            rule = "not_finite" if lowered in ("nan", "inf", "infinity") else "not_a_number"
        elif not isfinite(value := float(row[1])):
            rule = "not_finite"
        elif not 0.0 <= value <= 1.0:
            rule = "out_of_range"
        else:
            values[position] = value
            seen[position] = 1
        if rule:
            problems.setdefault(rule, []).append(line)
    if problems:
        raise _error(problems)
    absent = len(expected) - sum(seen)
    if absent and missing is MissingPolicy.FAIL:
        raise PredictionsError(
            "missing_rows", f"{_rows(absent)} missing: every hidden video needs one prediction"
        )
    probabilities = np.array(values, dtype=np.float64)
    probabilities[np.isnan(probabilities)] = 0.5
    return Predictions(probabilities=probabilities, imputed=absent)


_DESCRIBE = {
    "wrong_columns": "do not have exactly two columns",
    "unknown_names": "name a video that is not in the hidden set",
    "duplicate_names": "repeat a video that already has a prediction",
    "not_a_number": "have a label that is not a plain decimal number",
    "not_finite": "have a label that is NaN or infinite",
    "out_of_range": "have a label outside [0, 1]",
}


def _error(problems: dict[str, list[int]]) -> PredictionsError:
    """One message naming every broken rule with its row count and first line number."""
    ordered = sorted(problems.items(), key=lambda kv: kv[1][0])
    parts = [f"{_rows(len(lines))} {_DESCRIBE[rule]} (first at line {lines[0]})"
             for rule, lines in ordered]
    return PredictionsError(ordered[0][0], "; ".join(parts))
