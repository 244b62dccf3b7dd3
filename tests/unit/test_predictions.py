"""The predictions parser: every accepted dialect, every broken rule, and messages that are safe."""

from __future__ import annotations

import csv
import io
import math
import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scorer.core.predictions import (
    _NUMBER,
    MissingPolicy,
    PredictionsError,
    Rule,
    parse_predictions,
)

NAMES = ["aaa.mp4", "bbb.mp4", "ccc.mp4"]
GOOD = [("aaa.mp4", "0.1"), ("bbb.mp4", "1"), ("ccc.mp4", "0")]


def csv_of(
    rows: list[tuple[str, str]], *, header: str = "filename,label", eol: str = "\n"
) -> bytes:
    return (eol.join([header, *(f"{name},{label}" for name, label in rows)]) + eol).encode()


def with_label(label: str) -> bytes:
    return csv_of([("aaa.mp4", label), *GOOD[1:]])


def rule_of(data: bytes, names: list[str] = NAMES, **kwargs: MissingPolicy) -> str:
    with pytest.raises(PredictionsError) as err:
        parse_predictions(data, names, **kwargs)
    return err.value.rule


@pytest.mark.parametrize(
    "data",
    [
        csv_of(GOOD),
        csv_of(GOOD, eol="\r\n"),
        b"\xef\xbb\xbf" + csv_of(GOOD),
        b"\xef\xbb\xbf" + csv_of(GOOD, eol="\r\n"),
        csv_of(GOOD).rstrip(b"\n"),
        csv_of(list(reversed(GOOD))),
        b"filename,label\naaa.mp4,0.1\nbbb.mp4,1\r\nccc.mp4,0\r\n",
        b'filename,label\n"aaa.mp4",0.1\n"bbb.mp4","1"\nccc.mp4,0e0\n',
        b'"filename","label"\r\n"aaa.mp4","0.1"\r\n"bbb.mp4","1"\r\n"ccc.mp4","0"\r\n',
        b"\n\nfilename,label\n\naaa.mp4,1e-1\n\n\nbbb.mp4,1.0\nccc.mp4,.0\n\n\n",
        b'filename,label\n\n"aaa.mp4",1E-1\n\nbbb.mp4,+1\nccc.mp4,-0\n\n',
        b"filename,label\naaa.mp4,0.1000000000000000000000001\nbbb.mp4,1.\nccc.mp4,0e-99999\n",
    ],
    ids=[
        "lf",
        "crlf",
        "bom",
        "bom+crlf",
        "no-final-newline",
        "any-order",
        "mixed-eol",
        "some-quotes",
        "all-quoted",
        "blank-lines",
        "blank-lines-quoted",
        "long-digits",
    ],
)
def test_valid_files_parse_aligned_to_the_hidden_order(data: bytes) -> None:
    """Every accepted dialect yields the same probabilities, in the order of `expected`."""
    result = parse_predictions(data, NAMES)
    assert result.probabilities.tolist() == [0.1, 1.0, 0.0]
    assert result.probabilities.dtype == np.float64
    assert result.imputed == 0


