"""A weighted blend of tuned configurations of other strategies: the tuner's way to combine
its best screened models (tuner.blend proposes them).

Unlike ``hybrid``, whose components run at their defaults, each member of a blend carries its
own hyperparameters, named ``<member>.<parameter>`` and checked by the member's own rule, so
a blend is one self-contained configuration (its hash names every member's settings) that
any replica can fit. Members with weight 0 are not fitted. Each member's scores are min-max
normalised per request before weighting, as hybrid's are, so only the weights' ratios matter.
A blend fits its members through the fit memo, so that a screen of a blend reuses the fits
its members' own screens made on the same training data.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

import numpy as np

from rectune.domain.configuration import ParamValue
from rectune.domain.errors import FailedPrecondition
from rectune.domain.space import Hyperparameter, ParamType, StrategySpace
from services.scoring.core.data import ScoringData, TrainingData
from services.scoring.core.fit_memo import FitMemo
from services.scoring.core.strategies import als, content, ease, item_knn, popularity, two_tower
from services.scoring.core.strategies.base import FittedModel, Scores, ScoringContext, Strategy
from services.scoring.core.strategies.hybrid import normalised

# Every strategy a blend may hold, declared whether or not this replica has item vectors (so
# that a blend valid on one replica is valid on all); content and two_tower need them to fit.
MEMBER_SPACES: tuple[StrategySpace, ...] = (
    popularity.SPACE,
    item_knn.SPACE,
    als.SPACE,
    ease.SPACE,
    content.SPACE,
    two_tower.SPACE,
)
DEFAULT_MEMBER = "als"  # a blend at its defaults is als at its defaults


def weight_name(member: str) -> str:
    return f"w_{member}"


def member_param(member: str, param: str) -> str:
    return f"{member}.{param}"


def _member_hyperparameters(space: StrategySpace) -> tuple[Hyperparameter, ...]:
    weight = Hyperparameter(
        weight_name(space.strategy),
        ParamType.FLOAT,
        1.0 if space.strategy == DEFAULT_MEMBER else 0.0,
        f"weight of the {space.strategy} member (0: not in the blend)",
        0.0,
        1.0,
    )
    params = tuple(
        replace(h, name=member_param(space.strategy, h.name), description=f"{space.strategy}: {h.description}")
        for h in space.hyperparameters
    )
    return (weight, *params)


SPACE = StrategySpace(
    "blend",
    "Weighted blend of tuned configurations of popularity, item_knn, als, ease, content and two_tower "
    "(each member's scores normalised); proposed by the tuner from its best screened configurations.",
    tuple(h for space in MEMBER_SPACES for h in _member_hyperparameters(space)),
)


def member_params(params: Mapping[str, ParamValue], member: str) -> dict[str, ParamValue]:
    """The member's own hyperparameters out of a blend's."""
    prefix = f"{member}."
    return {name[len(prefix) :]: value for name, value in params.items() if name.startswith(prefix)}


class BlendModel(FittedModel):
    def __init__(self, members: list[tuple[float, FittedModel]]) -> None:
        self.members = members
        self.n_items = members[0][1].n_items

    def scores(self, context: ScoringContext) -> Scores:
        total = np.zeros(self.n_items)
        for weight, model in self.members:
            total += weight * normalised(model.scores(context))
        return total

    def nbytes(self) -> int:
        return sum(model.nbytes() for _, model in self.members)


class Blend(Strategy):
    space = SPACE
    stored = True  # its members train: a serving replica loads it

    def __init__(self, members: Mapping[str, Strategy], memo: FitMemo | None = None) -> None:
        self.members = dict(members)
        self.memo = memo if memo is not None else FitMemo()

    def fit(self, data: TrainingData, params: Mapping[str, ParamValue], live: ScoringData | None) -> BlendModel:
        weighted = [(space.strategy, float(params[weight_name(space.strategy)])) for space in MEMBER_SPACES]
        chosen = [(name, weight) for name, weight in weighted if weight > 0]
        if not chosen:
            raise FailedPrecondition("configuration.params: a blend needs at least one member weight above 0")
        for name, _ in chosen:
            if name not in self.members:
                raise FailedPrecondition(
                    f"configuration.params[{weight_name(name)!r}]: {name} is not available (no EmbeddingService)"
                )
        return BlendModel([(weight, self._fit_member(name, data, params, live)) for name, weight in chosen])

    def _fit_member(
        self, name: str, data: TrainingData, params: Mapping[str, ParamValue], live: ScoringData | None
    ) -> FittedModel:
        strategy = self.members[name]
        own = strategy.space.canonical(member_params(params, name), f"configuration.params[{name}.*]")
        if live is None:
            return self.memo.fit(strategy, data, own)
        return strategy.fit(data, own, live)
