"""Online learning in ScoringService's core (issue #18), without gRPC: ALS fold-in of a
user's new interactions, the refit policy, background refits that replace a model whole,
failed refits that keep the old model, the most-served model first, and freshness."""

from __future__ import annotations

import time

import numpy as np
import pytest

from rectune.domain.events import Interaction, Item
from rectune.domain.space import StrategySpace
from services.scoring.core.freshness import RefitPolicy
from services.scoring.core.service import ScoringCore, ScoringLimits
from services.scoring.core.strategies.base import ScoringContext, Strategy
from services.scoring.core.strategies.registry import default_registry

N_ITEMS, N_USERS = 60, 40


def small_world(core: ScoringCore) -> None:
    """Users who like items of their own block of ten, with a little noise: enough for ALS."""
    rng = np.random.default_rng(5)
    core.data.upsert_items([Item(str(i), f"item {i}") for i in range(N_ITEMS)])
    rows = []
    for user in range(N_USERS):
        block = (user % 6) * 10
        for n, item in enumerate(rng.choice(np.arange(block, block + 10), size=6, replace=False)):
            rows.append(Interaction(f"u{user}", str(item), 1.0, 1_000_000.0 + user * 100 + n))
    core.data.add_interactions(rows)


def core_with(policy: RefitPolicy, registry=None) -> ScoringCore:
    core = ScoringCore(registry or default_registry(), ScoringLimits(refit=policy))
    small_world(core)
    return core


def wait_for_fits(core: ScoringCore) -> None:
    core.wait_for_fits(timeout=30)
    assert not core.fitting()


def test_refit_policy_reasons() -> None:
    policy = RefitPolicy(interactions=100, share=0.5, max_age_seconds=60)
    assert policy.reason(1000, 0.0, 1099, 10.0) is None
    assert policy.reason(1000, 0.0, 1100, 10.0) == "100 interactions since the fit (refit after 100)"
    assert policy.reason(10, 0.0, 15, 10.0) == "5 interactions since the fit, 50.0% of those fitted on"
    assert policy.reason(1000, 0.0, 1000, 61.0) == "fitted 61 s ago (refit after 60 s)"
    assert RefitPolicy(0, 0, 0).reason(10, 0.0, 10_000, 1e9) is None  # every rule off


def implicit_als_user(item_factors: np.ndarray, history, alpha: float, regularization: float) -> np.ndarray:
    """The user's factor from the implicit-feedback ALS objective written out over the whole
    catalogue (Hu, Koren and Volinsky): minimise sum_i c_i (p_i - x.y_i)^2 + reg |x|^2, with
    p_i = 1 and c_i = 1 + alpha * r_i on the user's items, p_i = 0 and c_i = 1 elsewhere."""
    y = item_factors.astype(np.float64)
    confidence, preference = np.ones(len(y)), np.zeros(len(y))
    confidence[history.items] = 1.0 + alpha * history.values
    preference[history.items] = 1.0
    normal = y.T @ (confidence[:, None] * y) + regularization * np.eye(y.shape[1])
    return np.linalg.solve(normal, y.T @ (confidence * preference))


def test_a_click_changes_the_users_next_als_list_without_a_refit() -> None:
    core = core_with(RefitPolicy(0, 0, 0))
    als = core.configuration("als", {"factors": 8, "iterations": 5})
    fitted = core.fitted(als)
    before = core.rank(als, "u0", [], 10, [])
    history = core.data.history("u0")
    model = fitted.model
    # The user's stored factor while their history is what the fit saw ...
    train_rows = fitted.model.fitted_counts[fitted.user_rows["u0"]]  # type: ignore[attr-defined]
    assert train_rows == len(history.items) - 1  # the newest one was set aside for calibration
    # ... then, with clicks on another block, a factor solved from the current history.
    core.data.add_interactions([Interaction("u0", str(i), 5.0, 2_000_000.0 + i) for i in (55, 56, 57, 58)])
    after = core.rank(als, "u0", [], 10, [])
    assert [s.item_id for s in after] != [s.item_id for s in before]
    assert core.fitted_models.get(als.hash) is fitted  # no refit happened
    current = core.data.history("u0")
    expected = model.item_factors @ implicit_als_user(model.item_factors, current, 2.0, 0.05).astype(np.float32)  # type: ignore[attr-defined]
    context = ScoringContext(current, fitted.user_rows["u0"], time.time())
    assert model.scores(context) == pytest.approx(expected.astype(np.float64), rel=1e-5)


def test_a_heavy_user_keeps_the_fits_vector_instead_of_a_fold_in_per_request() -> None:
    """A fold-in costs history x factors^2: past FOLD_IN_MAX_WORK for what the fit saw, the
    user's vector is the fit's until the next refit (their newest items are still never
    ranked); a light user's new clicks fold in at once."""
    from services.scoring.core.strategies.als import FOLD_IN_MAX_WORK, AlsModel

    core = core_with(RefitPolicy(0, 0, 0))
    als = core.configuration("als", {"factors": 8, "iterations": 5})
    fitted = core.fitted(als)
    model = fitted.model
    assert isinstance(model, AlsModel)
    row = fitted.user_rows["u0"]
    history = core.data.history("u0")
    context = ScoringContext(history, row, time.time())
    stored = model.user_factors[row]
    assert not np.array_equal(model.query(context), stored)  # light: folded in (the newest was held out)
    model.fitted_counts[row] = FOLD_IN_MAX_WORK // 64 + 1  # as a heavy user's
    assert np.array_equal(model.query(context), stored)
    clicked = [Interaction("u0", str(i), 5.0, 2_000_000.0 + i) for i in (55, 56)]
    core.data.add_interactions(clicked)
    ranked = [s.item_id for s in core.rank(als, "u0", [], 10, [])]
    assert not {"55", "56"} & set(ranked)