BAD = [
    ("empty", b"", Rule.EMPTY_FILE),
    ("bom only", b"\xef\xbb\xbf", Rule.EMPTY_FILE),
    ("newlines only", b"\r\n\n\n", Rule.EMPTY_FILE),
    ("spaces only", b"  \n\n", Rule.BAD_HEADER),
    ("latin-1", b"filename,label\naaa.mp4,0.5\n\xe9\n", Rule.NOT_UTF8),
    ("utf-16", csv_of(GOOD).decode().encode("utf-16"), Rule.NOT_UTF8),
    ("lone cr", b"filename,label\raaa.mp4,0.1\rbbb.mp4,1\rccc.mp4,0\r", Rule.BAD_LINE_ENDING),
    ("cr in field", b"filename,label\naaa\r.mp4,0.1\n", Rule.BAD_LINE_ENDING),
    ("wrong header", csv_of(GOOD, header="name,prob"), Rule.BAD_HEADER),
    ("capitalised header", csv_of(GOOD, header="Filename,Label"), Rule.BAD_HEADER),
    ("spaced header", csv_of(GOOD, header="filename, label"), Rule.BAD_HEADER),
    ("extra header column", csv_of(GOOD, header="filename,label,x"), Rule.BAD_HEADER),
    ("no header", b"aaa.mp4,0.1\nbbb.mp4,1\nccc.mp4,0\n", Rule.BAD_HEADER),
    ("two boms", b"\xef\xbb\xbf" * 2 + csv_of(GOOD), Rule.BAD_HEADER),
    ("unterminated quote", b'filename,label\n"aaa.mp4,0.1\n', Rule.MALFORMED_CSV),
    ("text after quote", b'filename,label\n"aaa"x.mp4,0.1\n', Rule.MALFORMED_CSV),
    ("three columns", csv_of([("aaa.mp4", "0.1,7"), *GOOD[1:]]), Rule.WRONG_COLUMN_COUNT),
    ("one column", b"filename,label\naaa.mp4\nbbb.mp4,1\nccc.mp4,0\n", Rule.WRONG_COLUMN_COUNT),
    ("quoted three", b'filename,label\n"aaa.mp4",0.1,\n', Rule.WRONG_COLUMN_COUNT),
    ("quoted one", b'filename,label\n"aaa.mp4"\n', Rule.WRONG_COLUMN_COUNT),
    ("unknown name", csv_of([*GOOD, ("zzz.mp4", "0.5")]), Rule.UNKNOWN_NAMES),
    ("name with space", csv_of([(" aaa.mp4", "0.1"), *GOOD[1:]]), Rule.UNKNOWN_NAMES),
    ("name in other case", csv_of([("AAA.mp4", "0.1"), *GOOD[1:]]), Rule.UNKNOWN_NAMES),
    ("duplicate", csv_of([*GOOD, ("aaa.mp4", "0.5")]), Rule.DUPLICATE_NAMES),
    ("missing row", csv_of(GOOD[:2]), Rule.MISSING_ROWS),
    ("header only", b"filename,label\n", Rule.MISSING_ROWS),
    ("nan", with_label("nan"), Rule.NOT_FINITE),
    ("NaN", with_label("NaN"), Rule.NOT_FINITE),
    ("inf", with_label("inf"), Rule.NOT_FINITE),
    ("-Infinity", with_label("-Infinity"), Rule.NOT_FINITE),
    ("overflow", with_label("1e400"), Rule.NOT_FINITE),
    ("above one", with_label("1.0001"), Rule.OUT_OF_RANGE),
    ("negative", with_label("-0.1"), Rule.OUT_OF_RANGE),
    ("big", with_label("2e0"), Rule.OUT_OF_RANGE),
    ("empty label", with_label(""), Rule.NOT_A_NUMBER),
    ("hex", with_label("0x1"), Rule.NOT_A_NUMBER),
    ("underscore", with_label("0_5"), Rule.NOT_A_NUMBER),
    ("leading space", with_label(" 0.5"), Rule.NOT_A_NUMBER),
    ("trailing tab", with_label("0.5\t"), Rule.NOT_A_NUMBER),
    ("word", with_label("FAKE"), Rule.NOT_A_NUMBER),
    ("percent", with_label("50%"), Rule.NOT_A_NUMBER),
    ("decimal comma", b'filename,label\naaa.mp4,"0,5"\n', Rule.NOT_A_NUMBER),
    ("arabic-indic digits", with_label("\u0660.\u0665"), Rule.NOT_A_NUMBER),
    ("fullwidth digit", with_label("\uff11"), Rule.NOT_A_NUMBER),
    ("bare exponent", with_label("1e"), Rule.NOT_A_NUMBER),
    ("bare dot", with_label("."), Rule.NOT_A_NUMBER),
    ("two dots", with_label("0.1.2"), Rule.NOT_A_NUMBER),
    ("two signs", with_label("+-0"), Rule.NOT_A_NUMBER),
    ("too many rows", b"filename,label\n" + b"aaa.mp4,0.5\n" * 1007, Rule.TOO_MANY_ROWS),
]


