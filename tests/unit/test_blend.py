"""Blends of tuned configurations: ScoringService's ``blend`` strategy and its fit memo on the
service's own code (no gRPC, synthetic interactions of tests/unit/test_evaluation_split), and
the tuner's blend source on hand-written histories."""

from __future__ import annotations

import numpy as np
import pytest

from rectune.domain.configuration import Configuration
from rectune.domain.errors import FailedPrecondition, InvalidArgument
from rectune.domain.events import Item
from rectune.domain.space import SearchSpace
from services.scoring.core.data import History
from services.scoring.core.fit_memo import FitMemo
from services.scoring.core.ranking import time_split
from services.scoring.core.service import ScoringCore
from services.scoring.core.strategies import blend as blend_strategy
from services.scoring.core.strategies.base import ScoringContext
from services.scoring.core.strategies.registry import default_registry
from tests.unit.test_evaluation_split import N_ITEMS, interactions
from tuner.blend import BLEND, BlendProposer, Unblended
from tuner.proposers import Observation, TpeProposer
from tuner.sources import TPE, SourceBandit


@pytest.fixture(scope="module")
def core() -> ScoringCore:
    memo = FitMemo()
    service = ScoringCore(default_registry(memo=memo), memo=memo)
    service.upsert_items([Item(str(i), f"item {i}") for i in range(N_ITEMS)])
    service.add_interactions(interactions(seed=5))
    return service


def context_of(core: ScoringCore, user_row: int) -> ScoringContext:
    train = core.data.snapshot()
    items = train.items[train.users == user_row]
    return ScoringContext(History(items, np.ones(len(items)), np.arange(len(items), dtype=float)), user_row, 0.0)


def min_max(scores: np.ndarray) -> np.ndarray:
    scaled: np.ndarray = (scores - scores.min()) / (scores.max() - scores.min())
    return scaled


def test_a_blends_scores_are_the_weighted_sum_of_its_members_min_max_normalised(core: ScoringCore) -> None:
    data = core.data.snapshot()
    registry = core.registry
    params = core.configuration(
        "blend", {"w_als": 0.3, "w_item_knn": 0.7, "item_knn.neighbours": 20, "als.factors": 16}
    ).params
    model = registry["blend"].fit(data, params, None)
    als = registry["als"].fit(data, core.configuration("als", {"factors": 16}).params, None)
    knn = registry["item_knn"].fit(data, core.configuration("item_knn", {"neighbours": 20}).params, None)
    for row in (0, 7, 31):
        context = context_of(core, row)
        expected = 0.3 * min_max(als.scores(context)) + 0.7 * min_max(knn.scores(context))
        np.testing.assert_allclose(model.scores(context), expected, rtol=1e-9, atol=1e-12)


def test_a_blend_at_its_defaults_ranks_as_als_at_its_defaults(core: ScoringCore) -> None:
    blend = core.evaluate(core.configuration("blend", {}), 10, 0.2)
    als = core.evaluate(core.configuration("als", {}), 10, 0.2)
    assert blend.metrics == als.metrics


def test_a_members_setting_is_checked_by_the_members_own_rule(core: ScoringCore) -> None:
    with pytest.raises(InvalidArgument) as error:
        core.configuration("blend", {"als.factors": 0})
    assert error.value.message == "configuration.params['als.factors']: must be between 8 and 512, got 0"
    with pytest.raises(InvalidArgument) as error:
        core.configuration("blend", {"als.depth": 3})
    assert "is not a hyperparameter of 'blend'" in error.value.message


def test_a_blend_without_weight_or_without_the_vectors_a_member_needs_is_refused(core: ScoringCore) -> None:
    with pytest.raises(FailedPrecondition) as error:
        core.evaluate(core.configuration("blend", {"w_als": 0.0}), 10, 0.2)
    assert error.value.message == "configuration.params: a blend needs at least one member weight above 0"
    with pytest.raises(FailedPrecondition) as error:
        core.evaluate(core.configuration("blend", {"w_two_tower": 0.5}), 10, 0.2)
    assert error.value.message == (
        "configuration.params['w_two_tower']: two_tower is not available (no EmbeddingService)"
    )


def test_a_blend_of_screened_members_reuses_their_fits(core: ScoringCore) -> None:
    memo = core.evaluator.memo
    core.evaluate(core.configuration("ease", {"l2": 40.0}), 10, 0.2)
    core.evaluate(core.configuration("item_knn", {"neighbours": 30}), 10, 0.2)
    fitted_before = memo.misses
    mixed = core.configuration("blend", {"w_ease": 1.0, "w_als": 0.0, "w_item_knn": 0.4, "ease.l2": 40.0})
    mixed = core.configuration("blend", {**mixed.params, "item_knn.neighbours": 30})
    core.evaluate(mixed, 10, 0.2)
    assert memo.misses == fitted_before + 1  # the blend itself; both members were remembered
    fitted_now = memo.misses
    core.evaluate(mixed, 10, 0.2)
    assert memo.misses == fitted_now  # the same blend on the same split: fitted once


