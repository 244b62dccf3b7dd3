"""Strict parsing and validation of a participant's submission.csv (CONTRACT.md §2).

Bytes in, an array aligned with the hidden names out, or a PredictionsError whose message is safe
to show the participant: it names the broken rule, row counts and line numbers, never file content.
"""

from __future__ import annotations

import csv
import enum
import io
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import islice, repeat
from operator import itemgetter
from typing import NoReturn

import numpy as np
import numpy.typing as npt

# Accepted label syntax: plain decimal or scientific notation in ASCII ("0.5", "1", ".5", "1.",
# "5e-1", "+1E0"). Python's float() also takes "nan", "inf", "1_0", " 0.5", hex via other paths
# and non-ASCII digits; none of those is accepted here.
_NUMBER = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
# The ASCII characters float() accepts beyond _NUMBER's: whitespace (str.isspace) and "_".
_FLOAT_EXTRAS = "_ \t\n\x0b\x0c\r\x1c\x1d\x1e\x1f"
_LONE_CR = re.compile(rb"\r(?!\n)")
_BLANK_LINES = re.compile(rb"\n\n+")
_BOM = b"\xef\xbb\xbf"
_HEADER = "filename,label"


class MissingPolicy(enum.Enum):
    FAIL = "fail"
    IMPUTE = "impute"


class Rule(enum.StrEnum):
    """Stable ids of the rules a submission can break, in the order they are checked."""

    EMPTY_FILE = "empty_file"
    NOT_UTF8 = "not_utf8"
    BAD_LINE_ENDING = "bad_line_ending"
    MALFORMED_CSV = "malformed_csv"
    BAD_HEADER = "bad_header"
    TOO_MANY_ROWS = "too_many_rows"
    WRONG_COLUMN_COUNT = "wrong_column_count"
    NOT_A_NUMBER = "not_a_number"
    NOT_FINITE = "not_finite"
    OUT_OF_RANGE = "out_of_range"
    UNKNOWN_NAMES = "unknown_names"
    DUPLICATE_NAMES = "duplicate_names"
    MISSING_ROWS = "missing_rows"


class PredictionsError(Exception):
    """A submission broke a rule; `message` is safe to show the participant."""

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.rule = rule
        self.message = message

    def __reduce__(self) -> tuple[type[PredictionsError], tuple[str, str]]:
        return (PredictionsError, (self.rule, self.message))


# eq=False: numpy arrays have no single truth value, so field-wise equality would raise.
@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class Predictions:
    probabilities: npt.NDArray[np.float64]  # read-only, aligned with the `expected` order
    imputed: int


@dataclass(frozen=True, slots=True, kw_only=True)
class _Table:
    names: list[str]
    labels: list[str]
    source: bytes  # the file less its BOM, CRLF made LF: line numbers count lines of this
    quoted: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class _Fault:
    rule: Rule
    rows: int  # how many rows (or, for MISSING_ROWS, hidden videos) break the rule
    first_row: int | None  # 0-based data row of the first offender; None for MISSING_ROWS


# What the offending rows do, singular and plural; never what they contain.
_PHRASES: dict[Rule, tuple[str, str]] = {
    Rule.WRONG_COLUMN_COUNT: ("row has", "rows have"),
    Rule.NOT_A_NUMBER: ("row has", "rows have"),
    Rule.NOT_FINITE: ("row has", "rows have"),
    Rule.OUT_OF_RANGE: ("row has", "rows have"),
    Rule.UNKNOWN_NAMES: ("row names", "rows name"),
    Rule.DUPLICATE_NAMES: ("row repeats", "rows repeat"),
    Rule.MISSING_ROWS: ("hidden video has", "hidden videos have"),
}
_OBJECTS: dict[Rule, str] = {
    Rule.WRONG_COLUMN_COUNT: "a number of fields other than 2",
    Rule.NOT_A_NUMBER: "a label that is not a plain decimal number",
    Rule.NOT_FINITE: "a label that is not a finite number",
    Rule.OUT_OF_RANGE: "a label outside [0, 1]",
    Rule.UNKNOWN_NAMES: "a video that is not in the hidden set",
    Rule.DUPLICATE_NAMES: "a video already listed",
    Rule.MISSING_ROWS: "no row",
}