def test_a_due_model_is_refit_in_the_background_and_replaced_whole() -> None:
    core = core_with(RefitPolicy(interactions=5, share=0, max_age_seconds=0))
    als = core.configuration("als", {"factors": 8, "iterations": 5})
    first = core.fitted(als)
    assert core.refresh() is None  # nothing new
    core.data.add_interactions([Interaction("u1", str(i), 1.0, 2_000_000.0 + i) for i in range(5)])
    fresh = core.freshness(first)
    assert (fresh.interactions_at_fit, fresh.interactions_since_fit, fresh.refits) == (240, 5, 0)
    assert core.refresh() == als.hash
    wait_for_fits(core)
    second = core.fitted_models.get(als.hash)
    assert second is not first and second is not None
    assert (second.watermark, second.refits) == (245, 1)
    assert core.freshness(second).interactions_since_fit == 0
    assert core.refresh() is None  # fresh again


class StandInFailingRefits(Strategy):
    """Stand-in (unit test of the refit bookkeeping around a strategy): popularity whose
    every fit after the first raises."""

    space = StrategySpace("flaky", "fails on refit", ())

    def __init__(self) -> None:
        self.popularity = default_registry()["popularity"]
        self.fits = 0

    def fit(self, data, params, live):
        self.fits += 1
        if self.fits > 1:
            raise RuntimeError("the refit broke")
        return self.popularity.fit(data, self.popularity.space.canonical({}), live)


def test_a_failed_refit_keeps_the_old_model_counts_and_waits_for_more_data() -> None:
    flaky = StandInFailingRefits()
    core = core_with(RefitPolicy(interactions=1, share=0, max_age_seconds=0), {"flaky": flaky})
    configuration = core.configuration("flaky", {})
    first = core.fitted(configuration)
    core.data.add_interactions([Interaction("u1", "3", 1.0, 2_000_000.0)])
    assert core.refresh() == configuration.hash
    wait_for_fits(core)
    assert core.fitted_models.get(configuration.hash) is first
    assert core.rank(configuration, "u1", [], 3, [])  # still serving
    assert core.freshness(first).refit_failures == 1
    assert core.refresh() is None  # not retried on the same data
    core.data.add_interactions([Interaction("u2", "4", 1.0, 2_000_001.0)])
    assert core.refresh() == configuration.hash  # retried once more arrived
    wait_for_fits(core)
    assert core.freshness(first).refit_failures == 2


def test_the_due_model_most_served_since_its_fit_is_refit_first() -> None:
    core = core_with(RefitPolicy(interactions=1, share=0, max_age_seconds=0))
    quiet = core.configuration("item_knn", {})
    busy = core.configuration("popularity", {})
    core.rank(quiet, "u1", [], 3, [])
    for _ in range(3):
        core.rank(busy, "u1", [], 3, [])
    core.data.add_interactions([Interaction("u3", "7", 1.0, 2_000_000.0)])
    assert core.refresh() == busy.hash
    wait_for_fits(core)
    # Both due again: busy has served more in all, quiet more since its fit: quiet's turn
    # (the busiest model, always due, must not starve the others).
    core.data.add_interactions([Interaction("u4", "8", 1.0, 2_000_001.0)])
    assert core.refresh() == quiet.hash
    wait_for_fits(core)
    assert core.freshness(core.fitted(busy)).served == 3


def test_a_two_tower_refit_starts_from_the_serving_weights_and_new_rows_keep_their_own() -> None:
    import torch

    from services.scoring.core.strategies.two_tower import SPACE, net_shape
    from services.scoring.core.strategies.two_tower_net import TwoTowerNet

    shape = net_shape(SPACE.canonical({"dimension": 8, "layers": 1, "hidden_size": 16, "user_id_embedding": True}))
    text = torch.randn(12, 6, generator=torch.Generator().manual_seed(1))
    old = TwoTowerNet(text[:10], 5, shape, torch.Generator().manual_seed(2))
    new = TwoTowerNet(text, 7, shape, torch.Generator().manual_seed(3))  # two items, two users since
    untouched = {name: value.clone() for name, value in new.state_dict().items()}
    new.start_from(old)
    assert new.item_ids is not None and old.item_ids is not None
    assert new.user_ids is not None and old.user_ids is not None
    assert torch.equal(new.projection, old.projection)
    assert torch.equal(new.item_head.weights[0], old.item_head.weights[0])
    assert torch.equal(new.item_ids[:10], old.item_ids)
    assert torch.equal(new.item_ids[10:], untouched["item_ids"][10:])
    assert torch.equal(new.user_ids[:5], old.user_ids) and torch.equal(new.user_ids[5:], untouched["user_ids"][5:])
    assert torch.equal(new.text, text)  # the text vectors are the new fit's own