@pytest.mark.parametrize(("case", "data", "rule"), BAD, ids=[b[0] for b in BAD])
def test_each_broken_rule_is_named(case: str, data: bytes, rule: Rule) -> None:
    """A broken file raises PredictionsError naming its rule, never echoing a hidden name."""
    with pytest.raises(PredictionsError) as err:
        parse_predictions(data, NAMES)
    assert err.value.rule == rule, err.value.message
    assert err.value.message == str(err.value)
    assert not any(name.removesuffix(".mp4") in err.value.message for name in NAMES)


def test_rule_ids_are_stable_snake_case_strings() -> None:
    """Rule ids are plain strings, so the shell can store and compare them as text."""
    with pytest.raises(PredictionsError) as err:
        parse_predictions(csv_of(GOOD[:2]), NAMES)
    assert err.value.rule == "missing_rows"
    assert all(rule.value == rule.name.lower() for rule in Rule)


def test_one_message_counts_every_row_rule_with_first_lines() -> None:
    """Label and name problems are all reported with counts, first line numbers, no contents."""
    data = csv_of([("aaa.mp4", "nan"), ("bbb.mp4", "7"), ("x1.mp4", "0.1"), ("y1.mp4", "0.1")])
    with pytest.raises(PredictionsError) as err:
        parse_predictions(data, NAMES)
    assert err.value.rule == Rule.NOT_FINITE  # the first rule broken, in checking order
    assert err.value.message == (
        "1 row has a label that is not a finite number (first at line 2); "
        "1 row has a label outside [0, 1] (first at line 3); "
        "2 rows name a video that is not in the hidden set (first at line 4); "
        "1 hidden video has no row"
    )


def test_duplicates_count_only_the_repeats() -> None:
    """Three rows for one video are two repeats, found first on the line of the second."""
    data = csv_of(
        [
            ("aaa.mp4", "0.1"),
            ("bbb.mp4", "0.2"),
            ("aaa.mp4", "0.3"),
            ("ccc.mp4", "0.4"),
            ("aaa.mp4", "0.3"),
        ]
    )
    with pytest.raises(PredictionsError) as err:
        parse_predictions(data, NAMES)
    assert err.value.message == "2 rows repeat a video already listed (first at line 4)"


@pytest.mark.parametrize(
    ("data", "line"),
    [
        (b"filename,label\n\n\naaa.mp4,x\n", 4),
        (b"filename,label\r\n\r\nbbb.mp4,0\r\naaa.mp4,x\r\n", 4),
        (b'filename,label\n"bbb\nmp4",0\naaa.mp4,x\n', 4),
        (b'\n"filename","label"\n\n"aaa.mp4","x"\n', 4),
    ],
    ids=["blank-lines", "crlf", "multi-line-quoted-field", "quoted-with-blank-lines"],
)
def test_line_numbers_count_physical_lines(data: bytes, line: int) -> None:
    """The line number points at the offending row as an editor would number it."""
    with pytest.raises(PredictionsError) as err:
        parse_predictions(data, NAMES)
    assert f"label that is not a plain decimal number (first at line {line})" in err.value.message


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b"filename,label\naaa.mp4,0.1\n\xff\n", "not valid UTF-8 (line 3)"),
        (b"filename,label\n\naaa.mp4,0.1\n\n\xff\n", "not valid UTF-8 (line 5)"),
        (b"filename,label\naaa.mp4,0.1\rbbb.mp4,1\n", "line 2 has a carriage return"),
        (b'filename,label\naaa.mp4,0.1\n"bbb.mp4"x,1\n', "not valid CSV (RFC 4180) at line 3"),
        (b"filename,label\naaa.mp4,0.1\nbbb.mp4\n", "(first at line 3)"),
    ],
    ids=["utf8", "utf8-after-blank-lines", "lone-cr", "csv", "columns"],
)
def test_structural_errors_name_their_line(data: bytes, fragment: str) -> None:
    """File-level errors say where, by line number, without quoting the line."""
    with pytest.raises(PredictionsError) as err:
        parse_predictions(data, NAMES)
    assert fragment in err.value.message


