"""ScoringService's offline evaluation at a lower fidelity, and the EASE strategy, on the
service's own code (no gRPC) with synthetic interactions (tests/unit/test_evaluation_split's)."""

from __future__ import annotations

import numpy as np
import pytest

from rectune.domain.errors import FailedPrecondition, InvalidArgument
from rectune.domain.events import Item
from rectune.domain.fidelity import Fidelity, budgeted_count
from services.scoring.core.data import ScoringData
from services.scoring.core.ranking import time_split
from services.scoring.core.service import ScoringCore
from services.scoring.core.strategies import ease
from services.scoring.core.strategies.base import ScoringContext
from services.scoring.core.strategies.registry import default_registry
from tests.unit.test_evaluation_split import N_ITEMS, interactions


@pytest.fixture(scope="module")
def core() -> ScoringCore:
    service = ScoringCore(default_registry())
    service.upsert_items([Item(str(i), f"item {i}") for i in range(N_ITEMS)])
    service.add_interactions(interactions(seed=3))
    return service


@pytest.mark.parametrize(
    ("full", "budget", "count"), [(15, 1 / 9, 2), (15, 1 / 3, 5), (10, 1 / 9, 1), (1, 0.01, 1), (20, 1.0, 20)]
)
def test_a_budget_is_whole_epochs_at_least_one(full: int, budget: float, count: int) -> None:
    assert budgeted_count(full, budget) == count


def test_als_at_a_third_of_its_budget_fits_a_third_of_its_sweeps(core: ScoringCore) -> None:
    low = core.evaluate(core.configuration("als", {"iterations": 15}), 10, 0.2, fidelity=Fidelity(1 / 3))
    assert low.fitted == core.configuration("als", {"iterations": 5})
    assert low.fidelity == Fidelity(5 / 15, 1.0)
    same = core.evaluate(core.configuration("als", {"iterations": 5}), 10, 0.2)
    assert low.metrics == same.metrics  # the low-fidelity screen is the smaller fit, nothing else


def test_a_strategy_without_a_budget_axis_is_evaluated_in_full(core: ScoringCore) -> None:
    low = core.evaluate(core.configuration("item_knn", {}), 10, 0.2, fidelity=Fidelity(0.1))
    assert low.fidelity.training_budget == 1.0
    assert low.metrics == core.evaluate(core.configuration("item_knn", {}), 10, 0.2).metrics


def test_a_user_sample_is_seeded_and_shared_with_the_baseline(core: ScoringCore) -> None:
    every = core.evaluate(core.configuration("item_knn", {}), 10, 0.2)
    half = core.evaluate(
        core.configuration("item_knn", {}), 10, 0.2, core.configuration("popularity", {}), fidelity=Fidelity(1.0, 0.5)
    )
    assert half.metrics.users_evaluated == round(every.metrics.users_evaluated * 0.5)
    assert half.comparison is not None and half.comparison.baseline.users_evaluated == half.metrics.users_evaluated
    again = core.evaluate(core.configuration("item_knn", {}), 10, 0.2, fidelity=Fidelity(1.0, 0.5))
    assert again.metrics == half.metrics


@pytest.mark.parametrize(
    ("fidelity", "message"),
    [
        ((0.0, 1.0), "fidelity.training_budget: must be in (0, 1], got 0"),
        ((1.0, 1.5), "fidelity.user_fraction: must be in (0, 1], got 1.5"),
        ((float("nan"), 1.0), "fidelity.training_budget: must be in (0, 1], got nan"),
    ],
)
def test_a_fidelity_outside_its_range_is_refused_by_field(fidelity: tuple[float, float], message: str) -> None:
    with pytest.raises(InvalidArgument) as error:
        Fidelity(*fidelity)
    assert str(error.value) == message


def test_ease_is_the_closed_form_of_its_definition(core: ScoringCore) -> None:
    split = time_split(core.data.snapshot(), 0.2)
    model = default_registry()["ease"].fit(split.train, {"l2": 30.0}, None)
    assert isinstance(model, ease.EaseModel)
    x = (split.train.user_item_matrix().toarray() > 0).astype(np.float64)
    p = np.linalg.inv(x.T @ x + 30.0 * np.eye(x.shape[1]))
    expected = np.eye(x.shape[1]) - p / np.diag(p)[None, :]
    np.testing.assert_allclose(model.weights, expected, atol=1e-5)
    assert not np.diag(model.weights).any()
    user = 7
    context = ScoringContext(split.train.histories()[user], user, 0.0)
    np.testing.assert_allclose(model.scores(context), x[user] @ expected, atol=1e-4)
    items = np.array([3, 1, 40])
    np.testing.assert_allclose(model.scores_at(context, items), (x[user] @ expected)[items], atol=1e-4)


def test_ease_refuses_a_catalogue_its_inverse_cannot_hold(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ease, "MAX_ITEMS", 10)
    data = ScoringData()
    data.upsert_items([Item(str(i), "") for i in range(11)])
    with pytest.raises(FailedPrecondition) as error:
        default_registry()["ease"].fit(data.snapshot(), {"l2": 1.0}, None)
    assert str(error.value) == (
        "ease: the catalogue has 11 items, more than the 10 whose items x items inverse fits in memory; "
        "use als or item_knn"
    )
