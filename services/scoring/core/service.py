"""ScoringService behaviour: configurations, fitting (cached), ranking, scoring, evaluation. No protobuf."""

from __future__ import annotations

import math
import multiprocessing
import threading
import time
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import structlog

from rectune.domain.comparison import PairedComparison, compare_paired
from rectune.domain.configuration import Configuration, ParamValue
from rectune.domain.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable, quoted
from rectune.domain.events import Interaction, Item, ScoredItem, check_item
from rectune.domain.space import StrategySpace
from services.scoring.core.data import History, ScoringData
from services.scoring.core.fitting import (
    FitStatus,
    Fitted,
    FittedCache,
    calibrate,
    calibration_split,
    evaluate_users,
)
from services.scoring.core.freshness import Freshness, RefitPolicy
from services.scoring.core.journal import DataJournal
from services.scoring.core.model_store import ModelStore
from services.scoring.core.offline_fit import OFFLINE, background_priority, fit_offline
from services.scoring.core.ranking import Metrics, Split, time_split
from services.scoring.core.retrieval import ApproximateIndex, RetrievalSettings, approximate_top_k
from services.scoring.core.strategies.base import DotProductModel, ScoringContext, Strategy, select_items
from services.scoring.core.strategies.registry import find
from services.scoring.core.vectors import ItemVectors

log = structlog.get_logger(__name__)

LEASE_POLL_SECONDS = 0.5  # how often a replica waiting on another's fit looks for its model
OFFLINE_TYPES = tuple(type(strategy) for strategy in OFFLINE.values())  # fitted in a child process

# A baseline ratio beyond this is a typo (the tuner's screen uses about 0.8 to 1).
MAX_BASELINE_RATIO = 10.0


@dataclass(frozen=True)
class BaselineComparison:
    baseline_hash: str
    baseline: Metrics
    paired: PairedComparison


@dataclass(frozen=True)
class Evaluation:
    metrics: Metrics
    comparison: BaselineComparison | None  # when a baseline was given
    seconds: float


@dataclass(frozen=True)
class ScoringLimits:
    # Ranking a configuration that is not fitted fits it on the spot up to this many
    # interactions; beyond, the call fails with FAILED_PRECONDITION (fit it first).
    sync_fit_max_interactions: int = 200_000
    fitted_cache_bytes: int = 512 * 1024 * 1024
    max_k: int = 1000
    refit: RefitPolicy = field(default_factory=RefitPolicy)
    # How long a replica may hold the lease on fitting one configuration (see ModelStore).
    fit_lease_seconds: float = 900.0
    # Fit strategies that need nothing but the data (als, item_knn) in a child process, so
    # that a background refit never holds the interpreter lock that ranking needs.
    fit_in_child_process: bool = True
    # Approximate top-k above a catalogue size, for dot-product models (retrieval.py).
    retrieval: RetrievalSettings = field(default_factory=RetrievalSettings)