def test_impute_fills_half_and_counts() -> None:
    """Under IMPUTE, missing rows become 0.5 and their number is reported."""
    result = parse_predictions(csv_of(GOOD[:1]), NAMES, missing=MissingPolicy.IMPUTE)
    assert result.probabilities.tolist() == [0.1, 0.5, 0.5]
    assert result.imputed == 2


def test_impute_of_an_empty_body_imputes_everything() -> None:
    """A header and nothing else is all-imputed under IMPUTE."""
    result = parse_predictions(b"filename,label\n", NAMES, missing=MissingPolicy.IMPUTE)
    assert result.probabilities.tolist() == [0.5, 0.5, 0.5]
    assert result.imputed == 3


@pytest.mark.parametrize(
    "data",
    [
        csv_of([("zzz.mp4", "0.2")]),
        csv_of([("aaa.mp4", "0.2"), ("aaa.mp4", "0.2")]),
        csv_of([("aaa.mp4", "nan")]),
        b"",
    ],
    ids=["unknown", "duplicate", "nan", "empty"],
)
def test_impute_never_excuses_other_rules(data: bytes) -> None:
    """IMPUTE forgives absence only: any other broken rule still fails."""
    assert rule_of(data, missing=MissingPolicy.IMPUTE) != Rule.MISSING_ROWS


def test_result_is_read_only_and_error_pickles() -> None:
    """The probabilities cannot be changed after validation; the error survives pickling."""
    result = parse_predictions(csv_of(GOOD), NAMES)
    with pytest.raises(ValueError, match="read-only"):
        result.probabilities[0] = 0.9
    error = PredictionsError(Rule.NOT_FINITE, "1 row has a label that is not a finite number")
    copy = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own bytes
    assert (copy.rule, copy.message) == (error.rule, error.message)


def test_duplicate_expected_names_are_a_caller_bug() -> None:
    """The hidden set comes from the service: duplicates there are a ValueError, not a verdict."""
    with pytest.raises(ValueError, match="unique"):
        parse_predictions(csv_of(GOOD), ["aaa.mp4", "aaa.mp4"])


def test_quoted_and_plain_files_agree_on_a_large_file() -> None:
    """The numpy fast path and the csv-module path give identical results and errors."""
    rng = np.random.default_rng(3)
    names = [f"v{i:05d}.mp4" for i in range(5000)]
    values = rng.random(5000)
    order = rng.permutation(5000)
    plain = "".join(f"{names[i]},{float(values[i])!r}\n" for i in order)
    quoted = "".join(f'"{names[i]}",{float(values[i])!r}\n' for i in order)
    for body in (plain, quoted):
        result = parse_predictions(("filename,label\n" + body).encode(), names)
        assert np.array_equal(result.probabilities, values)
    broken = [b.replace(names[order[7]], "other.mp4") for b in (plain, quoted)]
    messages = {str(_error(("filename,label\n" + b).encode(), names)) for b in broken}
    assert messages == {
        "1 row names a video that is not in the hidden set (first at line 9); "
        "1 hidden video has no row"
    }


def _error(data: bytes, names: list[str]) -> PredictionsError:
    try:
        parse_predictions(data, names)
    except PredictionsError as exc:
        return exc
    raise AssertionError("expected a PredictionsError")


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_never_raise_anything_else(data: bytes) -> None:
    """Whatever a participant writes, the parser answers with a result or PredictionsError."""
    try:
        result = parse_predictions(data, NAMES, missing=MissingPolicy.IMPUTE)
    except PredictionsError as exc:
        assert exc.rule in set(Rule) and exc.message
    else:
        assert np.all((result.probabilities >= 0) & (result.probabilities <= 1))