def parse_predictions(
    data: bytes, expected: Sequence[str], *, missing: MissingPolicy = MissingPolicy.FAIL
) -> Predictions:
    """Parse `data` as submission.csv for the hidden names `expected` (which must be unique).

    Empty lines are skipped wherever they are (as pandas does), so a trailing newline, none, or
    several are all fine. A CR is only accepted as part of a CRLF line end.
    """
    table = _split(data, max_rows=2 * len(expected) + 1000)
    index = dict(zip(expected, range(len(expected)), strict=True))
    if len(index) != len(expected):
        raise ValueError("expected names must be unique")
    values, faults = _parse_labels(table.labels)
    rows = np.fromiter(map(index.get, table.names, repeat(-1)), np.intp, len(table.names))
    faults += _name_faults(rows, len(index), missing)
    if faults:
        raise PredictionsError(faults[0].rule, _describe(faults, table))
    probabilities = np.full(len(index), 0.5)
    probabilities[rows] = values
    probabilities.flags.writeable = False
    return Predictions(probabilities=probabilities, imputed=len(index) - len(rows))


def _split(data: bytes, *, max_rows: int) -> _Table:
    """Decode and split into names and label strings, checking everything above row level."""
    source = data.removeprefix(_BOM)
    if b"\r" in source:
        # Two C-speed counts clear the usual CRLF file; the regex only runs to find the line.
        lone = _LONE_CR.search(source) if source.count(b"\r") != source.count(b"\r\n") else None
        if lone is not None:
            line = source.count(b"\n", 0, lone.start()) + 1
            raise PredictionsError(
                Rule.BAD_LINE_ENDING,
                f"line {line} has a carriage return that is not part of a CRLF line end",
            )
        source = source.replace(b"\r\n", b"\n")
    compact = source.strip(b"\n")
    if not compact:
        raise PredictionsError(Rule.EMPTY_FILE, "the file is empty")
    if b'"' in compact:
        return _split_quoted(source, max_rows=max_rows)
    return _split_plain(compact, source, max_rows=max_rows)


