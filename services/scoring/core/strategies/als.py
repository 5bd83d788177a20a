"""Implicit-feedback matrix factorisation (Hu, Koren, Volinsky) with the ``implicit`` library.

Confidence is 1 + alpha * value; the fit is seeded, so the same data and parameters give
the same factors. A user is scored with their fitted factor while their history is the one
the fit saw; a cold user, or one with interactions since the fit, gets a factor solved from
their current history against the item factors (the least squares the fit itself solves
for users): fold-in, so that a click changes the user's next list without a refit.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np
import numpy.typing as npt
from implicit.cpu.als import AlternatingLeastSquares
from implicit.recommender_base import ModelFitError
from threadpoolctl import threadpool_limits

from rectune.domain.configuration import ParamValue
from rectune.domain.errors import FailedPrecondition
from rectune.domain.space import Hyperparameter, ParamType, StrategySpace
from services.scoring.core.data import History, ScoringData, TrainingData
from services.scoring.core.strategies.base import DotProductModel, Scores, ScoringContext, Strategy

SPACE = StrategySpace(
    "als",
    "Implicit-feedback alternating least squares (the implicit library).",
    (
        Hyperparameter("factors", ParamType.INT, 64, "latent dimensions", 8, 512, True),
        Hyperparameter("regularization", ParamType.FLOAT, 0.05, "L2 penalty", 1e-4, 10.0, True),
        Hyperparameter("alpha", ParamType.FLOAT, 2.0, "confidence = 1 + alpha * value", 0.1, 100.0, True),
        Hyperparameter("iterations", ParamType.INT, 15, "ALS sweeps", 1, 100),
    ),
)
SEED = 42
# A fold-in costs history x factors^2 multiply-adds (about 1 ms at 4 million here). A user
# whose fitted history alone costs more keeps the fit's vector until the next refit: the fit
# saw most of their interactions, and a heavy user (10^5 interactions) would otherwise cost
# hundreds of milliseconds a request (bench/scale.py's heavy-user size).
FOLD_IN_MAX_WORK = 4_000_000
# A fit leaves a core to ranking (a refit runs while the service serves); one core is all
# there is on a single-core machine.
FIT_THREADS = max(1, (os.cpu_count() or 1) - 1)


def fit_als(
    data: TrainingData, factors: int, regularization: float, alpha: float, iterations: int
) -> AlternatingLeastSquares:
    """The ALS fit the service uses (the benchmark reproduces it independently)."""
    # implicit runs its own threads; a multi-threaded BLAS underneath only contends with them.
    with threadpool_limits(1, "blas"):
        model = AlternatingLeastSquares(
            factors=factors,
            regularization=regularization,
            alpha=alpha,
            iterations=iterations,
            random_state=SEED,
            calculate_training_loss=False,
            num_threads=FIT_THREADS,
        )
        try:
            model.fit(data.user_item_matrix(), show_progress=False)
        except ModelFitError as exc:  # a configuration inside the space that this data cannot support
            raise FailedPrecondition(
                f"configuration: the als fit failed on the current data ({exc}); "
                "a larger regularization or a smaller alpha usually fits"
            ) from None
    return model


def item_gram(item_factors: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    """Y^T Y in float64: the same for every user, so computed once per model (it reads every
    item: at a million items, far more work than the rest of a request)."""
    y = item_factors.astype(np.float64)
    gram: npt.NDArray[np.float64] = y.T @ y
    return gram


def solve_user(
    item_factors: npt.NDArray[np.float32],
    history: History,
    alpha: float,
    regularization: float,
    gram: npt.NDArray[np.float64] | None = None,
) -> npt.NDArray[np.float64]:
    """argmin_x sum_i c_i (p_i - x.y_i)^2 + reg |x|^2 with p_i = 1 on the user's items;
    ``gram`` is item_gram(item_factors), passed when the caller keeps it."""
    k = item_factors.shape[1]
    items = history.items[history.items < len(item_factors)]
    if len(items) == 0:
        return np.zeros(k)
    a = (item_gram(item_factors) if gram is None else gram) + regularization * np.eye(k)
    confidence = alpha * np.where(history.values[: len(items)] > 0, history.values[: len(items)], 1.0)
    yi = item_factors[items].astype(np.float64)
    a += (yi * confidence[:, None]).T @ yi
    b = (yi * (1.0 + confidence)[:, None]).sum(axis=0)
    solution: npt.NDArray[np.float64] = np.linalg.solve(a, b)
    return solution


class AlsModel(DotProductModel):
    gram: npt.NDArray[np.float64] | None = None  # Y^T Y, for fold-in

    def __init__(
        self, model: AlternatingLeastSquares, alpha: float, regularization: float, fitted_counts: np.ndarray
    ) -> None:
        self.user_factors = np.asarray(model.user_factors)
        self.item_factors = np.asarray(model.item_factors)
        self.alpha = alpha
        self.regularization = regularization
        self.fitted_counts = fitted_counts  # interactions per user row in the fit's data
        self.n_items = len(self.item_factors)

    # Scores are dot products: above the catalogue size of ScoringLimits.retrieval an
    # approximate index finds the best items (retrieval.py).
    score_scale = 1.0

    def item_vectors(self) -> npt.NDArray[np.float32]:
        return self.item_factors

    def query(self, context: ScoringContext) -> npt.NDArray[np.float32]:
        """The user's factors: as fitted while their history is what the fit saw (or while the
        fit saw more of it than a fold-in may cost), else folded in from the current history
        (one least-squares solve)."""
        row = context.user_row
        if row is not None and row < len(self.user_factors) and self._fitted_is_current(row, context):
            fitted: npt.NDArray[np.float32] = self.user_factors[row]
            return fitted
        return solve_user(
            self.item_factors, context.history, self.alpha, self.regularization, self._item_gram()
        ).astype(np.float32)

    def _fitted_is_current(self, row: int, context: ScoringContext) -> bool:
        fitted = int(self.fitted_counts[row])
        return len(context.history.items) == fitted or fitted * self.item_factors.shape[1] ** 2 > FOLD_IN_MAX_WORK

    def _item_gram(self) -> npt.NDArray[np.float64]:
        # Made on first use, not in __init__: models stored before it existed load without it
        # (they find the class's None).
        if self.gram is None:
            self.gram = item_gram(self.item_factors)
        return self.gram

    def scores(self, context: ScoringContext) -> Scores:
        # float32 products, as implicit computes them, so rankings match the library's.
        result: Scores = (self.item_factors @ self.query(context)).astype(np.float64)
        return result

    def nbytes(self) -> int:
        return int(self.user_factors.nbytes + self.item_factors.nbytes)


class Als(Strategy):
    space = SPACE
    budget_param = "iterations"
    # Its fitted models are plain arrays: kept in the model store (model_store.py).
    stored = True

    def fit(self, data: TrainingData, params: Mapping[str, ParamValue], live: ScoringData | None) -> AlsModel:
        alpha, regularization = float(params["alpha"]), float(params["regularization"])
        model = fit_als(data, int(params["factors"]), regularization, alpha, int(params["iterations"]))
        return AlsModel(model, alpha, regularization, np.bincount(data.users, minlength=data.n_users))