def test_the_memo_keeps_its_byte_bound_and_forgets_the_least_recently_used(core: ScoringCore) -> None:
    train = time_split(core.data.snapshot(), 0.2).train
    popularity = core.registry["popularity"]
    one = popularity.fit(train, core.configuration("popularity", {}).params, None).nbytes()
    memo = FitMemo(max_bytes=2 * one)
    first, second, third = ({"half_life_days": days} for days in (1.0, 2.0, 3.0))
    for params in (first, second, first, third):  # first is used again: second is the oldest
        memo.fit(popularity, train, core.configuration("popularity", params).params)
    assert len(memo) == 2 and memo.misses == 3
    memo.fit(popularity, train, core.configuration("popularity", first).params)
    assert memo.misses == 3
    memo.fit(popularity, train, core.configuration("popularity", second).params)
    assert memo.misses == 4
    assert len(FitMemo(max_bytes=one - 1)) == 0


# -- the tuner's blend source -------------------------------------------------------------------

SPACE = SearchSpace(
    tuple(
        sorted(
            (strategy.space for strategy in default_registry().values()),
            key=lambda space: space.strategy,
        )
    )
)


def screened(strategy: str, value: float, budget: float = 1.0, **params: float) -> Observation:
    space = SPACE.by_strategy()[strategy]
    return Observation(Configuration(strategy, space.canonical(params)), value, budget)


HISTORY = [
    screened("popularity", 0.10),
    screened("als", 0.20, factors=32),
    screened("als", 0.17),
    screened("item_knn", 0.18),
    screened("ease", 0.21, l2=80.0),
    screened("ease", 0.30, 1 / 3, l2=5.0),  # pruned: never a member
    screened("hybrid", 0.25),  # a composite: never a member
]


def test_the_first_blend_holds_the_best_full_screen_of_the_three_best_strategies() -> None:
    (proposal,) = BlendProposer(seed=0).propose(SPACE, 1, set(), HISTORY)
    params = proposal.configuration.params
    assert proposal.configuration.strategy == BLEND
    assert {name: params[name] for name in params if name.startswith("w_")} == {
        "w_popularity": 0.0,
        "w_item_knn": 0.25,
        "w_als": 0.25,
        "w_ease": 1.0,
        "w_content": 0.0,
        "w_two_tower": 0.0,
    }
    assert params["ease.l2"] == 80.0 and params["als.factors"] == 32
    assert "als (0.2000)" in proposal.rationale and "a first blend" in proposal.rationale
    SPACE.by_strategy()[BLEND].canonical(params)  # valid as ScoringService checks it


def test_later_blends_of_the_same_members_tune_the_weights() -> None:
    (first,) = BlendProposer(seed=0).propose(SPACE, 1, set(), HISTORY)
    history = [*HISTORY, Observation(first.configuration, 0.22)]
    later = BlendProposer(seed=1).propose(SPACE, 3, {first.configuration.key()}, history)
    assert len(later) == 3
    for proposal in later:
        params = proposal.configuration.params
        assert params["w_ease"] == 1.0 and params["w_popularity"] == 0.0
        assert 0.0 <= float(params["w_als"]) <= 1.0 and 0.0 <= float(params["w_item_knn"]) <= 1.0
        assert "TPE fitted to 1 blends" in proposal.rationale


def test_no_blend_before_two_strategies_were_screened_in_full_or_without_blend_in_the_space() -> None:
    assert BlendProposer(seed=0).propose(SPACE, 1, set(), HISTORY[1:3]) == []
    assert BlendProposer(seed=0).propose(SPACE.without(BLEND), 1, set(), HISTORY) == []


def test_the_other_sources_search_the_space_without_blends() -> None:
    tpe_alone = Unblended(TpeProposer(seed=0)).propose(SPACE, 30, set(), HISTORY)
    assert tpe_alone and all(p.configuration.strategy != BLEND for p in tpe_alone)
    bandit = SourceBandit({TPE: TpeProposer(seed=0)}, seed=0)
    assert all(p.configuration.strategy != BLEND for p in bandit.propose(SPACE, 30, set(), HISTORY))
    assert blend_strategy.SPACE.strategy == BLEND
