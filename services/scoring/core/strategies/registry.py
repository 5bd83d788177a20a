"""Strategies by name. Adding one: a class with ``space`` and ``fit``, listed here."""

from __future__ import annotations

from services.common.errors import InvalidArgument
from services.scoring.core.strategies.als import Als
from services.scoring.core.strategies.base import Strategy
from services.scoring.core.strategies.hybrid import Hybrid
from services.scoring.core.strategies.item_knn import ItemKnn
from services.scoring.core.strategies.popularity import Popularity


def default_registry() -> dict[str, Strategy]:
    strategies: list[Strategy] = [Popularity(), ItemKnn(), Als(), Hybrid()]
    return {strategy.space.strategy: strategy for strategy in strategies}


def find(registry: dict[str, Strategy], name: str, where: str = "configuration.strategy") -> Strategy:
    strategy = registry.get(name)
    if strategy is None:
        raise InvalidArgument(where, f"unknown strategy {name!r}; known: {', '.join(sorted(registry))}")
    return strategy
