"""Time-decayed popularity: each interaction counts 0.5 ** (age / half_life).

It reads the live interactions, so feedback counts at once. Ranking does not depend on
"now" (every item's score scales by the same factor as time passes), so the decayed
counts are kept relative to the newest interaction. They are updated with only the
interactions added since the last request (forwarded clicks change the data version all the
time, and recounting every interaction each time would put that cost on the request path).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping

import numpy as np

from rectune.domain.configuration import ParamValue
from rectune.domain.space import Hyperparameter, ParamType, StrategySpace
from services.scoring.core.data import ScoringData, TrainingData
from services.scoring.core.strategies.base import FittedModel, Scores, ScoringContext, Strategy

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


class PopularityModel(FittedModel):
    def __init__(self, live: ScoringData, half_life_seconds: float, n_items: int) -> None:
        self.live = live
        self.half_life_seconds = half_life_seconds
        self.n_items = n_items
        self._counts: Scores = np.zeros(n_items, dtype=np.float64)
        self._newest = float("-inf")  # counts are relative to this time
        self._seen = 0  # interactions counted so far
        self._version = -1
        self._lock = threading.Lock()

    def scores(self, context: ScoringContext) -> Scores:
        with self._lock:
            if self._version != self.live.version:
                self._catch_up()
            return self._counts[: self.n_items]

    def _catch_up(self) -> None:
        # The version is read first: what is added meanwhile is counted now or next time, never twice.
        version = self.live.version
        items, times, self._seen = self.live.interactions_since(self._seen)
        if len(items):
            newest = max(self._newest, float(times.max()))
            # A new array, not an update in place: a caller may still be ranking with the old one.
            size = max(len(self._counts), int(items.max()) + 1)
            counts = np.zeros(size, dtype=np.float64)
            counts[: len(self._counts)] = self._counts
            if np.isfinite(self._newest):
                counts *= np.exp2((self._newest - newest) / self.half_life_seconds)
            np.add.at(counts, items, np.exp2((times - newest) / self.half_life_seconds))
            self._counts, self._newest = counts, newest
        self._version = version

    def nbytes(self) -> int:
        return self.n_items * 8

    def __getstate__(self) -> dict[str, object]:
        """Stored inside a hybrid: the counts start again from the loading replica's own live
        data (the model store names ``live`` for it), and the lock is the new process's own."""
        state = {**self.__dict__, "_counts": np.zeros(self.n_items, dtype=np.float64)}
        state.update(_newest=float("-inf"), _seen=0, _version=-1)
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()


class Popularity(Strategy):
    space = SPACE
    trains = False

    def fit(
        self, data: TrainingData, params: Mapping[str, ParamValue], live: ScoringData | None
    ) -> PopularityModel | FrozenPopularityModel:
        half_life = float(params["half_life_days"]) * DAY
        if live is None:
            return FrozenPopularityModel(decayed_counts(data, half_life))
        return PopularityModel(live, half_life, data.n_items)


class FrozenPopularityModel(FittedModel):
    """Popularity of a fixed snapshot (offline evaluation: no peeking at held-out data)."""

    def __init__(self, counts: Scores) -> None:
        self.counts = counts
        self.n_items = len(counts)

    def scores(self, context: ScoringContext) -> Scores:
        return self.counts

    def nbytes(self) -> int:
        return int(self.counts.nbytes)