class ScoringCore:
    def __init__(
        self,
        registry: Mapping[str, Strategy],
        limits: ScoringLimits | None = None,
        data: ScoringData | None = None,
        vectors: ItemVectors | None = None,
        journal: DataJournal | None = None,
        models: ModelStore | None = None,
    ) -> None:
        self.registry = dict(registry)
        self.models = models  # fitted models shared with other replicas and restarts
        self.replica = uuid.uuid4().hex[:12]
        self.journal = journal  # where items and interactions from RPCs are kept across restarts
        self.limits = limits or ScoringLimits()
        self.data = data or ScoringData()
        self.vectors = vectors
        self.cache = FittedCache(self.limits.fitted_cache_bytes)
        self._fits: dict[str, Future[Fitted]] = {}
        self._errors: dict[str, str] = {}
        self._fit_lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fit")
        self._child: ProcessPoolExecutor | None = None  # started at the first fit sent to it
        # Approximate indexes of large catalogues' dot-product models, by configuration hash,
        # each with the fitted model it indexes (a refit's model replaces both together).
        self._indexes: dict[str, tuple[Fitted, ApproximateIndex]] = {}
        self._served: Counter[str] = Counter()  # RankItems answered, by configuration hash
        self._served_lock = threading.Lock()
        # The served count when each model was fitted: refits go to the model most served
        # since its own fit, so that one always-due, always-busy model cannot starve the rest.
        self._served_at_fit: dict[str, int] = {}
        self._refit_failures: Counter[str] = Counter()
        self._failed_at: dict[str, int] = {}  # hash -> watermark of the data its last refit failed on

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        if self._child is not None:
            # A fit in the child is not waited for: its process ends with the service.
            workers = list(getattr(self._child, "_processes", {}).values())
            self._child.shutdown(wait=False, cancel_futures=True)
            for worker in workers:
                worker.terminate()

    # -- configurations ------------------------------------------------------------------

    def spaces(self, names: Sequence[str] = ()) -> list[StrategySpace]:
        for index, name in enumerate(names):
            find(self.registry, name, f"strategies[{index}]")
        chosen = names or sorted(self.registry)
        return [self.registry[name].space for name in chosen]

    def configuration(
        self, strategy: str, params: Mapping[str, ParamValue], field: str = "configuration"
    ) -> Configuration:
        space = find(self.registry, strategy, f"{field}.strategy").space
        canonical = space.canonical(params, f"{field}.params")
        return Configuration(strategy, canonical, space.hash_exempt(canonical))

    # -- data --------------------------------------------------------------------------------

    def upsert_items(self, items: Sequence[Item], embed: bool = True) -> int:
        """Store items, then embed texts that have no vector yet; returns how many were embedded.

        Stored items stay stored when EmbeddingService is down: the call then answers
        UNAVAILABLE and the vectors are made at the next upsert or content fit."""
        if not items:
            raise InvalidArgument("items", "must not be empty")
        for index, item in enumerate(items):
            check_item(f"items[{index}]", item)
        if self.journal is None:
            self.data.upsert_items(items)
        else:  # written first, then applied like every journal row (see DataJournal)
            self.journal.record_items(items)
            self.journal.catch_up(self.data)
        if not embed or self.vectors is None:
            return 0
        try:
            return self.vectors.ensure()
        except Unavailable as exc:
            raise Unavailable(f"items: {len(items)} stored; their vectors are pending ({exc.message})") from None

    def add_interactions(self, interactions: Sequence[Interaction]) -> int:
        if not interactions:
            raise InvalidArgument("interactions", "must not be empty")
        try:
            self.data.check_interactions(interactions)  # refused ones are not journaled either
        except NotFound:
            if self.journal is None:
                raise
            self.journal.catch_up(self.data)  # another replica may have added the item just now
            self.data.check_interactions(interactions)
        if self.journal is None:
            return self.data.add_interactions(interactions)
        self.journal.record_interactions(interactions)
        self.journal.catch_up(self.data)
        return len(interactions)

    # -- fitting -------------------------------------------------------------------------------

    def _fit_now(self, configuration: Configuration, previous: Fitted | None = None) -> Fitted:
        """Fit on a snapshot of the data and cache the result, replacing ``previous`` (a refit;
        a strategy that warm-starts begins from its model) in one assignment. With a model
        store, the fit is leased: while another replica fits the configuration, this one
        waits for that model and loads it; its own result is stored for the others."""
        if not self._stored(configuration):
            return self._fit_and_cache(configuration, previous)
        assert self.models is not None
        key = configuration.hash
        after = -1 if previous is None else previous.watermark
        while not self.models.try_lease(key, self.replica, self.limits.fit_lease_seconds):
            loaded = self._wait_for_other_replica(key, after)
            if loaded is not None:
                return loaded
        try:
            fitted = self._fit_and_cache(configuration, previous)
            size = self.models.save(fitted)
            log.info("model_stored", configuration_hash=key, watermark=fitted.watermark, bytes=size)
            return fitted
        finally:
            self.models.release(key, self.replica)

    def _wait_for_other_replica(self, key: str, after_watermark: int) -> Fitted | None:
        """The model another replica is fitting, once stored; None when its lease ended
        without one (then this replica fits)."""
        assert self.models is not None
        while True:
            stored = self._load(key, after_watermark)
            if stored is not None:
                return stored
            expiry = self.models.lease_expiry(key)
            if expiry is None or expiry < time.time():
                return None
            time.sleep(LEASE_POLL_SECONDS)

    def _load_stored(self, configuration: Configuration) -> Fitted | None:
        """The newest stored model of the configuration, cached (a restart or a new replica
        loads rather than fits; a stale one is then refit in the background)."""
        if not self._stored(configuration):
            return None
        return self._load(configuration.hash)

    def _load(self, key: str, after_watermark: int = -1) -> Fitted | None:
        """The newest stored model fitted on more than ``after_watermark`` interactions, put
        in the cache; None when there is none."""
        assert self.models is not None
        stored = self.models.newest(key, self.data.n_items, after_watermark)
        if stored is not None:
            self._index(stored)
            self.cache.put(stored)
            log.info("model_loaded", configuration_hash=key, watermark=stored.watermark)
        return stored

    def _stored(self, configuration: Configuration) -> bool:
        """Whether models of this configuration go to the model store: strategies whose models
        are plain arrays. popularity and content read live data and fit in milliseconds;
        hybrid refits its components."""
        strategy = self.registry.get(configuration.strategy)
        return self.models is not None and bool(getattr(strategy, "stored", False))

    def _fit_and_cache(self, configuration: Configuration, previous: Fitted | None) -> Fitted:
        started = time.perf_counter()
        data = self.data.snapshot()
        if data.n_items == 0 or len(data.users) == 0:
            raise FailedPrecondition("no items or interactions yet: load a dataset or add interactions first")
        strategy = self.registry[configuration.strategy]
        if self._in_child(strategy):
            model, calibration, report = self._child_pool().submit(fit_offline, configuration, data).result()
        else:
            train, calibration_items = calibration_split(data)
            if previous is not None and getattr(strategy, "warm_starts", False):
                model = strategy.fit(train, configuration.params, self.data, previous.model)  # type: ignore[call-arg]
            else:
                model = strategy.fit(train, configuration.params, self.data)
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
        self._index(fitted)
        self.cache.put(fitted)
        with self._served_lock:
            self._served_at_fit[configuration.hash] = self._served[configuration.hash]
        return fitted

    def _index(self, fitted: Fitted) -> None:
        """Build the approximate index of a large catalogue's dot-product model (at fit or load
        time, before the model serves), and drop those of models no longer cached."""
        if not self.limits.retrieval.wants_index(fitted.model):
            return
        started = time.perf_counter()
        model = fitted.model
        assert isinstance(model, DotProductModel)
        index = ApproximateIndex(model.item_vectors(), self.limits.retrieval.scan_share)
        cached = {id(entry) for entry in self.cache.entries()}
        with self._served_lock:
            self._indexes = {k: v for k, v in self._indexes.items() if id(v[0]) in cached}
            self._indexes[fitted.configuration.hash] = (fitted, index)
        log.info(
            "index_built",
            configuration_hash=fitted.configuration.hash,
            items=index.n_items,
            cells=index.lists,
            seconds=round(time.perf_counter() - started, 2),
        )

    def _index_of(self, fitted: Fitted) -> ApproximateIndex | None:
        entry = self._indexes.get(fitted.configuration.hash)
        return entry[1] if entry is not None and entry[0] is fitted else None

    def _in_child(self, strategy: Strategy) -> bool:
        return self.limits.fit_in_child_process and type(strategy) in OFFLINE_TYPES

    def _child_pool(self) -> ProcessPoolExecutor:
        with self._fit_lock:
            if self._child is None:
                # spawn: a fresh interpreter, not a fork of this one's threads and locks.
                self._child = ProcessPoolExecutor(
                    max_workers=1, mp_context=multiprocessing.get_context("spawn"), initializer=background_priority
                )
            return self._child

    # -- keeping live models fresh ----------------------------------------------------------------

    def refresh(self, now: float | None = None) -> str | None:
        """Start a background refit of the due model (RefitPolicy) most served since its fit, unless
        a fit is running; returns the configuration hash it started, or None. Ranking never
        waits for it: the old model serves until the new one replaces it whole, and a failed
        refit leaves the old one serving (logged, counted, retried once more data arrived)."""
        with self._fit_lock:
            if self._fit_running():
                return None
            due = self._due_for_refit(time.time() if now is None else now)
            if due is None:
                return None
            fitted, reason = due
            log.info("refit_started", configuration_hash=fitted.configuration.hash, reason=reason)
            future = self._executor.submit(self._refit, fitted)
            self._fits[fitted.configuration.hash] = future
            return fitted.configuration.hash

    def _due_for_refit(self, now: float) -> tuple[Fitted, str] | None:
        interactions = self.data.n_interactions
        due = []
        for fitted in self.cache.entries():
            key = fitted.configuration.hash
            if self._failed_at.get(key) == interactions:
                continue  # failed on exactly this data: wait for more
            reason = self.limits.refit.reason(fitted.watermark, fitted.fitted_at, interactions, now)
            if reason is not None:
                with self._served_lock:
                    served_since_fit = self._served[key] - self._served_at_fit.get(key, 0)
                due.append((served_since_fit, fitted, reason))
        if not due:
            return None
        _, fitted, reason = max(due, key=lambda entry: entry[0])
        return fitted, reason

    def _refit(self, previous: Fitted) -> Fitted:
        key = previous.configuration.hash
        try:
            fitted = self._fit_now(previous.configuration, previous)
        except Exception as exc:
            self._refit_failures[key] += 1
            self._failed_at[key] = self.data.n_interactions
            log.error("refit_failed", configuration_hash=key, error=str(exc)[:300])
            raise
        self._failed_at.pop(key, None)
        log.info("refit_done", configuration_hash=key, seconds=round(fitted.seconds, 3), watermark=fitted.watermark)
        return fitted

    def wait_for_fits(self, timeout: float = 600.0) -> None:
        """Until every fit and refit started so far has finished (benches, shutdown paths)."""
        with self._fit_lock:
            running = list(self._fits.values())
        for future in running:
            try:
                future.result(timeout)
            except Exception:  # a failed fit is logged and counted where it ran
                continue

    def fitting(self) -> bool:
        """Whether a fit or refit is running now."""
        with self._fit_lock:
            return self._fit_running()

    def _fit_running(self) -> bool:
        """Call with the fit lock held."""
        return any(not future.done() for future in self._fits.values())

    def freshness(self, fitted: Fitted, now: float | None = None) -> Freshness:
        key = fitted.configuration.hash
        return Freshness(
            configuration_hash=key,
            strategy=fitted.configuration.strategy,
            fitted_at=fitted.fitted_at,
            interactions_at_fit=fitted.watermark,
            interactions_since_fit=max(0, self.data.n_interactions - fitted.watermark),
            age_seconds=max(0.0, (time.time() if now is None else now) - fitted.fitted_at),
            refits=fitted.refits,
            refit_failures=self._refit_failures[key],
            served=self._served[key],
        )

    def freshness_of_all(self) -> list[Freshness]:
        return [self.freshness(fitted) for fitted in self.cache.entries()]

    def fit(self, configuration: Configuration, wait: bool, timeout: float | None = None) -> FitStatus:
        """Fit off the request path (one fit at a time); ``wait`` blocks until it is done."""
        cached = self.cache.get(configuration.hash) or self._load_stored(configuration)
        if cached is not None:
            return cached.status(self.freshness(cached))
        with self._fit_lock:
            future = self._fits.get(configuration.hash)
            if future is None or future.done():
                future = self._executor.submit(self._fit_now, configuration)
                self._fits[configuration.hash] = future
        if wait:
            try:
                fitted = future.result(timeout)
            except Exception as exc:  # the failure is reported in the status
                return FitStatus(configuration.hash, "failed", error=str(exc))
            return fitted.status(self.freshness(fitted))
        return FitStatus(configuration.hash, "running" if future.running() else "pending")

    def fitted(self, configuration: Configuration) -> Fitted:
        cached = self.cache.get(configuration.hash)
        if cached is not None:
            return cached
        with self._fit_lock:  # one load from the store, not one per waiting request
            cached = self.cache.get(configuration.hash) or self._load_stored(configuration)
        if cached is not None:
            return cached
        with self._fit_lock:
            in_flight = self._fits.get(configuration.hash)
        if in_flight is not None and not in_flight.done():
            return in_flight.result()  # a fit of this configuration is running: wait for it
        size = self.data.n_interactions
        if size > self.limits.sync_fit_max_interactions:
            raise FailedPrecondition(
                f"configuration: {configuration.strategy} {configuration.hash} is not fitted yet and the data "
                f"({size} interactions) is above the on-demand limit ({self.limits.sync_fit_max_interactions}); "
                "call FitConfiguration first"
            )
        return self._fit_now(configuration)

    # -- ranking ----------------------------------------------------------------------------------

    def _context(self, fitted: Fitted, user_id: str, extra: Sequence[Interaction]) -> ScoringContext:
        known = self.data.history(user_id) if user_id else History.empty()
        if extra:
            self.data.check_interactions(extra, "history", user_required=False)
            items = np.array([self.data.item_index[i.item_id] for i in extra], dtype=np.int64)
            values = np.array([i.value for i in extra], dtype=np.float64)
            times = np.array([i.time for i in extra], dtype=np.float64)
            known = History(
                np.concatenate([known.items, items]),
                np.concatenate([known.values, values]),
                np.concatenate([known.times, times]),
            )
        if not user_id and len(known.items) == 0:
            raise InvalidArgument("user_id", "must be set, or history given for a cold user")
        return ScoringContext(known, fitted.user_rows.get(user_id) if user_id else None, time.time())

    def rank(
        self,
        configuration: Configuration,
        user_id: str,
        history: Sequence[Interaction],
        k: int,
        exclude_item_ids: Sequence[str],
        seed: int = 0,
        exact: bool = False,
    ) -> list[ScoredItem]:
        """The k best items for the user (never one they have seen or one excluded); above the
        retrieval threshold a dot-product model's items come from its index unless ``exact``."""
        fitted = self.fitted(configuration)
        with self._served_lock:
            self._served[configuration.hash] += 1
        n_items = fitted.model.n_items
        if not 1 <= k <= min(n_items, self.limits.max_k):
            raise InvalidArgument("k", f"must be between 1 and {min(n_items, self.limits.max_k)}, got {k}")
        context = self._context(fitted, user_id, history)
        excluded = [
            self.data.item_position(item_id, f"exclude_item_ids[{i}]") for i, item_id in enumerate(exclude_item_ids)
        ]
        seen = context.history.items[context.history.items < n_items]
        excluded_all = np.concatenate([seen, np.array(excluded, dtype=np.int64)])
        index = None if exact else self._index_of(fitted)
        found = None
        if index is not None:
            assert isinstance(fitted.model, DotProductModel)
            found = approximate_top_k(index, fitted.model, context, k, excluded_all)
        if found is None:
            scores = fitted.model.scores(context)
            chosen = select_items(
                fitted.model, scores, k, excluded_all, seed or int(np.random.default_rng().integers(2**31))
            )
            found = chosen, scores[chosen]
        chosen, chosen_scores = found
        probabilities = fitted.calibration.probability(chosen_scores)
        item_ids = self.data.item_ids(chosen.tolist())
        return [
            ScoredItem(item_id, float(score), float(p), rank)
            for rank, (item_id, score, p) in enumerate(
                zip(item_ids, chosen_scores.tolist(), probabilities.tolist(), strict=True), start=1
            )
        ]

    def score_items(
        self, configuration: Configuration, user_id: str, history: Sequence[Interaction], item_ids: Sequence[str]
    ) -> list[ScoredItem]:
        if not item_ids:
            raise InvalidArgument("item_ids", "must not be empty")
        fitted = self.fitted(configuration)
        positions = [self.data.item_position(item_id, f"item_ids[{i}]") for i, item_id in enumerate(item_ids)]
        for index, position in enumerate(positions):
            if position >= fitted.model.n_items:
                raise FailedPrecondition(
                    f"item_ids[{index}]: {quoted(item_ids[index])} was added after the last fit; refit"
                )
        scores = fitted.model.scores(self._context(fitted, user_id, history))[positions]
        probabilities = fitted.calibration.probability(scores)
        return [
            ScoredItem(item_id, float(s), float(p), 0)
            for item_id, s, p in zip(item_ids, scores.tolist(), probabilities.tolist(), strict=True)
        ]

    # -- offline evaluation ---------------------------------------------------------------------------

    def evaluate(
        self,
        configuration: Configuration,
        k: int,
        holdout_fraction: float,
        baseline: Configuration | None = None,
        ratio: float = 1.0,
    ) -> Evaluation:
        """Metrics on a time-based holdout; with a baseline, both are scored on the same users
        and compared user by user (rectune.domain.comparison)."""
        started = time.perf_counter()
        if not 1 <= k <= self.limits.max_k:
            raise InvalidArgument("k", f"must be between 1 and {self.limits.max_k}, got {k}")
        if not 0.0 < holdout_fraction < 1.0:
            raise InvalidArgument("holdout_fraction", f"must be between 0 and 1 (exclusive), got {holdout_fraction}")
        if not (math.isfinite(ratio) and 0.0 < ratio <= MAX_BASELINE_RATIO):
            raise InvalidArgument("baseline_ratio", f"must be in (0, {MAX_BASELINE_RATIO:g}], got {ratio:g}")
        data = self.data.snapshot()
        if len(data.users) == 0:
            raise FailedPrecondition("no interactions yet: load a dataset or add interactions first")
        split = time_split(data, holdout_fraction)
        metrics, ndcgs = self._evaluate_on(split, configuration, k)
        comparison = None
        if baseline is not None:
            baseline_metrics, baseline_ndcgs = self._evaluate_on(split, baseline, k)
            paired = compare_paired(ndcgs, baseline_ndcgs, ratio)
            comparison = BaselineComparison(baseline.hash, baseline_metrics, paired)
        return Evaluation(metrics, comparison, time.perf_counter() - started)

    def _evaluate_on(self, split: Split, configuration: Configuration, k: int) -> tuple[Metrics, np.ndarray]:
        model = self.registry[configuration.strategy].fit(split.train, configuration.params, None)
        return evaluate_users(model, split.train, split.held_out, k)
