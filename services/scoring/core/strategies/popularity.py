"""Time-decayed popularity: each interaction counts 0.5 ** (age / half_life).

It reads the live interactions, so feedback counts at once. Ranking does not depend on
"now" (every item's score scales by the same factor as time passes), so the decayed
counts are computed relative to the newest interaction and cached per data version.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping

import numpy as np

from services.scoring.core.data import ScoringData, TrainingData
from services.scoring.core.space import Hyperparameter, ParamType, ParamValue, StrategySpace
from services.scoring.core.strategies.base import Scores, ScoringContext

DAY = 86400.0

SPACE = StrategySpace(
    "popularity",
    "Items ranked by time-decayed interaction counts; the same list for everyone (minus what they saw).",
    (
        Hyperparameter(
            "half_life_days", ParamType.FLOAT, 30.0, "age at which an interaction counts half", 0.1, 3650.0, True
        ),
    ),
)


def decayed_counts(data: TrainingData, half_life_seconds: float) -> Scores:
    counts = np.zeros(data.n_items, dtype=np.float64)
    if len(data.times):
        weights = np.exp2((data.times - data.times.max()) / half_life_seconds)
        np.add.at(counts, data.items, weights)
    return counts


class PopularityModel:
    def __init__(self, live: ScoringData, half_life_seconds: float, n_items: int) -> None:
        self.live = live
        self.half_life_seconds = half_life_seconds
        self.n_items = n_items
        self._cached: tuple[int, Scores] | None = None
        self._lock = threading.Lock()

    def scores(self, context: ScoringContext) -> Scores:
        with self._lock:
            if self._cached is None or self._cached[0] != self.live.version:
                counts = decayed_counts(self.live.snapshot(), self.half_life_seconds)
                self._cached = (self.live.version, counts)
            return self._cached[1][: self.n_items]

    def nbytes(self) -> int:
        return self.n_items * 8


class Popularity:
    space = SPACE

    def fit(
        self, data: TrainingData, params: Mapping[str, ParamValue], live: ScoringData | None
    ) -> PopularityModel | FrozenPopularityModel:
        half_life = float(params["half_life_days"]) * DAY
        if live is None:
            return FrozenPopularityModel(decayed_counts(data, half_life))
        return PopularityModel(live, half_life, data.n_items)


class FrozenPopularityModel:
    """Popularity of a fixed snapshot (offline evaluation: no peeking at held-out data)."""

    def __init__(self, counts: Scores) -> None:
        self.counts = counts
        self.n_items = len(counts)

    def scores(self, context: ScoringContext) -> Scores:
        return self.counts

    def nbytes(self) -> int:
        return int(self.counts.nbytes)
