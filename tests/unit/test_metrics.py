"""Metrics: definitions from CONTRACT.md §3, invariants, and the fast bootstrap's accuracy."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import log_loss as sk_log_loss

from scorer.core.metrics import (
    bootstrap_mean_interval,
    row_losses,
    score,
    score_splits,
    seed_from_id,
)


def test_constant_half_scores_ln2() -> None:
    """A constant 0.5 scores ln 2 on any labels, accuracy counts p >= 0.5 as FAKE."""
    y = np.array([0, 1, 1, 0, 1])
    result = score(y, np.full(5, 0.5), seed=1)
    assert math.isclose(result["log_loss"], math.log(2))
    assert result["accuracy"] == 0.6 and result["n"] == 5


def test_log_loss_matches_sklearn_with_clipping() -> None:
    """Natural-log binary log loss, clipped to [1e-15, 1-1e-15], as scikit-learn computes it."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    p = rng.random(500)
    p[:3] = [0.0, 1.0, 0.0]
    ours = score(y, p, seed=0)["log_loss"]
    clipped = np.clip(p, 1e-15, 1 - 1e-15)
    assert math.isclose(ours, sk_log_loss(y, clipped, labels=[0, 1]), rel_tol=1e-9)


def test_one_class_leaves_auc_and_ap_undefined() -> None:
    """AUC and AP are null where only one class is present; n == 0 leaves everything null."""
    result = score(np.ones(4, dtype=int), np.full(4, 0.9), seed=1)
    assert result["roc_auc"] is None and result["average_precision"] is None
    assert result["log_loss"] is not None
    empty = score(np.array([], dtype=int), np.array([]), seed=1)
    assert empty == {"log_loss": None, "roc_auc": None, "average_precision": None,
                     "accuracy": None, "log_loss_ci95": None, "n": 0}


def test_splits_are_scored_separately_and_reproducibly() -> None:
    """Each split has its own metrics; the same seed gives the same interval."""
    rng = np.random.default_rng(3)
    y, p = rng.integers(0, 2, 300), rng.random(300)
    splits = np.where(np.arange(300) < 100, "public", "private")
    a = score_splits(y, p, splits, seed=seed_from_id("ev_1"))
    b = score_splits(y, p, splits, seed=seed_from_id("ev_1"))
    assert a == b and set(a) == {"public", "private"}
    assert a["public"]["n"] == 100 and a["private"]["n"] == 200
    assert a["public"]["log_loss"] == score(y[:100], p[:100], seed=0)["log_loss"]


def test_values_are_plain_json_types() -> None:
    """No numpy scalars leak into what is signed and stored."""
    rng = np.random.default_rng(4)
    result = score(rng.integers(0, 2, 50), rng.random(50), seed=2)
    for key, value in result.items():
        if key == "log_loss_ci95":
            assert all(type(v) is float for v in value)
        elif key == "n":
            assert type(value) is int
        else:
            assert type(value) is float


@pytest.mark.parametrize("n", [500, 5_000, 50_000])
def test_bootstrap_agrees_with_the_naive_exact_bootstrap(n: int) -> None:
    """The binned bootstrap's interval matches a naive one within a few % of the width."""
    rng = np.random.default_rng(n)
    losses = row_losses(rng.integers(0, 2, n), rng.random(n) ** 2)
    naive = np.array([losses[rng.integers(0, n, n)].mean() for _ in range(3000)])
    low, high = np.percentile(naive, [2.5, 97.5])
    ours = bootstrap_mean_interval(losses, seed=9)
    width = high - low
    assert abs(ours[0] - low) < 0.06 * width and abs(ours[1] - high) < 0.06 * width


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1), st.floats(0, 1)), min_size=2, max_size=200),
       st.randoms(use_true_random=False))
def test_invariants(rows: list[tuple[int, float]], rnd: object) -> None:
    """Log loss is non-negative, the CI holds the estimate, permutation changes nothing."""
    y = np.array([r[0] for r in rows])
    p = np.array([r[1] for r in rows])
    result = score(y, p, seed=5)
    assert result["log_loss"] >= 0
    low, high = result["log_loss_ci95"]
    assert low - 1e-9 <= result["log_loss"] <= high + 1e-9
    perm = np.random.default_rng(len(rows)).permutation(len(rows))
    shuffled = score(y[perm], p[perm], seed=5)
    assert math.isclose(shuffled["log_loss"], result["log_loss"], rel_tol=1e-12)
    if result["roc_auc"] is not None:
        assert math.isclose(shuffled["roc_auc"], result["roc_auc"], rel_tol=1e-12)
