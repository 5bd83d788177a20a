"""Content similarity of BERT vectors: score(i) = v_i . u / temperature.

Item vectors v_i come from EmbeddingService (ItemVectors); the user vector u is
EmbeddingService's encoding of the user's recent history, in either mode of the design:
the weighted mean of the items' vectors (rating x recency) or the history as one text.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import numpy.typing as npt

from rectune.domain.configuration import ParamValue
from rectune.domain.space import Hyperparameter, ParamType, StrategySpace
from services.scoring.core.data import ScoringData, TrainingData
from services.scoring.core.strategies.base import DotProductModel, Scores, ScoringContext, Strategy
from services.scoring.core.vectors import ItemVectors, TextEncoder, Vectors

DAY = 86400.0
# The newest entries of a history that go into the user vector.
MAX_HISTORY = 50

SPACE = StrategySpace(
    "content",
    "Similarity of item texts' BERT vectors to the user's vector (EmbeddingService).",
    (
        Hyperparameter(
            "user_mode",
            ParamType.CATEGORICAL,
            "weighted_mean",
            "how the history becomes a vector",
            choices=("weighted_mean", "history_text"),
        ),
        Hyperparameter(
            "half_life_days", ParamType.FLOAT, 0.0, "recency half-life of the weighted mean; 0 = none", 0.0, 3650.0
        ),
        Hyperparameter("temperature", ParamType.FLOAT, 1.0, "scores are divided by it", 0.01, 10.0, True),
    ),
)


class ContentModel(DotProductModel):
    def __init__(
        self, matrix: Vectors, texts: list[str], encoder: TextEncoder, mode: str, half_life: float, temperature: float
    ) -> None:
        self.matrix = matrix
        self.texts = texts
        self.encoder = encoder
        self.mode = mode
        self.half_life = half_life
        self.temperature = temperature
        self.n_items = len(matrix)
        # Scores are dot products (scaled): an approximate index can rank them (retrieval.py).
        self.score_scale = 1.0 / temperature

    def item_vectors(self) -> Vectors:
        return self.matrix

    def query(self, context: ScoringContext) -> npt.NDArray[np.float32] | None:
        """The user's interest vector from their history; None without one (every score 0)."""
        history = context.history
        inside = history.items < self.n_items
        items, values, times = history.items[inside], history.values[inside], history.times[inside]
        if len(items) == 0:
            return None
        items, values, times = items[-MAX_HISTORY:], values[-MAX_HISTORY:], times[-MAX_HISTORY:]
        user = self.encoder.encode_user(
            [self.texts[i] for i in items.tolist()], values.tolist(), times.tolist(), self.mode, self.half_life
        )
        return np.asarray(user, dtype=np.float32)

    def scores(self, context: ScoringContext) -> Scores:
        user = self.query(context)
        if user is None:
            return np.zeros(self.n_items)
        result: Scores = (self.matrix @ user).astype(np.float64) / self.temperature
        return result

    def nbytes(self) -> int:
        return int(self.matrix.nbytes)


class Content(Strategy):
    space = SPACE
    trains = False

    def __init__(self, vectors: ItemVectors) -> None:
        self.vectors = vectors

    def fit(self, data: TrainingData, params: Mapping[str, ParamValue], live: ScoringData | None) -> ContentModel:
        matrix = self.vectors.matrix(data.n_items)
        texts = [item.text for item in self.vectors.data.items[: data.n_items]]
        return ContentModel(
            matrix,
            texts,
            self.vectors.encoder,
            str(params["user_mode"]),
            float(params["half_life_days"]) * DAY,
            float(params["temperature"]),
        )
