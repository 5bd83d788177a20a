"""A weighted blend of the other strategies, with MMR diversity and in-list exploration.

Each component's scores are min-max normalised to [0, 1] before weighting, so weights
mean the same whatever the components' scales. The list is then built by maximal
marginal relevance: each next item maximises lambda * relevance - (1 - lambda) * its
highest cosine similarity (ALS item factors) to the items already chosen. Finally each
position is, with probability epsilon, given to a random candidate from deeper in the
pool (the seed design's epsilon-greedy exploration), seeded per request.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

from rectune.domain.configuration import ParamValue
from rectune.domain.errors import FailedPrecondition
from rectune.domain.space import Hyperparameter, ParamType, StrategySpace
from services.scoring.core.data import ScoringData, TrainingData
from services.scoring.core.ranking import top_k
from services.scoring.core.strategies.als import AlsModel
from services.scoring.core.strategies.base import FittedModel, Scores, ScoringContext, Strategy

POOL_FACTOR = 5
# Components that exist only where ScoringService has an EmbeddingService.
NEEDS_VECTORS = ("content", "two_tower")

SPACE = StrategySpace(
    "hybrid",
    "Weighted blend of popularity, item_knn, als, content and two_tower scores (each normalised), MMR diversity, "
    "epsilon exploration.",
    (
        Hyperparameter("w_popularity", ParamType.FLOAT, 0.05, "weight of popularity", 0.0, 1.0),
        Hyperparameter("w_item_knn", ParamType.FLOAT, 0.5, "weight of item_knn", 0.0, 1.0),
        Hyperparameter("w_als", ParamType.FLOAT, 0.45, "weight of als", 0.0, 1.0),
        Hyperparameter("w_content", ParamType.FLOAT, 0.0, "weight of content (BERT vectors)", 0.0, 1.0),
        Hyperparameter(
            "w_two_tower", ParamType.FLOAT, 0.0, "weight of two_tower (at its defaults)", 0.0, 1.0, added_later=True
        ),
        Hyperparameter(
            "mmr_lambda", ParamType.FLOAT, 1.0, "1 = pure relevance; lower trades it for diversity", 0.0, 1.0
        ),
        Hyperparameter("epsilon", ParamType.FLOAT, 0.0, "chance that a position goes to exploration", 0.0, 0.5),
    ),
)


def normalised(scores: Scores) -> Scores:
    finite = scores[np.isfinite(scores)]
    if len(finite) == 0:
        return np.zeros_like(scores)
    low, high = float(finite.min()), float(finite.max())
    return (scores - low) / (high - low) if high > low else np.zeros_like(scores)


class HybridModel(FittedModel):
    def __init__(
        self,
        components: list[tuple[float, FittedModel]],
        item_vectors: npt.NDArray[np.float64] | None,
        mmr_lambda: float,
        epsilon: float,
    ) -> None:
        self.components = components
        self.item_vectors = item_vectors
        self.mmr_lambda = mmr_lambda
        self.epsilon = epsilon
        self.n_items = components[0][1].n_items

    def scores(self, context: ScoringContext) -> Scores:
        total = np.zeros(self.n_items)
        for weight, model in self.components:
            total += weight * normalised(model.scores(context))
        return total

    def select(
        self, scores: Scores, k: int, excluded: Sequence[int] | npt.NDArray[np.int64], seed: int
    ) -> npt.NDArray[np.int64]:
        """The list: MMR over a pool of the best k * 5, then epsilon exploration."""
        pool = top_k(scores, k * POOL_FACTOR, excluded)
        if self.mmr_lambda < 1.0 and self.item_vectors is not None:
            chosen = self._mmr(scores, pool, k)
        else:
            chosen = pool[:k].tolist()
        if self.epsilon > 0:
            chosen = self._explore(chosen, pool, np.random.default_rng(seed))
        return np.array(chosen, dtype=np.int64)

    def _mmr(self, scores: Scores, pool: npt.NDArray[np.int64], k: int) -> list[int]:
        assert self.item_vectors is not None
        vectors = self.item_vectors[pool]
        relevance = normalised(scores[pool])
        chosen: list[int] = []
        closest = np.full(len(pool), -np.inf)
        for _ in range(min(k, len(pool))):
            penalty = np.where(np.isfinite(closest), closest, 0.0)
            value = self.mmr_lambda * relevance - (1 - self.mmr_lambda) * penalty
            value[chosen] = -np.inf
            best = int(np.argmax(value))
            chosen.append(best)
            # One row of similarities per chosen item, not the pool x pool matrix: memory
            # O(pool) whatever k (k = 1,000 made a 5,000 x 5,000 matrix).
            closest = np.maximum(closest, vectors @ vectors[best])
        return [int(pool[i]) for i in chosen]

    def _explore(self, chosen: list[int], pool: npt.NDArray[np.int64], rng: np.random.Generator) -> list[int]:
        spare = [int(i) for i in pool if int(i) not in set(chosen)]
        rng.shuffle(spare)
        explored = []
        for item in chosen:
            explored.append(spare.pop() if spare and rng.random() < self.epsilon else item)
        return explored

    def nbytes(self) -> int:
        vectors = 0 if self.item_vectors is None else int(self.item_vectors.nbytes)
        return sum(model.nbytes() for _, model in self.components) + vectors


class Hybrid(Strategy):
    space = SPACE
    stored = True  # its components train (item_knn, als): a serving replica loads it

    def __init__(self, components: Mapping[str, Strategy]) -> None:
        self.components = dict(components)

    def fit(self, data: TrainingData, params: Mapping[str, ParamValue], live: ScoringData | None) -> HybridModel:
        for name in NEEDS_VECTORS:
            if float(params[f"w_{name}"]) > 0 and name not in self.components:
                raise FailedPrecondition(
                    f"configuration.params['w_{name}']: {name} is not available (no EmbeddingService)"
                )
        components: list[tuple[float, FittedModel]] = []
        item_vectors = None
        for name, strategy in self.components.items():
            weight = float(params[f"w_{name}"])
            if weight <= 0 and not (name == "als" and float(params["mmr_lambda"]) < 1.0):
                continue
            model = strategy.fit(data, strategy.space.canonical({}), live)
            if isinstance(model, AlsModel):
                factors = model.item_factors.astype(np.float64)
                item_vectors = factors / (np.linalg.norm(factors, axis=1, keepdims=True) + 1e-12)
            if weight > 0:
                components.append((weight, model))
        if not components:
            popularity = self.components["popularity"]
            components.append((1.0, popularity.fit(data, popularity.space.canonical({}), live)))
        return HybridModel(components, item_vectors, float(params["mmr_lambda"]), float(params["epsilon"]))
