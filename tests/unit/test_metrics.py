"""Metrics: the definitions of CONTRACT.md §3, their invariants, the fast bootstrap's accuracy."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.metrics import log_loss as sk_log_loss

from scorer.core import metrics
from scorer.core.metrics import (
    bootstrap_mean_interval,
    row_losses,
    score,
    score_splits,
    seed_from_id,
    split_seed,
)

KEYS = {"log_loss", "roc_auc", "average_precision", "accuracy", "log_loss_ci95", "n"}


def random_split(n: int, seed: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    return y, np.clip(0.35 * y + 0.65 * rng.random(n), 0.0, 1.0)


@pytest.mark.parametrize("labels", [[0], [1], [0, 1], [1, 1, 1, 0], [0] * 50 + [1] * 7], ids=str)
def test_constant_half_scores_ln2(labels: list[int]) -> None:
    """A constant 0.5 scores ln 2 whatever the labels."""
    y = np.array(labels)
    assert math.isclose(score(y, np.full(y.size, 0.5), seed=1)["log_loss"], math.log(2))


@pytest.mark.parametrize("seed", range(5))
def test_log_loss_matches_sklearn(seed: int) -> None:
    """Natural-log binary log loss with FAKE = 1 is scikit-learn's on random data."""
    y, p = random_split(700, seed)
    expected = sk_log_loss(y, p, labels=[0, 1])
    assert math.isclose(score(y, p, seed=0)["log_loss"], expected, rel_tol=1e-12)


@pytest.mark.parametrize(
    ("label", "p", "loss"),
    [
        (1, 0.0, -math.log(1e-15)),
        (0, 1.0, -math.log(1e-15)),
        (1, 1.0, 1e-15),
        (0, 0.0, 1e-15),
        (1, 0.25, math.log(4)),
        (0, 0.25, math.log(4 / 3)),
    ],
)
def test_predictions_are_clipped_to_1e15(label: int, p: float, loss: float) -> None:
    """Certainty costs at most -ln(1e-15) ≈ 34.54 when wrong and ~1e-15 when right."""
    result = row_losses(np.array([label]), np.array([p]))[0]
    assert math.isclose(result, loss, rel_tol=1e-3)


@pytest.mark.parametrize(
    ("labels", "probs", "accuracy"),
    [
        ([1, 0], [0.5, 0.5], 0.5),  # 0.5 counts as FAKE
        ([1, 0], [0.5, 0.4999999], 1.0),
        ([0, 0, 1, 1], [0.9, 0.1, 0.6, 0.2], 0.5),
        ([1, 1, 1], [1.0, 0.7, 0.5], 1.0),
    ],
)
def test_accuracy_counts_half_and_above_as_fake(
    labels: list[int], probs: list[float], accuracy: float
) -> None:
    """Accuracy thresholds at p >= 0.5 = FAKE."""
    assert score(np.array(labels), np.array(probs), seed=0)["accuracy"] == accuracy


def test_auc_and_ap_are_sklearns() -> None:
    """ROC AUC and average precision are scikit-learn's values."""
    y, p = random_split(900, 11)
    result = score(y, p, seed=0)
    assert result["roc_auc"] == roc_auc_score(y, p)
    assert result["average_precision"] == average_precision_score(y, p)


@pytest.mark.parametrize("label", [0, 1])
def test_one_class_leaves_auc_and_ap_null(label: int) -> None:
    """AUC and AP are undefined with one class present; the rest is still reported."""
    result = score(np.full(40, label), np.linspace(0, 1, 40), seed=1)
    assert result["roc_auc"] is None and result["average_precision"] is None
    assert result["log_loss"] is not None and result["accuracy"] is not None
    assert result["log_loss_ci95"] is not None and result["n"] == 40


def test_empty_split_is_all_null() -> None:
    """With no rows every metric is null and n is 0."""
    assert score(np.array([], dtype=int), np.array([]), seed=1) == {
        "log_loss": None,
        "roc_auc": None,
        "average_precision": None,
        "accuracy": None,
        "log_loss_ci95": None,
        "n": 0,
    }


