"""The predictions parser: strict rules, safe messages, every way a participant can get it wrong."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scorer.core.predictions import MissingPolicy, PredictionsError, parse_predictions

NAMES = ["aaa.mp4", "bbb.mp4", "ccc.mp4"]


def csv_of(rows: list[tuple[str, str]], header: str = "filename,label", eol: str = "\n") -> bytes:
    return (eol.join([header, *(f"{a},{b}" for a, b in rows)]) + eol).encode()


GOOD = [("aaa.mp4", "0.1"), ("bbb.mp4", "1"), ("ccc.mp4", "0")]


@pytest.mark.parametrize(
    "data",
    [
        csv_of(GOOD),
        csv_of(GOOD, eol="\r\n"),
        b"\xef\xbb\xbf" + csv_of(GOOD),
        csv_of(GOOD).rstrip(b"\n"),
        csv_of(list(reversed(GOOD))),
        b'filename,label\n"aaa.mp4",0.1\n"bbb.mp4","1"\nccc.mp4,0e0\n',
        b"filename,label\naaa.mp4,1e-1\n\nbbb.mp4,1.0\nccc.mp4,.0\n",
    ],
    ids=["lf", "crlf", "bom", "no-final-newline", "any-order", "rfc4180-quotes", "sci+blank"],
)
def test_valid_files_parse_in_expected_order(data: bytes) -> None:
    """Every accepted dialect yields the same probabilities, aligned to the hidden order."""
    result = parse_predictions(data, NAMES)
    assert result.probabilities.tolist() == [0.1, 1.0, 0.0]
    assert result.imputed == 0


BAD = [
    ("empty", b"", "empty_file"),
    ("whitespace only", b"  \n\n", "empty_file"),
    ("latin-1", "filename,label\naaa.mp4,0.5\n".encode() + b"\xe9\n", "not_utf8"),
    ("wrong header", csv_of(GOOD, header="name,prob"), "bad_header"),
    ("extra header column", csv_of(GOOD, header="filename,label,x"), "bad_header"),
    ("no header", b"aaa.mp4,0.1\nbbb.mp4,1\nccc.mp4,0\n", "bad_header"),
    ("unterminated quote", b'filename,label\n"aaa.mp4,0.1\n', "malformed_csv"),
    ("three columns", csv_of([("aaa.mp4", "0.1,7"), *GOOD[1:]]), "wrong_columns"),
    ("unknown name", csv_of([*GOOD, ("zzz.mp4", "0.5")]), "unknown_names"),
    ("duplicate", csv_of([*GOOD, ("aaa.mp4", "0.5")]), "duplicate_names"),
    ("missing row", csv_of(GOOD[:2]), "missing_rows"),
    ("nan", csv_of([("aaa.mp4", "nan"), *GOOD[1:]]), "not_finite"),
    ("inf", csv_of([("aaa.mp4", "inf"), *GOOD[1:]]), "not_finite"),
    ("-infinity", csv_of([("aaa.mp4", "-Infinity"), *GOOD[1:]]), "not_finite"),
    ("overflow", csv_of([("aaa.mp4", "1e400"), *GOOD[1:]]), "not_finite"),
    ("above one", csv_of([("aaa.mp4", "1.0001"), *GOOD[1:]]), "out_of_range"),
    ("negative", csv_of([("aaa.mp4", "-0.1"), *GOOD[1:]]), "out_of_range"),
    ("empty label", csv_of([("aaa.mp4", ""), *GOOD[1:]]), "not_a_number"),
    ("hex", csv_of([("aaa.mp4", "0x1"), *GOOD[1:]]), "not_a_number"),
    ("underscore", csv_of([("aaa.mp4", "0_5"), *GOOD[1:]]), "not_a_number"),
    ("word", csv_of([("aaa.mp4", "FAKE"), *GOOD[1:]]), "not_a_number"),
    ("name with spaces", csv_of([(" aaa.mp4", "0.1"), *GOOD[1:]]), "unknown_names"),
    ("huge", b"filename,label\n" + b"aaa.mp4,0.5\n" * 20, "too_many_rows"),
]


@pytest.mark.parametrize(("case", "data", "rule"), BAD, ids=[b[0] for b in BAD])
def test_each_broken_rule_is_named(case: str, data: bytes, rule: str) -> None:
    """A broken file raises PredictionsError naming its rule, never echoing hidden names."""
    with pytest.raises(PredictionsError) as err:
        parse_predictions(data, NAMES)
    assert err.value.rule == rule, err.value.message
    assert not any(name.split(".")[0] in err.value.message for name in NAMES)


def test_messages_count_rows_per_rule() -> None:
    """Several broken rules are all reported, with counts and first line numbers."""
    data = csv_of([("aaa.mp4", "nan"), ("bbb.mp4", "7"), ("x.mp4", "0.1"), ("y.mp4", "0.1")])
    with pytest.raises(PredictionsError) as err:
        parse_predictions(data, NAMES)
    message = err.value.message
    assert "1 row have a label that is NaN" in message
    assert "2 rows name a video that is not in the hidden set (first at line 4)" in message
    assert "x.mp4" not in message and "y.mp4" not in message


def test_impute_fills_half_and_counts() -> None:
    """Under IMPUTE, missing rows become 0.5 and are counted."""
    result = parse_predictions(csv_of(GOOD[:1]), NAMES, missing=MissingPolicy.IMPUTE)
    assert result.probabilities.tolist() == [0.1, 0.5, 0.5]
    assert result.imputed == 2


def test_impute_never_excuses_other_rules() -> None:
    """IMPUTE forgives absence only: an unknown name still fails."""
    with pytest.raises(PredictionsError):
        parse_predictions(csv_of([("zzz.mp4", "0.2")]), NAMES, missing=MissingPolicy.IMPUTE)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_never_raise_anything_else(data: bytes) -> None:
    """Whatever a participant writes, the parser answers with a result or PredictionsError."""
    try:
        result = parse_predictions(data, NAMES, missing=MissingPolicy.IMPUTE)
    except PredictionsError as exc:
        assert exc.rule and exc.message
    else:
        assert np.all((result.probabilities >= 0) & (result.probabilities <= 1))


name_strategy = st.text(
    alphabet=st.characters(categories=("Ll", "Nd")), min_size=8, max_size=12
).map(lambda s: "h" + s + ".mp4")


@settings(max_examples=100, deadline=None)
@given(
    st.lists(name_strategy, min_size=1, max_size=30, unique=True),
    st.data(),
)
def test_round_trip_of_valid_files(names: list[str], data: st.DataObject) -> None:
    """Any complete file of finite values in [0,1] round-trips exactly, in any row order."""
    probs = data.draw(st.lists(st.floats(0, 1), min_size=len(names), max_size=len(names)))
    order = data.draw(st.permutations(list(range(len(names)))))
    body = "".join(f"{names[i]},{probs[i]!r}\n" for i in order)
    result = parse_predictions(("filename,label\n" + body).encode(), names)
    assert all(math.isclose(a, b) for a, b in zip(result.probabilities, probs, strict=True))


@settings(max_examples=100, deadline=None)
@given(st.lists(name_strategy, min_size=2, max_size=20, unique=True), st.data())
def test_messages_never_contain_hidden_names(names: list[str], data: st.DataObject) -> None:
    """Broken files built from hidden names produce messages that mention none of them."""
    rows = data.draw(st.lists(st.tuples(st.sampled_from(names), st.sampled_from(
        ["0.5", "nan", "2", "x", ""])), max_size=30))
    body = "".join(f"{n},{v}\n" for n, v in rows)
    try:
        parse_predictions(("filename,label\n" + body).encode(), names)
    except PredictionsError as exc:
        assert not any(n in exc.message or n[:-4] in exc.message for n in names)
