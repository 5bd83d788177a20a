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
    # Fine-tuning the encoder's top layers (two_tower's finetune_layers): how many layers and
    # parameters trained, the frozen layers' kept output, and whether it came from the cache.
    encoder_layers_trained: int = 0
    encoder_parameters_trained: int = 0
    frozen_activation_bytes: int = 0
    frozen_activation_cache_hit: bool = False

    @property
    def seconds_per_epoch(self) -> float:
        return self.seconds / max(1, self.epochs_run)


class FittedModel(Protocol):
    """What a fit returns. Concrete models inherit this class: the optional abilities below
    come with defaults that do the plain thing, and a model overrides those it does better.

    When each is called: ``scores`` by every RankItems and ScoreItems and by offline
    evaluation; ``scores_at`` by calibration after each fit (a few items per user);
    ``select`` by RankItems and evaluation to build the list from the scores; ``nbytes`` by
    the fitted-model cache on every put."""

    n_items: int
    # Whether sigmoid(score) is a probability as trained (two_tower): calibration then keeps
    # it when its error is no worse than Platt scaling's.
    native_probability: bool = False
    # What a fit that trains in epochs did (two_tower); None for the others.
    training: TrainingReport | None = None

    def scores(self, context: ScoringContext) -> Scores:
        """A score per item of the fitted catalogue; higher is better."""
        ...

    def nbytes(self) -> int:
        """Memory held, for the cache bound."""
        ...

    def scores_at(self, context: ScoringContext, items: npt.NDArray[np.int64]) -> Scores:
        """The scores of some items. Default: the whole catalogue's scores, then those items."""
        picked: Scores = self.scores(context)[items]
        return picked

    def select(self, scores: Scores, k: int, excluded: npt.NDArray[np.int64], seed: int) -> npt.NDArray[np.int64]:
        """The ranked list of k items from ``scores``, none of ``excluded``. Default: the
        exact top k (hybrid overrides it with MMR and exploration, seeded per request)."""
        return top_k(scores, k, excluded)


@runtime_checkable
class DotProductModel(FittedModel, Protocol):
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

    def scores_at(self, context: ScoringContext, items: npt.NDArray[np.int64]) -> Scores:
        """Dot products of those items' vectors alone."""
        user = self.query(context)
        if user is None:
            return np.zeros(len(items))
        dot: Scores = (self.item_vectors()[items] @ user).astype(np.float64) * self.score_scale
        return dot


class Strategy(Protocol):
    """A recommendation strategy: its declared space and how it fits. Concrete strategies
    inherit this class for the defaults below."""

    space: StrategySpace
    # Whether its fitted models go to the model store, so that a restart or another replica
    # loads rather than fits: strategies whose models are plain arrays (als, item_knn,
    # two_tower). popularity and content read live data and fit in milliseconds; hybrid refits
    # its components.
    stored: bool = False
    # Whether a fit trains anything: popularity counts and content reads the encoder's
    # vectors, in milliseconds, so a serving-only replica (--role serve) fits them itself;
    # every other model comes to it from a training replica through the model store.
    trains: bool = True
    # The int hyperparameter that says how much training a fit does (two_tower's epochs,
    # als's iterations): a low-fidelity screen fits with a share of it. None: a fit has no
    # such axis and a screen always fits it in full.
    budget_param: str | None = None

    def fit(self, data: TrainingData, params: Mapping[str, ParamValue], live: ScoringData | None) -> FittedModel:
        """Fit on ``data``. ``live`` is the growing store for strategies that read fresh
        interactions at ranking time; None fits a frozen model (offline evaluation)."""
        ...

    def refit(
        self, data: TrainingData, params: Mapping[str, ParamValue], live: ScoringData | None, previous: FittedModel
    ) -> FittedModel:
        """A background refit of a serving model, given that model. Default: a fit from
        scratch (two_tower starts from the previous weights)."""
        return self.fit(data, params, live)


def history_vector(history: History, n_items: int) -> Scores:
    """The history as a dense item vector of summed values (items beyond the fitted catalogue dropped)."""
    vector = np.zeros(n_items, dtype=np.float64)
    inside = history.items < n_items
    np.add.at(vector, history.items[inside], np.where(history.values[inside] > 0, history.values[inside], 1.0))
    return vector