@pytest.mark.parametrize("n", [5, 300, metrics.EXACT_MAX_ROWS + 1])
def test_values_are_plain_json_types(n: int) -> None:
    """Exactly the contract's keys, with Python floats, ints and lists: never numpy scalars."""
    y, p = random_split(n, 2)
    result = score(y, p, seed=3)
    assert set(result) == KEYS
    for key in ("log_loss", "roc_auc", "average_precision", "accuracy"):
        assert type(result[key]) is float, key
    interval = result["log_loss_ci95"]
    assert type(interval) is list and [type(v) for v in interval] == [float, float]
    assert type(result["n"]) is int and result["n"] == n
    assert json.loads(json.dumps(result)) == result


@pytest.mark.parametrize(
    ("labels", "probs"),
    [
        ([0, 1], [0.5]),
        ([[0, 1]], [[0.5, 0.5]]),
        ([0, 2], [0.5, 0.5]),
        ([0, 1], [0.5, float("nan")]),
        ([0, 1], [0.5, 1.5]),
    ],
    ids=["length", "2-d", "label-2", "nan", "above-one"],
)
def test_bad_inputs_are_caller_bugs(labels: list[int], probs: list[float]) -> None:
    """Labels and probabilities come from the service: a mismatch raises ValueError."""
    with pytest.raises(ValueError, match="must be"):
        score(np.array(labels), np.array(probs), seed=0)


def test_interval_is_reproducible_from_the_seed() -> None:
    """The same seed gives the same interval; another seed gives another."""
    y, p = random_split(500, 4)
    first = score(y, p, seed=seed_from_id("ev-1"))["log_loss_ci95"]
    assert score(y, p, seed=seed_from_id("ev-1"))["log_loss_ci95"] == first
    assert score(y, p, seed=seed_from_id("ev-2"))["log_loss_ci95"] != first


def test_seed_from_id_does_not_depend_on_python_hash_salt() -> None:
    """Seeds come from hashlib, so they agree across processes with different hash salts."""
    code = "from scorer.core.metrics import seed_from_id as s; print(s('ev-42'), hash('ev-42'))"
    outputs = [
        subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": salt},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        for salt in ("1", "2")
    ]
    assert outputs[0][0] == outputs[1][0] == str(seed_from_id("ev-42"))
    assert outputs[0][1] != outputs[1][1]  # the salt did change Python's own hash
    assert 0 <= seed_from_id("ev-42") < 2**64


def test_score_splits_scores_each_split_with_its_own_seed() -> None:
    """One entry per split present, each equal to score() on its rows with the derived seed."""
    y, p = random_split(1000, 5)
    splits = np.where(np.arange(1000) % 10 < 3, "public", "private")
    result = score_splits(y, p, splits.tolist(), seed=99)
    assert list(result) == ["private", "public"]
    for name in ("public", "private"):
        mask = splits == name
        assert result[name] == score(y[mask], p[mask], seed=split_seed(99, name))
    assert split_seed(99, "public") != split_seed(99, "private")
    assert score_splits(y, p, splits, seed=99) == result  # an ndarray of names works too


def test_score_splits_reports_only_splits_present() -> None:
    """A dataset with a single split yields a single entry."""
    y, p = random_split(50, 6)
    assert list(score_splits(y, p, ["public"] * 50, seed=1)) == ["public"]
    with pytest.raises(ValueError, match="same length"):
        score_splits(y, p, ["public"] * 49, seed=1)


