"""Fitted models: what a fit keeps, the byte-bounded cache of them, their calibration, and
the offline evaluation of a fitted model."""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from rectune.domain.configuration import Configuration
from services.scoring.core.data import TrainingData
from services.scoring.core.freshness import Freshness
from services.scoring.core.ranking import Calibration, Metrics, fit_platt, ranking_metrics, summarise
from services.scoring.core.strategies.base import FittedModel, ScoringContext, TrainingReport

NEGATIVES_PER_POSITIVE = 4
CALIBRATION_SEED = 7
# Users whose newest interaction calibrates a model: a seeded sample beyond this many. Each is
# a scoring of the model, and Platt scaling's two parameters need far fewer pairs.
CALIBRATION_MAX_USERS = 5000
ECE_BINS = 10


@dataclass(frozen=True)
class CalibrationReport:
    """Which probability the fit keeps and how well each calibrates on held-out interactions
    (expected calibration error, 10 equal-width bins; NaN where not measured)."""

    method: str = "platt"  # "platt": sigmoid(a * score + b) fitted; "model": the model's own sigmoid(score)
    ece: float = math.nan
    alternative_ece: float = math.nan  # the method not kept; NaN when the model has no probability of its own


@dataclass(frozen=True)
class Fitted:
    configuration: Configuration
    model: FittedModel
    calibration: Calibration
    user_rows: dict[str, int]
    seconds: float
    calibration_report: CalibrationReport = field(default_factory=CalibrationReport)
    fitted_at: float = 0.0  # wall clock
    watermark: int = 0  # interactions in the store when the fit's snapshot was taken
    refits: int = 0  # how many refits led to this model in this process

    @property
    def training(self) -> TrainingReport | None:
        return self.model.training

    def status(self, freshness: Freshness | None = None) -> FitStatus:
        return FitStatus(
            self.configuration.hash,
            "ready",
            seconds=self.seconds,
            calibration=self.calibration,
            calibration_report=self.calibration_report,
            training=self.training,
            freshness=freshness,
        )


@dataclass(frozen=True)
class FitStatus:
    configuration_hash: str
    state: str  # "pending", "running", "ready", "failed"
    error: str = ""
    seconds: float = 0.0
    calibration: Calibration = field(default_factory=Calibration)
    calibration_report: CalibrationReport = field(default_factory=CalibrationReport)
    training: TrainingReport | None = None
    freshness: Freshness | None = None  # of a ready model


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

    def entries(self) -> list[Fitted]:
        with self._lock:
            return list(self._entries.values())

    def put(self, fitted: Fitted) -> None:
        with self._lock:
            self._entries[fitted.configuration.hash] = fitted
            self._entries.move_to_end(fitted.configuration.hash)
            while len(self._entries) > 1 and sum(f.model.nbytes() for f in self._entries.values()) > self.max_bytes:
                self._entries.popitem(last=False)


def calibration_split(data: TrainingData) -> tuple[TrainingData, dict[int, int]]:
    """Each user's newest interaction (users with two or more) set aside for Platt scaling."""
    keep = np.ones(len(data.users), dtype=bool)
    if not len(data.users):
        return data.subset(keep), {}
    # Sorted by user, then time, then row: each user's last entry is their newest (the
    # later row on a tie). Vectorised: a refit runs beside ranking, and a Python loop over
    # every row would hold the interpreter lock for tens of milliseconds.
    rows = np.arange(len(data.users))
    order = np.lexsort((rows, data.times, data.users))
    sorted_users = data.users[order]
    last = np.flatnonzero(np.append(sorted_users[1:] != sorted_users[:-1], True))
    newest_row = dict(zip(sorted_users[last].tolist(), order[last].tolist(), strict=True))
    counts = np.bincount(data.users, minlength=data.n_users)
    users_in_order, first_rows = np.unique(data.users, return_index=True)
    held_out: dict[int, int] = {}
    for user in users_in_order[np.argsort(first_rows)].tolist():  # users in order of first appearance
        if counts[user] >= 2:
            row = newest_row[user]
            keep[row] = False
            held_out[user] = int(data.items[row])
    return data.subset(keep), held_out


def calibrate(
    model: FittedModel, train: TrainingData, held_out: dict[int, int]
) -> tuple[Calibration, CalibrationReport]:
    """Platt scaling on each user's newest interaction against random items they never
    touched. A model with a probability of its own (two_tower's sigmoid(u·v)) keeps it when
    its calibration error is no worse than Platt scaling's, measured out of fold."""
    scores, labels, users = calibration_pairs(model, train, held_out)
    platt = fit_platt(scores, labels)
    if not model.native_probability:
        return platt, CalibrationReport()
    platt_ece = cross_fitted_platt_ece(scores, labels, users)
    native = Calibration()
    native_ece = expected_calibration_error(native.probability(scores), labels)
    if native_ece <= platt_ece:
        return native, CalibrationReport("model", native_ece, platt_ece)
    return platt, CalibrationReport("platt", platt_ece, native_ece)


def calibration_pairs(
    model: FittedModel, train: TrainingData, held_out: dict[int, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scores, labels (1 for the held-out item, 0 for random unseen ones) and each pair's user."""
    rng = np.random.default_rng(CALIBRATION_SEED)
    histories = train.histories()
    scores, labels, users = [], [], []
    for user, positive in sampled(held_out).items():
        history = histories[user]
        negatives = rng.integers(0, model.n_items, NEGATIVES_PER_POSITIVE)
        seen = set(history.items.tolist()) | {positive}
        pairs = [(positive, 1.0)] + [(int(n), 0.0) for n in negatives if int(n) not in seen]
        items = np.array([item for item, _ in pairs], dtype=np.int64)
        user_scores = model.scores_at(ScoringContext(history, user, float(train.times.max())), items)
        for score, (_, label) in zip(user_scores.tolist(), pairs, strict=True):
            scores.append(score)
            labels.append(label)
            users.append(user)
    return np.array(scores, dtype=np.float64), np.array(labels, dtype=np.float64), np.array(users, dtype=np.int64)


def sampled(held_out: dict[int, int]) -> dict[int, int]:
    """At most CALIBRATION_MAX_USERS of the held-out users (seeded), in their order."""
    if len(held_out) <= CALIBRATION_MAX_USERS:
        return held_out
    users = list(held_out)
    chosen = np.sort(np.random.default_rng(CALIBRATION_SEED).choice(len(users), CALIBRATION_MAX_USERS, replace=False))
    return {users[i]: held_out[users[i]] for i in chosen.tolist()}


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Sum over equal-width bins of the bin's share times |mean probability - mean label|."""
    if len(labels) == 0:
        return math.nan
    bins = np.minimum((probabilities * ECE_BINS).astype(np.int64), ECE_BINS - 1)
    error = 0.0
    for index in np.unique(bins):
        inside = bins == index
        error += inside.mean() * abs(float(probabilities[inside].mean()) - float(labels[inside].mean()))
    return error


def cross_fitted_platt_ece(scores: np.ndarray, labels: np.ndarray, users: np.ndarray) -> float:
    """Platt scaling's calibration error on users it was not fitted on (two folds by user),
    so that it is not flattered against a model's own probability."""
    probabilities = np.empty_like(scores)
    fold = users % 2 == 0
    for fitted_on in (fold, ~fold):
        probabilities[~fitted_on] = fit_platt(scores[fitted_on], labels[fitted_on]).probability(scores[~fitted_on])
    return expected_calibration_error(probabilities, labels)


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
        yield model.select(scores, k, history.items, seed=user + 1), relevant
