"""Strategies by name. Adding one: a class with ``space`` and ``fit``, listed here."""

from __future__ import annotations

from rectune.domain.errors import InvalidArgument, quoted
from services.scoring.core.fit_memo import FitMemo
from services.scoring.core.strategies.als import Als
from services.scoring.core.strategies.base import Strategy
from services.scoring.core.strategies.blend import Blend
from services.scoring.core.strategies.content import Content
from services.scoring.core.strategies.ease import Ease
from services.scoring.core.strategies.hybrid import Hybrid
from services.scoring.core.strategies.item_knn import ItemKnn
from services.scoring.core.strategies.popularity import Popularity
from services.scoring.core.strategies.two_tower import DEFAULT_MAX_FIT_SECONDS, TwoTower
from services.scoring.core.vectors import ItemVectors


def default_registry(
    vectors: ItemVectors | None = None,
    max_fit_seconds: float = DEFAULT_MAX_FIT_SECONDS,
    memo: FitMemo | None = None,
) -> dict[str, Strategy]:
    """Every strategy; ``content`` and ``two_tower`` (and they inside ``hybrid`` and
    ``blend``) need item vectors. ``memo``: where a blend finds its members' frozen fits (the
    one the service's offline evaluation fills)."""
    components: dict[str, Strategy] = {"popularity": Popularity(), "item_knn": ItemKnn(), "als": Als()}
    if vectors is not None:
        components["content"] = Content(vectors)
        components["two_tower"] = TwoTower(vectors, max_fit_seconds)
    # EASE is not one of hybrid's components: hybrid's declared weights name its components.
    ease = Ease()
    strategies: list[Strategy] = [*components.values(), ease, Hybrid(components)]
    strategies.append(Blend({**components, "ease": ease}, memo))
    return {strategy.space.strategy: strategy for strategy in strategies}


def find(registry: dict[str, Strategy], name: str, where: str = "configuration.strategy") -> Strategy:
    strategy = registry.get(name)
    if strategy is None:
        raise InvalidArgument(where, f"unknown strategy {quoted(name)}; known: {', '.join(sorted(registry))}")
    return strategy