def _decode(data: bytes, source: bytes) -> str:
    """Decode `data`, a copy of `source` less some newlines, reporting lines of `source`."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    try:  # dropping newlines never changes validity, so this fails too, at a true position
        source.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = source.count(b"\n", 0, exc.start) + 1
        raise PredictionsError(
            Rule.NOT_UTF8, f"the file is not valid UTF-8 (line {line})"
        ) from None
    raise AssertionError("unreachable: decoding failed only without the blank lines")


def _split_plain(compact: bytes, source: bytes, *, max_rows: int) -> _Table:
    """The fast path for files without quotes, where CSV is exactly lines and commas.

    `compact` is `source` without leading and trailing newlines. The structure (lines, one
    comma each) is checked with numpy on the bytes; then one replace-and-split of the whole
    text yields every name and label without a per-row Python loop.
    """
    if b"\n\n" in compact:
        compact = _BLANK_LINES.sub(b"\n", compact)
    text = _decode(compact, source)
    if not (compact.startswith(_HEADER.encode() + b"\n") or compact == _HEADER.encode()):
        raise _bad_header()
    buffer = np.frombuffer(compact, np.uint8)
    ends = np.append(np.flatnonzero(buffer == ord("\n")), buffer.size)
    _check_row_count(ends.size - 1, max_rows)
    commas = np.flatnonzero(buffer == ord(","))
    if commas.size != ends.size or not np.array_equal(
        np.searchsorted(ends, commas), np.arange(commas.size)
    ):
        per_row = np.diff(np.searchsorted(commas, ends))
        _raise_column_count(per_row + 1, _Table(names=[], labels=[], source=source, quoted=False))
    parts = text.replace(",", "\n").split("\n")
    return _Table(names=parts[2::2], labels=parts[3::2], source=source, quoted=False)


def _split_quoted(source: bytes, *, max_rows: int) -> _Table:
    """The RFC 4180 path (csv module) for files that quote any field."""
    text = _decode(source, source)
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        rows = list(islice(filter(None, reader), max_rows + 2))
    except csv.Error:
        raise PredictionsError(
            Rule.MALFORMED_CSV, f"the file is not valid CSV (RFC 4180) at line {reader.line_num}"
        ) from None
    if rows[0] != _HEADER.split(","):
        raise _bad_header()
    body = rows[1:]
    _check_row_count(len(body), max_rows)
    widths = np.fromiter(map(len, body), np.intp, len(body))
    if np.any(widths != 2):
        _raise_column_count(widths, _Table(names=[], labels=[], source=source, quoted=True))
    return _Table(
        names=list(map(itemgetter(0), body)),
        labels=list(map(itemgetter(1), body)),
        source=source,
        quoted=True,
    )


def _bad_header() -> PredictionsError:
    return PredictionsError(Rule.BAD_HEADER, f"the first line must be exactly the header {_HEADER}")


def _check_row_count(rows: int, max_rows: int) -> None:
    # Bounds the per-row work a hostile file can cause, whatever the size cap upstream allows.
    if rows > max_rows:
        raise PredictionsError(Rule.TOO_MANY_ROWS, f"the file has more than {max_rows} data rows")


def _raise_column_count(widths: npt.NDArray[np.intp], table: _Table) -> NoReturn:
    bad = np.flatnonzero(widths != 2)
    fault = _Fault(rule=Rule.WRONG_COLUMN_COUNT, rows=bad.size, first_row=int(bad[0]))
    raise PredictionsError(fault.rule, _describe([fault], table))


def _parse_labels(labels: list[str]) -> tuple[npt.NDArray[np.float64], list[_Fault]]:
    """Labels as floats, or the faults of the bad ones.

    float() accepts exactly _NUMBER plus: non-ASCII digits and spaces, ASCII whitespace,
    underscores, and nan/inf spellings (which the range check rejects). Excluding the rest with
    a few C-speed scans of the joined labels spares a per-row regex on the happy path.
    """
    joined = "".join(labels)
    if joined.isascii() and not any(char in joined for char in _FLOAT_EXTRAS):
        try:
            values = np.fromiter(map(float, labels), np.float64, len(labels))
        except ValueError:
            pass
        else:  # NaN fails both comparisons, so it falls through to the slow path too
            if values.size == 0 or (values.min() >= 0.0 and values.max() <= 1.0):
                return values, []
    return np.zeros(len(labels)), _label_faults(labels)


def _label_faults(labels: list[str]) -> list[_Fault]:
    """The slow path, taken only for a file with a bad label: classify every row."""
    faults: dict[Rule, list[int]] = {
        Rule.NOT_A_NUMBER: [],
        Rule.NOT_FINITE: [],
        Rule.OUT_OF_RANGE: [],
    }
    for row, label in enumerate(labels):
        rule = _label_rule(label)
        if rule is not None:
            faults[rule].append(row)
    return [
        _Fault(rule=rule, rows=len(rows), first_row=rows[0])
        for rule, rows in faults.items()
        if rows
    ]


def _label_rule(label: str) -> Rule | None:
    if _NUMBER.fullmatch(label) is None:
        try:  # "nan", "-Infinity": tell the participant what is wrong with them
            finite = math.isfinite(float(label))
        except ValueError:
            finite = True
        return Rule.NOT_A_NUMBER if finite else Rule.NOT_FINITE
    value = float(label)
    if not math.isfinite(value):  # "1e400" overflows
        return Rule.NOT_FINITE
    return None if 0.0 <= value <= 1.0 else Rule.OUT_OF_RANGE


def _name_faults(rows: npt.NDArray[np.intp], hidden: int, missing: MissingPolicy) -> list[_Fault]:
    """Unknown and repeated names by row, and hidden videos with no row (unless imputed)."""
    faults = []
    unknown = np.flatnonzero(rows < 0)
    if unknown.size:
        faults.append(_Fault(rule=Rule.UNKNOWN_NAMES, rows=unknown.size, first_row=int(unknown[0])))
    known = rows[rows >= 0]
    counts = np.bincount(known, minlength=hidden)
    absent = int(np.count_nonzero(counts == 0))
    if known.size > hidden - absent:  # more known rows than distinct known names
        first = np.zeros(rows.size, dtype=bool)
        first[np.unique(rows, return_index=True)[1]] = True
        repeated = np.flatnonzero(~first & (rows >= 0))
        faults.append(
            _Fault(rule=Rule.DUPLICATE_NAMES, rows=repeated.size, first_row=int(repeated[0]))
        )
    if absent and missing is MissingPolicy.FAIL:
        faults.append(_Fault(rule=Rule.MISSING_ROWS, rows=absent, first_row=None))
    return faults


def _describe(faults: list[_Fault], table: _Table) -> str:
    """E.g. "2 rows name a video that is not in the hidden set (first at line 4); 1 hidden ..."."""
    lines = _row_lines(table) if any(f.first_row is not None for f in faults) else []
    parts = []
    for fault in faults:
        singular, plural = _PHRASES[fault.rule]
        part = f"{fault.rows} {singular if fault.rows == 1 else plural} {_OBJECTS[fault.rule]}"
        if fault.first_row is not None:
            part += f" (first at line {lines[fault.first_row]})"
        parts.append(part)
    return "; ".join(parts)


def _row_lines(table: _Table) -> list[int]:
    """The 1-based line on which each data row starts (error path only: it re-reads the text)."""
    text = table.source.decode("utf-8")
    if not table.quoted:
        lines = text.split("\n")
        return [number for number, line in enumerate(lines, 1) if line][1:]
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    starts, previous_end = [], 0
    for record in reader:
        if record:
            starts.append(previous_end + 1)
        previous_end = reader.line_num
    return starts[1:]
