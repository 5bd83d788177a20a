"""Fitted models kept in the database (issue #18), on SQLite and PostgreSQL: a restarted or
new replica loads the newest model instead of fitting, and replicas sharing the database do
not fit the same configuration at once (one fits, the other loads its result)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from rectune.domain.errors import FailedPrecondition, Unavailable
from rectune.domain.events import Interaction
from services.common.migrations import migrate
from services.common.storage import make_engine
from services.scoring.core.fitting import Fitted
from services.scoring.core.freshness import RefitPolicy
from services.scoring.core.model_store import ModelStore
from services.scoring.core.roles import Role
from services.scoring.core.service import ScoringCore, ScoringLimits
from services.scoring.core.strategies.base import ScoringContext, Strategy
from services.scoring.core.strategies.registry import default_registry
from services.scoring.core.tables import SCHEMA
from tests.unit.test_online_learning import small_world

pytestmark = pytest.mark.integration


class CountingFits(Strategy):
    """Counts the fits a strategy really runs (a wrapper around the real ALS, not a stand-in)."""

    def __init__(self) -> None:
        self.als = default_registry()["als"]
        self.space = self.als.space
        self.fits = 0

    stored = True

    def fit(self, data, params, live):
        self.fits += 1
        return self.als.fit(data, params, live)


def replica(url: str, strategy: CountingFits, store: ModelStore | None = None, role: Role = Role.ALL) -> ScoringCore:
    engine = make_engine(url)
    migrate(engine, SCHEMA)
    models = store or ModelStore(engine)
    limits = ScoringLimits(refit=RefitPolicy(0, 0, 0), role=role, fit_in_child_process=False)
    core = ScoringCore({"als": strategy}, limits, models=models)
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


class WatchedStore(ModelStore):
    """The real ModelStore, telling when a replica has looked for the lease's holder: by then
    it has found no stored model and is waiting."""

    def __init__(self, engine) -> None:
        super().__init__(engine)
        self.waiting = threading.Event()

    def lease_expiry(self, key: str) -> float | None:
        self.waiting.set()
        return super().lease_expiry(key)


def test_a_replica_waits_for_the_fit_another_replica_holds_the_lease_on(database_url: str) -> None:
    fitter_strategy, waiter_strategy = CountingFits(), CountingFits()
    fitter = replica(database_url, fitter_strategy)
    watched = WatchedStore(make_engine(database_url))
    waiter = replica(database_url, waiter_strategy, watched)
    configuration = fitter.configuration("als", {"factors": 8, "iterations": 3})
    assert fitter.models is not None
    assert fitter.models.try_lease(configuration.hash, fitter.replica, 60)  # the fitter is busy with it

    answers: list[Fitted] = []
    waiting = threading.Thread(target=lambda: answers.append(waiter.fitted(configuration)))
    waiting.start()
    assert watched.waiting.wait(timeout=60)
    assert waiter_strategy.fits == 0 and not answers  # waiting, not fitting
    fitter.fitted(configuration)  # renews its own lease, fits, stores, then releases
    waiting.join(timeout=60)
    assert not waiting.is_alive()
    assert (fitter_strategy.fits, waiter_strategy.fits) == (1, 0)  # the waiter loaded the fitter's model
    assert answers[0].watermark == 240


def test_a_serving_replica_loads_the_trainers_models_and_their_newer_refits(database_url: str) -> None:
    trainer_strategy, server_strategy = CountingFits(), CountingFits()
    trainer = replica(database_url, trainer_strategy, role=Role.TRAIN)
    server = replica(database_url, server_strategy, role=Role.SERVE)
    configuration = trainer.configuration("als", {"factors": 8, "iterations": 3})
    with pytest.raises(Unavailable):  # nothing stored yet, and a serving replica never fits
        server.fitted(configuration)
    with pytest.raises(FailedPrecondition):
        server.fit(configuration, wait=True)
    first = trainer.fitted(configuration)
    assert server.fitted(configuration).watermark == first.watermark
    # More data, a refit on the trainer: the server's refresh loads it instead of refitting.
    more = [Interaction(f"u{n}", str(n % 60), 1.0, 2_000_000.0 + n) for n in range(40)]
    for core in (trainer, server):
        core.add_interactions(more)
    assert server.refresh() is None  # nothing newer stored yet
    refit = trainer.scheduler.fit_now(configuration, first)
    assert server.refresh() == configuration.hash
    assert server.fitted(configuration).watermark == refit.watermark > first.watermark
    assert (trainer_strategy.fits, server_strategy.fits) == (2, 0)


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
