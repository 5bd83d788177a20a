"""Offline evaluation (ScoringCore.evaluate) fits on the training part of its split only, and
its metrics equal the definition's, computed again in tests/heldout.py.

Memoriser below is NOT a recommender: a stand-in strategy, in this unit test of the evaluation
around it, that scores exactly what it was fitted on. Fitted on the training part it knows
nothing of the held-out items, so its lists are no better than chance; had the evaluation
fitted it on every interaction, it would find each user's held-out items at the top."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pytest

from rectune.domain.configuration import Configuration, ParamValue
from rectune.domain.events import Interaction, Item
from rectune.domain.space import StrategySpace
from services.scoring.core.data import ScoringData, TrainingData
from services.scoring.core.service import ScoringCore
from services.scoring.core.strategies.base import FittedModel, ScoringContext, Strategy
from services.scoring.core.strategies.popularity import DAY
from services.scoring.core.strategies.registry import default_registry
from tests.heldout import popularity_ranking, reference_metrics, split_by_time

N_USERS, N_ITEMS, PER_USER, HOLDOUT, K = 120, 200, 20, 0.2, 10


class MemorisedModel(FittedModel):
    def __init__(self, data: TrainingData) -> None:
        self.rows = data.user_item_matrix()
        self.n_items = data.n_items

    def scores(self, context: ScoringContext) -> np.ndarray:
        # Below every memorised score, a random order of the rest: ties would otherwise go to
        # the lowest item positions, which are this data's most popular items.
        noise = np.random.default_rng(context.user_row).random(self.n_items) * 1e-3
        if context.user_row is None:
            return noise
        return np.asarray(self.rows[context.user_row].todense()).ravel().astype(np.float64) + noise

    def nbytes(self) -> int:
        return int(self.rows.data.nbytes)


class Memoriser(Strategy):
    """NOT a recommender (see the module's docstring)."""

    space = StrategySpace("memoriser")

    def fit(self, data: TrainingData, params: Mapping[str, ParamValue], live: ScoringData | None) -> MemorisedModel:
        return MemorisedModel(data)


class LeakyMemoriser(Strategy):
    """NOT a recommender: a Memoriser that ignores what it is given and fits on ``everything``."""

    space = StrategySpace("leaky")

    def __init__(self, everything: TrainingData) -> None:
        self.everything = everything

    def fit(self, data: TrainingData, params: Mapping[str, ParamValue], live: ScoringData | None) -> MemorisedModel:
        return MemorisedModel(self.everything)


def interactions(seed: int) -> list[Interaction]:
    """Each user rates PER_USER distinct items at increasing times; items drawn by a power law,
    so popularity carries signal."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, N_ITEMS + 1)
    rows = []
    for user in range(N_USERS):
        items = rng.choice(N_ITEMS, size=PER_USER, replace=False, p=weights / weights.sum())
        start = 1_600_000_000 + rng.integers(0, 90) * DAY
        for n, item in enumerate(items):
            rows.append(Interaction(f"u{user}", str(item), 1.0, float(start + n * 3600 + rng.integers(0, 60))))
    return rows


def core_with(rows: list[Interaction]) -> ScoringCore:
    registry: dict[str, Strategy] = {**default_registry(), "memoriser": Memoriser()}
    core = ScoringCore(registry)
    core.data.upsert_items([Item(str(i), f"item {i}") for i in range(N_ITEMS)])
    core.data.add_interactions(rows)
    return core


def test_a_model_that_memorises_its_training_data_scores_no_better_than_chance_on_held_out_data() -> None:
    rows = interactions(seed=1)
    core = core_with(rows)
    split = split_by_time([(r.user_id, r.item_id, r.time) for r in rows], HOLDOUT)
    # A list of K items drawn at random from the n the user has not seen holds each relevant
    # item with probability K / n: chance's expected recall.
    chance_recall = np.mean([K / (N_ITEMS - len(split.seen[user])) for user in split.held_out])
    memorised = core.evaluate(Configuration("memoriser", {}), K, HOLDOUT).metrics
    assert memorised.users_evaluated == len(split.held_out) == N_USERS
    assert memorised.recall <= chance_recall + 3 * math.sqrt(chance_recall / (N_USERS * 4)), (
        memorised.recall,
        chance_recall,
    )
    # The same model fitted on everything finds the held-out items: what the split prevents.
    core.registry["leaky"] = LeakyMemoriser(core.data.snapshot())
    assert core.evaluate(Configuration("leaky", {}), K, HOLDOUT).metrics.ndcg == pytest.approx(1.0)
    core.close()


@pytest.mark.parametrize("seed", [1, 2])
def test_evaluation_of_popularity_equals_the_definition_computed_independently(seed: int) -> None:
    rows = interactions(seed)
    core = core_with(rows)
    catalogue = [str(i) for i in range(N_ITEMS)]
    split = split_by_time([(r.user_id, r.item_id, r.time) for r in rows], HOLDOUT)
    ranking = popularity_ranking(split.train, catalogue, 30 * DAY)
    expected = reference_metrics(split, catalogue, lambda user: ranking, K)
    got = core.evaluate(Configuration("popularity", {"half_life_days": 30.0}), K, HOLDOUT).metrics
    assert (got.ndcg, got.recall, got.hit_rate, got.catalog_coverage, got.users_evaluated) == pytest.approx(
        (expected.ndcg, expected.recall, expected.hit_rate, expected.coverage, expected.users), rel=1e-12
    )
    core.close()