PROBS = st.floats(0.0, 1.0)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1), PROBS), min_size=1, max_size=200))
def test_log_loss_is_non_negative_and_interval_ordered(rows: list[tuple[int, float]]) -> None:
    """Log loss is >= 0 and the interval is an ordered pair within the per-row loss range."""
    y = np.array([r[0] for r in rows])
    p = np.array([r[1] for r in rows])
    result = score(y, p, seed=0)
    low, high = result["log_loss_ci95"]
    losses = row_losses(y, p)
    assert result["log_loss"] >= 0
    assert losses.min() - 1e-12 <= low <= high <= losses.max() + 1e-12


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 1), PROBS), min_size=2, max_size=150),
    st.randoms(use_true_random=False),
)
def test_metrics_are_invariant_to_row_order(rows: list[tuple[int, float]], rand: object) -> None:
    """Shuffling the rows changes no metric, the bootstrap interval included."""
    shuffled = list(rows)
    rand.shuffle(shuffled)  # type: ignore[attr-defined]
    a = score(np.array([r[0] for r in rows]), np.array([r[1] for r in rows]), seed=7)
    b = score(np.array([r[0] for r in shuffled]), np.array([r[1] for r in shuffled]), seed=7)
    for key in KEYS - {"log_loss_ci95"}:
        assert a[key] == b[key] or math.isclose(a[key], b[key], rel_tol=1e-12), key
    assert np.allclose(a["log_loss_ci95"], b["log_loss_ci95"], rtol=1e-12)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1), st.floats(0.05, 0.95)), min_size=20, max_size=300))
def test_interval_contains_the_estimate_for_reasonable_data(rows: list[tuple[int, float]]) -> None:
    """With bounded losses and a few dozen rows, the 95% interval contains the point estimate."""
    y = np.array([r[0] for r in rows])
    result = score(y, np.array([r[1] for r in rows]), seed=3)
    low, high = result["log_loss_ci95"]
    assert low <= result["log_loss"] <= high


def heavy_tailed_losses(n: int) -> npt.NDArray[np.float64]:
    """Confident and often wrong: losses from ~0 to ~15 with a long right tail."""
    rng = np.random.default_rng(7)
    return row_losses(rng.integers(0, 2, n), rng.beta(0.6, 0.6, n))


def naive_bootstrap_means(
    losses: npt.NDArray[np.float64], seed: int, resamples: int
) -> npt.NDArray[np.float64]:
    rng = np.random.default_rng(seed)
    return np.array(
        [losses[rng.integers(0, losses.size, losses.size)].mean() for _ in range(resamples)]
    )


def test_binned_interval_agrees_with_the_naive_bootstrap() -> None:
    """Beyond EXACT_MAX_ROWS the interval matches a textbook bootstrap within Monte Carlo noise.

    With 1,000 resamples each endpoint carries ~0.09 standard errors of noise, so two
    independent runs differ by ~0.12 se; 0.4 se is a loose but meaningful bound.
    """
    losses = heavy_tailed_losses(metrics.EXACT_MAX_ROWS * 2)
    se = losses.std() / math.sqrt(losses.size)
    fast = bootstrap_mean_interval(losses, seed=5)
    naive = np.percentile(naive_bootstrap_means(losses, seed=6, resamples=1000), [2.5, 97.5])
    assert abs(fast[0] - naive[0]) < 0.4 * se and abs(fast[1] - naive[1]) < 0.4 * se
    width = fast[1] - fast[0]
    assert 3.7 * se < width < 4.1 * se  # a 95% interval of a near-normal mean is ±1.96 se


@pytest.mark.parametrize("bins", [metrics.BINS, 10])
def test_binned_means_have_the_bootstrap_mean_and_variance(bins: int) -> None:
    """Binned resample means have the exact bootstrap's mean and variance, however coarse the bins.

    For the mean of n draws with replacement both are known in closed form: the sample mean and
    the population variance / n. With 10 bins the within-bin normal term carries ~14% of that
    variance here, so dropping or mis-scaling it fails this test.
    """
    losses = np.sort(heavy_tailed_losses(30_000))
    means = metrics._binned_means(losses, np.random.default_rng(1), 8000, bins=bins)
    variance = losses.var() / losses.size
    drawn = means - losses.mean()
    assert abs(drawn.mean()) < 0.05 * math.sqrt(variance)
    assert math.isclose((drawn**2).mean(), variance, rel_tol=0.05)  # noise: ~1.6% per run


def test_bootstrap_of_nothing_is_an_error() -> None:
    """The interval of an empty split is not computed (score() reports it as null)."""
    with pytest.raises(ValueError, match="empty"):
        bootstrap_mean_interval(np.array([]), seed=0)
