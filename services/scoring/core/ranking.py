"""Exact top-k, interest probabilities (Platt scaling) and the offline evaluation metrics."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from services.scoring.core.data import TrainingData

Scores = npt.NDArray[np.float64]


def top_k(scores: Scores, k: int, excluded: npt.NDArray[np.int64] | Sequence[int] = ()) -> npt.NDArray[np.int64]:
    """Indices of the k highest scores, best first, ties broken by index; excluded items never."""
    masked = scores.astype(np.float64, copy=True)
    if len(excluded):
        masked[np.asarray(excluded, dtype=np.int64)] = -np.inf
    available = int(np.isfinite(masked).sum())
    k = min(k, available)
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    candidates = np.argpartition(-masked, k - 1)[:k] if k < len(masked) else np.arange(len(masked))
    order = np.lexsort((candidates, -masked[candidates]))
    return candidates[order].astype(np.int64)


@dataclass(frozen=True)
class Calibration:
    """p = sigmoid(a * score + b)."""

    a: float = 1.0
    b: float = 0.0

    def probability(self, scores: Scores) -> Scores:
        result: Scores = 1.0 / (1.0 + np.exp(-(self.a * scores + self.b)))
        return result


def fit_platt(scores: Scores, labels: npt.NDArray[np.float64], l2: float = 1e-3, steps: int = 50) -> Calibration:
    """Logistic regression of labels on one score (Newton's method, a little L2 for stability)."""
    if len(scores) == 0 or labels.min() == labels.max():
        return Calibration()
    spread = float(np.std(scores)) or 1.0
    x = np.column_stack([scores / spread, np.ones_like(scores)])
    weights = np.zeros(2)
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-(x @ weights)))
        gradient = x.T @ (p - labels) + l2 * weights
        hessian = (x * (p * (1 - p))[:, None]).T @ x + l2 * np.eye(2)
        step = np.linalg.solve(hessian, gradient)
        weights -= step
        if np.abs(step).max() < 1e-9:
            break
    return Calibration(a=float(weights[0] / spread), b=float(weights[1]))


@dataclass(frozen=True)
class Split:
    """Per user, the earlier interactions for training and the last ones held out."""

    train: TrainingData
    held_out: dict[int, npt.NDArray[np.int64]]  # user row -> held-out item indices


def time_split(data: TrainingData, holdout_fraction: float) -> Split:
    """Hold out the last ``holdout_fraction`` of each user's interactions by time (at least one
    when the user has two or more; none for a single interaction). Ties keep insertion order."""
    order = np.lexsort((np.arange(len(data.users)), data.times, data.users))
    keep = np.ones(len(data.users), dtype=bool)
    held_out: dict[int, npt.NDArray[np.int64]] = {}
    bounds = np.searchsorted(data.users[order], np.arange(data.n_users + 1))
    for user, (start, stop) in enumerate(itertools.pairwise(bounds)):
        count = stop - start
        n_test = max(1, math.floor(count * holdout_fraction)) if count >= 2 else 0
        if n_test:
            rows = order[stop - n_test : stop]
            keep[rows] = False
            held_out[user] = np.unique(data.items[rows])
    return Split(data.subset(keep), held_out)


@dataclass(frozen=True)
class Metrics:
    k: int
    ndcg: float
    recall: float
    hit_rate: float
    catalog_coverage: float
    users_evaluated: int


def ranking_metrics(recommended: npt.NDArray[np.int64], relevant: set[int], k: int) -> tuple[float, float, float]:
    """NDCG@k, Recall@k and hit (0/1) of one ranked list with binary relevance."""
    gains = [1.0 / math.log2(rank + 2) for rank, item in enumerate(recommended[:k]) if int(item) in relevant]
    ideal = sum(1.0 / math.log2(rank + 2) for rank in range(min(k, len(relevant))))
    hits = len(gains)
    return sum(gains) / ideal, hits / len(relevant), float(hits > 0)


def summarise(per_user: list[tuple[float, float, float]], covered: set[int], n_items: int, k: int) -> Metrics:
    if not per_user:
        return Metrics(k, 0.0, 0.0, 0.0, 0.0, 0)
    totals = np.array(per_user).mean(axis=0)
    return Metrics(k, float(totals[0]), float(totals[1]), float(totals[2]), len(covered) / n_items, len(per_user))
