"""EASE (Steck, "Embarrassingly Shallow Autoencoders for Sparse Data", 2019): an item-item
weight matrix in closed form, B = I - P diag(1 / diag(P)) with P = (X^T X + l2 I)^-1 over
the binary user-item matrix X, so that a user's scores are their history times B (the
diagonal of B is zero: an item never recommends itself).

One dense inverse of an items x items matrix: cheap at tens of thousands of items and
impossible at a million, so a fit past ``MAX_ITEMS`` is refused with the reason.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import numpy.typing as npt
from threadpoolctl import threadpool_limits

from rectune.domain.configuration import ParamValue
from rectune.domain.errors import FailedPrecondition
from rectune.domain.space import Hyperparameter, ParamType, StrategySpace
from services.scoring.core.data import ScoringData, TrainingData
from services.scoring.core.strategies.als import FIT_THREADS
from services.scoring.core.strategies.base import FittedModel, Scores, ScoringContext, Strategy, history_vector

SPACE = StrategySpace(
    "ease",
    "EASE: a closed-form item-item linear model (one items x items inverse); strong and cheap on "
    "catalogues up to tens of thousands of items.",
    (Hyperparameter("l2", ParamType.FLOAT, 250.0, "L2 penalty on the item-item weights", 1.0, 100_000.0, True),),
)
# A float32 items x items matrix at 20,000 items is 1.6 GB, and the fit holds two of them.
MAX_ITEMS = 20_000


def ease_weights(matrix: npt.NDArray[np.float32], l2: float) -> npt.NDArray[np.float32]:
    """B from the Gram matrix X^T X (float32 in, float32 out, zero diagonal)."""
    gram = matrix.astype(np.float64)
    gram[np.diag_indices_from(gram)] += l2
    with threadpool_limits(FIT_THREADS, "blas"):
        inverse = np.linalg.inv(gram)
    weights = -inverse / np.diag(inverse)[None, :]
    weights[np.diag_indices_from(weights)] = 0.0
    return weights.astype(np.float32)


class EaseModel(FittedModel):
    def __init__(self, weights: npt.NDArray[np.float32]) -> None:
        self.weights = weights
        self.n_items = len(weights)

    def scores(self, context: ScoringContext) -> Scores:
        # Binary history, as the fit saw it: only the history's rows of B are read.
        rows = np.flatnonzero(history_vector(context.history, self.n_items))
        if len(rows) == 0:
            return np.zeros(self.n_items)
        summed: Scores = self.weights[rows].sum(axis=0, dtype=np.float64)
        return summed

    def scores_at(self, context: ScoringContext, items: npt.NDArray[np.int64]) -> Scores:
        rows = np.flatnonzero(history_vector(context.history, self.n_items))
        if len(rows) == 0:
            return np.zeros(len(items))
        picked: Scores = self.weights[np.ix_(rows, items)].sum(axis=0, dtype=np.float64)
        return picked

    def nbytes(self) -> int:
        return int(self.weights.nbytes)


class Ease(Strategy):
    space = SPACE
    # Its fitted model is one array: kept in the model store.
    stored = True

    def fit(self, data: TrainingData, params: Mapping[str, ParamValue], live: ScoringData | None) -> EaseModel:
        if data.n_items > MAX_ITEMS:
            raise FailedPrecondition(
                f"ease: the catalogue has {data.n_items} items, more than the {MAX_ITEMS} whose items x items "
                "inverse fits in memory; use als or item_knn"
            )
        binary = data.user_item_matrix()
        binary.data[:] = 1.0
        gram = np.asarray((binary.T @ binary).todense(), dtype=np.float32)
        return EaseModel(ease_weights(gram, float(params["l2"])))