CSVISH = st.text(alphabet=st.sampled_from(list('abc.mp4,"\r\n 0123456789eE+-\ufeff\u00e9')))


@settings(max_examples=400, deadline=None)
@given(CSVISH, st.sampled_from(["filename,label\n", "filename,label\r\n", ""]))
def test_csv_like_text_never_raises_anything_else(body: str, header: str) -> None:
    """Text close to a valid file reaches the deep rules and still only raises PredictionsError."""
    try:
        result = parse_predictions((header + body).encode(), ["a.mp4", "b.mp4"])
    except PredictionsError as exc:
        assert exc.rule in set(Rule) and exc.message
    else:
        assert result.probabilities.shape == (2,)


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.text(max_size=12), st.from_regex(_NUMBER, fullmatch=True)))
def test_accepted_labels_are_exactly_plain_decimals_in_range(label: str) -> None:
    """A label passes iff it matches the documented grammar and is a finite number in [0, 1]."""
    data = b'filename,label\n"aaa.mp4",' + _quoted(label).encode() + b"\n"
    grammar = _NUMBER.fullmatch(label) is not None
    expected_ok = grammar and math.isfinite(float(label)) and 0.0 <= float(label) <= 1.0
    try:
        result = parse_predictions(data, ["aaa.mp4"])
    except PredictionsError as exc:
        assert not expected_ok, exc.message
        assert exc.rule in {Rule.NOT_A_NUMBER, Rule.NOT_FINITE, Rule.OUT_OF_RANGE} or (
            "\r" in label and exc.rule == Rule.BAD_LINE_ENDING
        )
    else:
        assert expected_ok
        assert result.probabilities[0] == float(label)


def _quoted(field: str) -> str:
    return '"' + field.replace('"', '""') + '"'


NAME = st.text(st.characters(codec="utf-8", exclude_characters="\r"), min_size=1, max_size=20)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(NAME, min_size=1, max_size=25, unique=True),
    st.data(),
    st.sampled_from(["\n", "\r\n"]),
    st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL]),
)
def test_any_valid_file_round_trips_exactly(
    names: list[str], data: st.DataObject, eol: str, quoting: int
) -> None:
    """Any complete file written by Python's csv module, in any row order, parses back exactly."""
    probs = data.draw(st.lists(st.floats(0, 1), min_size=len(names), max_size=len(names)))
    order = data.draw(st.permutations(list(range(len(names)))))
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator=eol, quoting=quoting)
    writer.writerow(["filename", "label"])
    writer.writerows([names[i], repr(probs[i])] for i in order)
    result = parse_predictions(buffer.getvalue().encode(), names)
    assert result.probabilities.tolist() == probs


HIDDEN = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=6, max_size=12).map(
    lambda stem: "h" + stem + ".mp4"
)


@settings(max_examples=200, deadline=None)
@given(st.lists(HIDDEN, min_size=2, max_size=20, unique=True), st.data())
def test_messages_never_contain_a_name(names: list[str], data: st.DataObject) -> None:
    """Broken files built from hidden and stray names yield messages quoting none of them."""
    strays = data.draw(st.lists(HIDDEN.map(lambda n: "x" + n), max_size=3))
    labels = st.sampled_from(["0.5", "nan", "2", "x", "", "0.5,1"])
    rows = data.draw(st.lists(st.tuples(st.sampled_from(names + strays), labels), max_size=30))
    body = "".join(f"{name},{label}\n" for name, label in rows)
    try:
        parse_predictions(("filename,label\n" + body).encode(), names)
    except PredictionsError as exc:
        leaked = [n for n in names + strays if n.removesuffix(".mp4")[1:] in exc.message]
        assert not leaked, exc.message
