"""What every strategy provides: a declared space, ``fit`` and a fitted model that scores items."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from rectune.domain.configuration import ParamValue
from rectune.domain.space import StrategySpace
from services.scoring.core.data import History, ScoringData, TrainingData
from services.scoring.core.ranking import Scores, top_k

__all__ = [
    "DotProductModel",
    "FittedModel",
    "Scores",
    "ScoringContext",
    "Strategy",
    "TrainingReport",
    "history_vector",
    "scores_at",
    "select_items",
]


@dataclass(frozen=True)
class ScoringContext:
    """Who is being scored: their live history, and their row in the fitted data if they had one."""

    history: History
    user_row: int | None
    as_of: float


@dataclass(frozen=True)
class TrainingReport:
    """What a fit that trains in epochs did (two_tower): shown by FitConfiguration, logged."""

    epochs_run: int
    best_epoch: int  # the epoch whose weights were kept
    train_loss: float
    validation_loss: float  # of the kept epoch
    initial_validation_loss: float  # before the first epoch: the fall shows it learned
    stopped_because: str  # "early_stopping", "max_epochs" or "max_fit_seconds"
    seconds: float
    device: str

    @property
    def seconds_per_epoch(self) -> float:
        return self.seconds / max(1, self.epochs_run)


class FittedModel(Protocol):
    n_items: int

    def scores(self, context: ScoringContext) -> Scores:
        """A score per item of the fitted catalogue; higher is better."""
        ...

    def nbytes(self) -> int:
        """Memory held, for the cache bound."""
        ...


@runtime_checkable
class DotProductModel(Protocol):
    """A fitted model whose scores are ``item_vectors() @ query(context) * score_scale`` (als,
    content, two_tower): its best items can come from an index (retrieval.py), and some items'
    scores need only their vectors (scores_at)."""

    n_items: int
    score_scale: float

    def item_vectors(self) -> npt.NDArray[np.float32]:
        """One float32 row per item of the fitted catalogue."""
        ...

    def query(self, context: ScoringContext) -> npt.NDArray[np.float32] | None:
        """The user's vector; None when the model has nothing to go on (every score equal)."""
        ...


class Strategy(Protocol):
    space: StrategySpace

    def fit(self, data: TrainingData, params: Mapping[str, ParamValue], live: ScoringData | None) -> FittedModel:
        """Fit on ``data``. ``live`` is the growing store for strategies that read fresh
        interactions at ranking time; None fits a frozen model (offline evaluation)."""
        ...


def scores_at(model: FittedModel, context: ScoringContext, items: npt.NDArray[np.int64]) -> Scores:
    """The model's scores of some items: without scoring the whole catalogue where the model
    can (dot products of those items' vectors; item_knn's similarities to those items)."""
    own = getattr(model, "scores_at", None)
    if own is not None:
        result: Scores = own(context, items)
        return result
    if isinstance(model, DotProductModel):
        user = model.query(context)
        if user is None:
            return np.zeros(len(items))
        dot: Scores = (model.item_vectors()[items] @ user).astype(np.float64) * model.score_scale
        return dot
    return model.scores(context)[items]


def history_vector(history: History, n_items: int) -> Scores:
    """The history as a dense item vector of summed values (items beyond the fitted catalogue dropped)."""
    vector = np.zeros(n_items, dtype=np.float64)
    inside = history.items < n_items
    np.add.at(vector, history.items[inside], np.where(history.values[inside] > 0, history.values[inside], 1.0))
    return vector


def select_items(
    model: FittedModel, scores: Scores, k: int, excluded: npt.NDArray[np.int64], seed: int
) -> npt.NDArray[np.int64]:
    """The ranked list: the model's own list-building where it has one (hybrid: MMR and
    exploration), else the exact top k."""
    select = getattr(model, "select", None)
    if select is not None:
        chosen: npt.NDArray[np.int64] = select(scores, k, excluded, seed)
        return chosen
    return top_k(scores, k, excluded)
