"""services/scoring/core/ranking.py at its edges: the top k, the time split's rule per user,
the summary of per-user metrics, and Platt scaling against an independent optimiser."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.optimize import minimize

from services.scoring.core.data import TrainingData
from services.scoring.core.ranking import Calibration, Metrics, fit_platt, ranking_metrics, summarise, time_split, top_k


def test_top_k_takes_what_is_available_best_first_ties_by_index() -> None:
    scores = np.array([3, 1, 3, 2, 0])  # integers: compared as numbers all the same
    assert top_k(scores, 3).tolist() == [0, 2, 3]
    assert top_k(scores, 3, [0]).tolist() == [2, 3, 1]
    assert top_k(scores, 10, np.array([0, 2])).tolist() == [3, 1, 4]  # only three left
    assert top_k(scores, 0).tolist() == [] and top_k(scores, 1).tolist() == [0]
    assert top_k(scores, 5, [0, 1, 2, 3, 4]).dtype == np.int64
    assert top_k(np.array([0.5, 0.25]), 2, [1]).tolist() == [0]
    assert scores.tolist() == [3, 1, 3, 2, 0]  # the input is not changed


def test_ranking_metrics_by_hand() -> None:
    ndcg, recall, hit = ranking_metrics(np.array([5, 1, 7]), {1, 9}, k=3)
    assert ndcg == pytest.approx((1 / math.log2(3)) / (1 + 1 / math.log2(3)))
    assert (recall, hit) == (0.5, 1.0)
    assert ranking_metrics(np.array([5, 6]), {1}, k=2) == (0.0, 0.0, 0.0)
    # Only the first k count.
    assert ranking_metrics(np.array([5, 6, 1]), {1}, k=2) == (0.0, 0.0, 0.0)


def data_of(rows: list[tuple[int, int, float]], n_users: int, n_items: int = 10) -> TrainingData:
    users, items, times = (np.array(column) for column in zip(*rows, strict=True))
    return TrainingData(
        tuple(str(i) for i in range(n_items)),
        tuple(f"u{u}" for u in range(n_users)),
        users.astype(np.int64),
        items.astype(np.int64),
        np.ones(len(rows)),
        times.astype(np.float64),
    )


def test_the_time_split_holds_out_each_users_latest_share_and_at_least_one_from_two() -> None:
    rows = [(0, 1, 5.0)]  # user 0: one interaction, nothing held out
    rows += [(1, 2, 1.0), (1, 3, 2.0)]  # user 1: two, the later held out
    rows += [(2, i, float(10 - i)) for i in range(10)]  # user 2: ten, the two latest (items 0 and 1)
    split = time_split(data_of(rows, 3), 0.2)
    assert sorted(split.held_out) == [1, 2]
    assert split.held_out[1].tolist() == [3] and split.held_out[2].tolist() == [0, 1]
    train = sorted(zip(split.train.users.tolist(), split.train.items.tolist(), strict=True))
    assert train == [(0, 1), (1, 2)] + [(2, i) for i in range(2, 10)]
    # A quarter of three is none by floor: still one, the latest.
    three = time_split(data_of([(0, 1, 1.0), (0, 2, 3.0), (0, 3, 2.0)], 1), 0.25)
    assert three.held_out[0].tolist() == [2] and len(three.train.users) == 2


def test_a_summary_of_no_user_is_all_zeros_and_otherwise_the_means() -> None:
    assert summarise([], set(), 100, 10) == Metrics(10, 0.0, 0.0, 0.0, 0.0, 0)
    summary = summarise([(1.0, 0.5, 1.0), (0.0, 0.0, 0.0)], {1, 2, 3}, 12, 5)
    assert summary == Metrics(5, 0.5, 0.25, 0.5, 0.25, 2)


def log_loss_optimum(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Unregularised logistic regression by a general-purpose optimiser (not Newton's)."""

    def loss(weights: np.ndarray) -> float:
        z = weights[0] * scores + weights[1]
        return float(np.sum(np.logaddexp(0.0, z) - labels * z))

    result = minimize(
        loss, np.zeros(2), method="Nelder-Mead", options={"xatol": 1e-9, "fatol": 1e-12, "maxiter": 20000}
    )
    return float(result.x[0]), float(result.x[1])


def test_platt_scaling_finds_the_logistic_regression_optimum() -> None:
    rng = np.random.default_rng(4)
    scores = rng.normal(2.0, 3.0, 4000)
    labels = (rng.random(4000) < 1 / (1 + np.exp(-(0.8 * scores - 1.5)))).astype(np.float64)
    fitted = fit_platt(scores, labels)
    a, b = log_loss_optimum(scores, labels)
    # The L2 of 1e-3 on 4,000 pairs moves the optimum by far less than these tolerances.
    assert fitted.a == pytest.approx(a, rel=2e-3) and fitted.b == pytest.approx(b, rel=2e-3)
    assert abs(fitted.a - 0.8) < 0.1 and abs(fitted.b + 1.5) < 0.15


def test_platt_scaling_without_both_labels_keeps_the_identity() -> None:
    assert fit_platt(np.zeros(0), np.zeros(0)) == Calibration(1.0, 0.0)
    assert fit_platt(np.array([1.0, 2.0]), np.array([1.0, 1.0])) == Calibration(1.0, 0.0)
    assert Calibration(2.0, -1.0).probability(np.array([0.5])).tolist() == [0.5]
