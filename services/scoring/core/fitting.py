"""Fitted models: what a fit keeps, the byte-bounded cache of them, their calibration, and
the offline evaluation of a fitted model."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from rectune.domain.configuration import Configuration
from services.scoring.core.data import TrainingData
from services.scoring.core.ranking import Calibration, Metrics, fit_platt, ranking_metrics, summarise
from services.scoring.core.strategies.base import FittedModel, ScoringContext, select_items

NEGATIVES_PER_POSITIVE = 4
CALIBRATION_SEED = 7


@dataclass(frozen=True)
class Fitted:
    configuration: Configuration
    model: FittedModel
    calibration: Calibration
    user_rows: dict[str, int]
    seconds: float


@dataclass(frozen=True)
class FitStatus:
    configuration_hash: str
    state: str  # "pending", "running", "ready", "failed"
    error: str = ""
    seconds: float = 0.0
    calibration: Calibration = field(default_factory=Calibration)


class FittedCache:
    """Fitted models by configuration hash, least recently used evicted past a byte bound."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, Fitted] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> Fitted | None:
        with self._lock:
            fitted = self._entries.get(key)
            if fitted is not None:
                self._entries.move_to_end(key)
            return fitted

    def put(self, fitted: Fitted) -> None:
        with self._lock:
            self._entries[fitted.configuration.hash] = fitted
            self._entries.move_to_end(fitted.configuration.hash)
            while len(self._entries) > 1 and sum(f.model.nbytes() for f in self._entries.values()) > self.max_bytes:
                self._entries.popitem(last=False)


def calibration_split(data: TrainingData) -> tuple[TrainingData, dict[int, int]]:
    """Each user's newest interaction (users with two or more) set aside for Platt scaling."""
    held_out: dict[int, int] = {}
    keep = np.ones(len(data.users), dtype=bool)
    newest: dict[int, tuple[float, int]] = {}
    for row, (user, when) in enumerate(zip(data.users.tolist(), data.times.tolist(), strict=True)):
        if user not in newest or when >= newest[user][0]:
            newest[user] = (when, row)
    counts = np.bincount(data.users, minlength=data.n_users)
    for user, (_, row) in newest.items():
        if counts[user] >= 2:
            keep[row] = False
            held_out[user] = int(data.items[row])
    return data.subset(keep), held_out


def calibrate(model: FittedModel, train: TrainingData, held_out: dict[int, int]) -> Calibration:
    """Platt scaling on each user's newest interaction against random items they never touched."""
    rng = np.random.default_rng(CALIBRATION_SEED)
    histories = train.histories()
    scores, labels = [], []
    for user, positive in held_out.items():
        history = histories[user]
        user_scores = model.scores(ScoringContext(history, user, float(train.times.max())))
        negatives = rng.integers(0, model.n_items, NEGATIVES_PER_POSITIVE)
        seen = set(history.items.tolist()) | {positive}
        scores.append(user_scores[positive])
        labels.append(1.0)
        for negative in negatives:
            if int(negative) not in seen:
                scores.append(user_scores[negative])
                labels.append(0.0)
    return fit_platt(np.array(scores), np.array(labels))


def evaluate_model(model: FittedModel, train: TrainingData, held_out: dict[int, np.ndarray], k: int) -> Metrics:
    """Full ranking of every item but the user's training items; binary relevance of held-out items."""
    return evaluate_users(model, train, held_out, k)[0]


def user_ndcgs(model: FittedModel, train: TrainingData, held_out: dict[int, np.ndarray], k: int) -> np.ndarray:
    return evaluate_users(model, train, held_out, k)[1]


def evaluate_users(
    model: FittedModel, train: TrainingData, held_out: dict[int, np.ndarray], k: int
) -> tuple[Metrics, np.ndarray]:
    """The metrics, and the NDCG@k of each evaluated user in user order: the same users for
    every configuration of one split, so that two configurations can be compared user by user
    (paired)."""
    per_user, covered = [], set()
    for recommended, relevant in ranked_lists(model, train, held_out, k):
        covered.update(recommended.tolist())
        per_user.append(ranking_metrics(recommended, relevant, k))
    ndcgs = np.array([ndcg for ndcg, _recall, _hit in per_user], dtype=np.float64)
    return summarise(per_user, covered, train.n_items, k), ndcgs


def ranked_lists(
    model: FittedModel, train: TrainingData, held_out: dict[int, np.ndarray], k: int
) -> Iterator[tuple[np.ndarray, set[int]]]:
    """Each evaluated user's top k (the training items excluded) and relevant held-out items;
    users whose held-out items were all seen in training are skipped."""
    histories = train.histories()
    as_of = float(train.times.max()) if len(train.times) else 0.0
    for user, items in sorted(held_out.items()):
        history = histories[user]
        relevant = set(items.tolist()) - set(history.items.tolist())
        if not relevant:
            continue
        scores = model.scores(ScoringContext(history, user, as_of))
        yield select_items(model, scores, k, history.items, seed=user + 1), relevant
