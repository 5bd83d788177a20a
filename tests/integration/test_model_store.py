"""Fitted models kept in the database (issue #18), on SQLite and PostgreSQL: a restarted or
new replica loads the newest model instead of fitting, and replicas sharing the database do
not fit the same configuration at once (one fits, the other loads its result)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from services.common.migrations import migrate
from services.common.storage import make_engine
from services.scoring.core.freshness import RefitPolicy
from services.scoring.core.model_store import ModelStore
from services.scoring.core.service import ScoringCore, ScoringLimits
from services.scoring.core.strategies.base import ScoringContext
from services.scoring.core.strategies.registry import default_registry
from services.scoring.core.tables import SCHEMA
from tests.unit.test_online_learning import small_world

pytestmark = pytest.mark.integration


class CountingFits:
    """Counts the fits a strategy really runs (a wrapper around the real ALS, not a stand-in)."""

    def __init__(self) -> None:
        self.als = default_registry()["als"]
        self.space = self.als.space
        self.stored = True
        self.fits = 0

    def fit(self, data, params, live):
        self.fits += 1
        return self.als.fit(data, params, live)


def replica(url: str, strategy: CountingFits) -> ScoringCore:
    engine = make_engine(url)
    migrate(engine, SCHEMA)
    core = ScoringCore({"als": strategy}, ScoringLimits(refit=RefitPolicy(0, 0, 0)), models=ModelStore(engine))
    small_world(core)
    return core


def test_a_restarted_replica_loads_the_model_instead_of_fitting(database_url: str) -> None:
    first_strategy, second_strategy = CountingFits(), CountingFits()
    first = replica(database_url, first_strategy)
    configuration = first.configuration("als", {"factors": 8, "iterations": 3})
    fitted = first.fitted(configuration)
    second = replica(database_url, second_strategy)  # a restart, or a new replica
    loaded = second.fitted(configuration)
    assert (first_strategy.fits, second_strategy.fits) == (1, 0)
    assert (loaded.watermark, loaded.fitted_at, loaded.calibration) == (
        fitted.watermark,
        fitted.fitted_at,
        fitted.calibration,
    )
    history = second.data.history("u3")
    context = ScoringContext(history, loaded.user_rows["u3"], 0.0)
    assert np.array_equal(loaded.model.scores(context), fitted.model.scores(context))
    assert second.rank(configuration, "u3", [], 5, []) == first.rank(configuration, "u3", [], 5, [])
    assert ModelStore(make_engine(database_url)).sizes()["als"] > 0


def test_a_replica_waits_for_the_fit_another_replica_holds_the_lease_on(database_url: str) -> None:
    fitter_strategy, waiter_strategy = CountingFits(), CountingFits()
    fitter, waiter = replica(database_url, fitter_strategy), replica(database_url, waiter_strategy)
    configuration = fitter.configuration("als", {"factors": 8, "iterations": 3})
    assert fitter.models is not None
    assert fitter.models.try_lease(configuration.hash, fitter.replica, 60)  # the fitter is busy with it

    def finish_later() -> None:
        time.sleep(1.0)
        fitter.models.release(configuration.hash, fitter.replica)  # type: ignore[union-attr]
        fitter.fitted(configuration)

    threading.Thread(target=finish_later).start()
    started = time.monotonic()
    loaded = waiter.fitted(configuration)
    assert time.monotonic() - started >= 0.9
    assert waiter_strategy.fits + fitter_strategy.fits == 1  # one of them fitted, the other loaded
    assert loaded.watermark == 240


def test_a_lease_is_one_holders_until_it_expires(database_url: str) -> None:
    clock = [1000.0]
    engine = make_engine(database_url)
    migrate(engine, SCHEMA)
    store = ModelStore(engine, clock=lambda: clock[0])
    assert store.try_lease("h", "a", 10) and store.try_lease("h", "a", 10)  # taken, then renewed
    assert not store.try_lease("h", "b", 10)
    clock[0] += 11
    assert store.try_lease("h", "b", 10)  # a's lease ran out
    store.release("h", "a")  # not a's any more: nothing happens
    assert not store.try_lease("h", "a", 10)
    store.release("h", "b")
    assert store.try_lease("h", "a", 10)
