"""Where and when fits run, off the request path.

One background thread runs fits and refits, one at a time. Strategies that need nothing but
the data (als, item_knn) fit in a spawned child process, so that a refit never holds the
interpreter lock that ranking needs. With a model store, a fit is leased: while another
replica fits a configuration, this one waits for that model and loads it; its own result
is stored for the others. Refits follow the RefitPolicy, the most-served due model first.

A serving-only replica (Role.SERVE) never trains: it fits only strategies whose fit trains
nothing (popularity, content), loads every other model from the store, and instead of
refitting it loads the newer models training replicas stored.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Mapping
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor

import structlog

from rectune.domain.configuration import Configuration
from rectune.domain.errors import FailedPrecondition, Unavailable
from services.scoring.core.data import ScoringData
from services.scoring.core.fitted_models import FittedModels
from services.scoring.core.fitting import Fitted, calibrate, calibration_split
from services.scoring.core.freshness import RefitPolicy
from services.scoring.core.offline_fit import OFFLINE, background_priority, fit_offline
from services.scoring.core.roles import Role, refused_here
from services.scoring.core.strategies.base import Strategy

log = structlog.get_logger(__name__)

LEASE_POLL_SECONDS = 0.5  # how often a replica waiting on another's fit looks for its model
OFFLINE_TYPES = tuple(type(strategy) for strategy in OFFLINE.values())  # fitted in a child process


class FitScheduler:
    def __init__(
        self,
        strategies: Mapping[str, Strategy],
        data: ScoringData,
        models: FittedModels,
        replica: str,
        refit: RefitPolicy,
        lease_seconds: float,
        in_child_process: bool,
        role: Role = Role.ALL,
    ) -> None:
        self.strategies = strategies
        self.role = role
        self.data = data
        self.models = models
        self.replica = replica  # this replica's name in the store's leases
        self.refit_policy = refit
        self.lease_seconds = lease_seconds
        self.in_child_process = in_child_process
        self._futures: dict[str, Future[Fitted]] = {}  # fits started here, by configuration hash
        self._futures_lock = threading.Lock()  # guards _futures and starting a fit
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fit")
        self._child: ProcessPoolExecutor | None = None  # spawned at the first fit sent to it
        self._child_pid = 0
        self._child_lock = threading.Lock()  # guards spawning the child
        self._load_lock = threading.Lock()  # one load from the store, not one per waiting request

    def close(self) -> None:
        self._thread.shutdown(wait=False, cancel_futures=True)
        with self._child_lock:
            if self._child is None:
                return
            # A fit in the child is not waited for: its process ends with the service.
            self._child.shutdown(wait=False, cancel_futures=True)
            with contextlib.suppress(ProcessLookupError):  # it ended already
                os.kill(self._child_pid, signal.SIGTERM)

    # -- starting fits ------------------------------------------------------------------------

    def start(self, configuration: Configuration) -> Future[Fitted]:
        """The fit of ``configuration`` running here, or a new one in the background."""
        with self._futures_lock:
            future = self._futures.get(configuration.hash)
            if future is None or future.done():
                future = self._thread.submit(self.fit_now, configuration)
                self._futures[configuration.hash] = future
            return future

    def running(self, key: str) -> Future[Fitted] | None:
        """The fit of this configuration hash that is running or queued here, if any."""
        with self._futures_lock:
            future = self._futures.get(key)
        return future if future is not None and not future.done() else None

    def busy(self) -> bool:
        """Whether a fit or refit is running or queued now."""
        with self._futures_lock:
            return self._busy()

    def _busy(self) -> bool:
        return any(not future.done() for future in self._futures.values())

    def wait(self, timeout: float = 600.0) -> None:
        """Until every fit and refit started so far has finished (benches, shutdown paths)."""
        with self._futures_lock:
            started = list(self._futures.values())
        for future in started:
            try:
                future.result(timeout)
            except Exception:  # a failed fit is logged and counted where it ran
                continue

    # -- the model to serve ----------------------------------------------------------------------

    def serving(self, configuration: Configuration, on_demand_limit: int) -> Fitted:
        """The model to serve: cached, else stored, else the running fit's, else fitted now
        when the data is at most ``on_demand_limit`` interactions (FAILED_PRECONDITION above)."""
        key = configuration.hash
        ready = self.models.get(key) or self.load_stored(configuration)
        if ready is not None:
            return ready
        if not self.may_fit(configuration):
            raise Unavailable(
                f"configuration: {configuration.strategy} {key} has no stored model yet; this replica only serves "
                "(--role serve) and loads what a training replica fits (FitConfiguration there)"
            )
        in_flight = self.running(key)
        if in_flight is not None:
            return in_flight.result()
        size = self.data.n_interactions
        if size > on_demand_limit:
            raise FailedPrecondition(
                f"configuration: {configuration.strategy} {key} is not fitted yet and the data ({size} interactions) "
                f"is above the on-demand limit ({on_demand_limit}); call FitConfiguration first"
            )
        return self.fit_now(configuration)

    def load_stored(self, configuration: Configuration) -> Fitted | None:
        """The newest stored model of the configuration, cached (a restart or a new replica loads
        rather than fits; a stale one is then refit in the background)."""
        if not self.stored(configuration):
            return None
        with self._load_lock:
            return self.models.get(configuration.hash) or self.models.load(configuration.hash, self.data.n_items)

    # -- fitting ------------------------------------------------------------------------------

    def may_fit(self, configuration: Configuration) -> bool:
        """Whether this replica fits the configuration itself (a serving one only what trains nothing)."""
        strategy = self.strategies.get(configuration.strategy)
        return self.role.fits or (strategy is not None and not strategy.trains)

    def stored(self, configuration: Configuration) -> bool:
        """Whether models of this configuration go to the model store (Strategy.stored)."""
        strategy = self.strategies.get(configuration.strategy)
        return self.models.store is not None and strategy is not None and strategy.stored

    def fit_now(self, configuration: Configuration, previous: Fitted | None = None) -> Fitted:
        """Fit on a snapshot of the data and serve the result, replacing ``previous`` (a refit)
        in one assignment; leased and stored when the configuration is stored."""
        if not self.may_fit(configuration):
            raise refused_here("FitConfiguration")
        store = self.models.store
        if store is None or not self.stored(configuration):
            return self._fit_and_serve(configuration, previous)
        key = configuration.hash
        after = -1 if previous is None else previous.watermark
        while not store.try_lease(key, self.replica, self.lease_seconds):
            loaded = self._wait_for_other_replica(key, after)
            if loaded is not None:
                return loaded
        try:
            fitted = self._fit_and_serve(configuration, previous)
            size = store.save(fitted)
            log.info("model_stored", configuration_hash=key, watermark=fitted.watermark, bytes=size)
            return fitted
        finally:
            store.release(key, self.replica)

    def _wait_for_other_replica(self, key: str, after_watermark: int) -> Fitted | None:
        """The model another replica is fitting, once stored; None when its lease ended
        without one (then this replica fits)."""
        store = self.models.store
        assert store is not None
        while True:
            loaded = self.models.load(key, self.data.n_items, after_watermark)
            if loaded is not None:
                return loaded
            expiry = store.lease_expiry(key)
            if expiry is None or expiry < time.time():
                return None
            time.sleep(LEASE_POLL_SECONDS)

    def _fit_and_serve(self, configuration: Configuration, previous: Fitted | None) -> Fitted:
        started = time.perf_counter()
        data = self.data.snapshot()
        if data.n_items == 0 or len(data.users) == 0:
            raise FailedPrecondition("no items or interactions yet: load a dataset or add interactions first")
        strategy = self.strategies[configuration.strategy]
        if self.in_child_process and type(strategy) in OFFLINE_TYPES:
            model, calibration, report = self._child_pool().submit(fit_offline, configuration, data).result()
        else:
            train, calibration_items = calibration_split(data)
            if previous is None:
                model = strategy.fit(train, configuration.params, self.data)
            else:
                model = strategy.refit(train, configuration.params, self.data, previous.model)
            calibration, report = calibrate(model, train, calibration_items)
        fitted = Fitted(
            configuration,
            model,
            calibration,
            {user_id: row for row, user_id in enumerate(data.user_ids)},
            time.perf_counter() - started,
            report,
            fitted_at=time.time(),
            watermark=len(data.users),
            refits=0 if previous is None else previous.refits + 1,
        )
        self.models.add(fitted)
        return fitted

    def _child_pool(self) -> ProcessPoolExecutor:
        with self._child_lock:
            if self._child is None:
                # spawn: a fresh interpreter, not a fork of this one's threads and locks. One
                # worker that lives as long as the pool: its pid is asked once, for close().
                self._child = ProcessPoolExecutor(
                    max_workers=1, mp_context=multiprocessing.get_context("spawn"), initializer=background_priority
                )
                self._child_pid = self._child.submit(os.getpid).result()
            return self._child

    # -- keeping live models fresh --------------------------------------------------------------

    def refresh(self, now: float) -> str | None:
        """Start a background refit of the due model most served since its fit, unless a fit is
        running; returns the configuration hash it started, or None. Ranking never waits for
        it: the old model serves until the new one replaces it whole, and a failed refit leaves
        the old one serving (logged, counted, retried once more data arrived). A serving-only
        replica loads the newest stored model of each it serves instead."""
        if not self.role.fits:
            return self._reload_newer()
        with self._futures_lock:
            if self._busy():
                return None
            due = self._due_for_refit(now)
            if due is None:
                return None
            fitted, reason = due
            key = fitted.configuration.hash
            log.info("refit_started", configuration_hash=key, reason=reason)
            self._futures[key] = self._thread.submit(self._refit, fitted)
            return key

    def _reload_newer(self) -> str | None:
        """Load the first cached model a training replica has stored a newer fit of; its hash."""
        for fitted in self.models.entries():
            if self.stored(fitted.configuration) and not self.may_fit(fitted.configuration):
                key = fitted.configuration.hash
                newer = self.models.load(key, self.data.n_items, fitted.watermark)
                if newer is not None:
                    return key
        return None

    def _due_for_refit(self, now: float) -> tuple[Fitted, str] | None:
        interactions = self.data.n_interactions
        due = []
        for fitted in self.models.entries():
            key = fitted.configuration.hash
            if self.models.failed_on(key, interactions):
                continue  # failed on exactly this data: wait for more
            reason = self.refit_policy.reason(fitted.watermark, fitted.fitted_at, interactions, now)
            if reason is not None:
                due.append((self.models.served_since_fit(key), fitted, reason))
        if not due:
            return None
        _, fitted, reason = max(due, key=lambda entry: entry[0])
        return fitted, reason

    def _refit(self, previous: Fitted) -> Fitted:
        key = previous.configuration.hash
        try:
            fitted = self.fit_now(previous.configuration, previous)
        except Exception as exc:
            self.models.refit_failed(key, self.data.n_interactions)
            log.error("refit_failed", configuration_hash=key, error=str(exc)[:300])
            raise
        self.models.refit_succeeded(key)
        log.info("refit_done", configuration_hash=key, seconds=round(fitted.seconds, 3), watermark=fitted.watermark)
        return fitted
