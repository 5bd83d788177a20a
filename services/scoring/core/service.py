"""ScoringService behaviour, free of protobuf: the facade the servicer calls. Each job is a
room of its own: items and interactions in (DataIntake), fitted models and what is known of
them (FittedModels), where and when fits run (FitScheduler), lists and scores (Ranker), and
offline evaluation (Evaluator). This module holds the configuration checks and the wiring."""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from rectune.domain.configuration import Configuration, ParamValue
from rectune.domain.errors import InvalidArgument
from rectune.domain.events import MAX_REQUEST_HISTORY, MAX_REQUEST_ITEMS, Interaction, Item, ScoredItem, check_count
from rectune.domain.fidelity import FULL, Fidelity
from rectune.domain.space import StrategySpace
from services.scoring.core.data import ScoringData
from services.scoring.core.evaluation import Evaluation, Evaluator
from services.scoring.core.fit_memo import FitMemo
from services.scoring.core.fit_scheduler import FitScheduler
from services.scoring.core.fitted_models import FittedModels
from services.scoring.core.fitting import FitStatus, Fitted
from services.scoring.core.freshness import Freshness, RefitPolicy
from services.scoring.core.intake import DataIntake
from services.scoring.core.journal import DataJournal
from services.scoring.core.model_store import ModelStore
from services.scoring.core.ranker import Ranker
from services.scoring.core.retrieval import RetrievalSettings
from services.scoring.core.roles import Role, refused_here
from services.scoring.core.strategies.base import Strategy
from services.scoring.core.strategies.registry import find
from services.scoring.core.vectors import ItemVectors


@dataclass(frozen=True)
class ScoringLimits:
    # Ranking a configuration that is not fitted fits it on the spot up to this many
    # interactions; beyond, the call fails with FAILED_PRECONDITION (fit it first).
    sync_fit_max_interactions: int = 200_000
    fitted_cache_bytes: int = 512 * 1024 * 1024
    max_k: int = 1000
    refit: RefitPolicy = field(default_factory=RefitPolicy)
    # serve: never fits (loads what training replicas store); train or all: fits and evaluates.
    role: Role = Role.ALL
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
        memo: FitMemo | None = None,
    ) -> None:
        self.registry = dict(registry)
        self.limits = limits or ScoringLimits()
        self.data = data or ScoringData()
        self.vectors = vectors
        self.replica = uuid.uuid4().hex[:12]
        self.intake = DataIntake(self.data, journal, vectors)
        self.fitted_models = FittedModels(self.limits.fitted_cache_bytes, self.limits.retrieval, models)
        self.scheduler = FitScheduler(
            self.registry,
            self.data,
            self.fitted_models,
            self.replica,
            self.limits.refit,
            self.limits.fit_lease_seconds,
            self.limits.fit_in_child_process,
            self.limits.role,
        )
        self.ranker = Ranker(self.data, self.fitted_models, self.limits.max_k)
        self.evaluator = Evaluator(self.registry, self.data, self.limits.max_k, memo)

    @property
    def models(self) -> ModelStore | None:
        """The model store shared with restarts and other replicas (None: this replica alone)."""
        return self.fitted_models.store

    def close(self) -> None:
        self.scheduler.close()

    # -- configurations and data ------------------------------------------------------------------

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

    def upsert_items(self, items: Sequence[Item], embed: bool = True) -> int:
        return self.intake.upsert_items(items, embed)

    def add_interactions(self, interactions: Sequence[Interaction]) -> int:
        return self.intake.add_interactions(interactions)

    # -- fitting ------------------------------------------------------------------------------------

    def fit(self, configuration: Configuration, wait: bool, timeout: float | None = None) -> FitStatus:
        """Fit off the request path (one fit at a time); ``wait`` blocks until it is done."""
        ready = self.fitted_models.get(configuration.hash) or self.scheduler.load_stored(configuration)
        if ready is not None:
            return ready.status(self.freshness(ready))
        if not self.scheduler.may_fit(configuration):
            raise refused_here("FitConfiguration")
        future = self.scheduler.start(configuration)
        if not wait:
            return FitStatus(configuration.hash, "running" if future.running() else "pending")
        try:
            fitted = future.result(timeout)
        except Exception as exc:  # the failure is reported in the status
            return FitStatus(configuration.hash, "failed", error=str(exc))
        return fitted.status(self.freshness(fitted))

    def fitted(self, configuration: Configuration) -> Fitted:
        """The model that serves the configuration (FitScheduler.serving)."""
        return self.scheduler.serving(configuration, self.limits.sync_fit_max_interactions)

    def refresh(self, now: float | None = None) -> str | None:
        """Start the background refit of the most-served due model; its hash, or None."""
        return self.scheduler.refresh(time.time() if now is None else now)

    def wait_for_fits(self, timeout: float = 600.0) -> None:
        self.scheduler.wait(timeout)

    def fitting(self) -> bool:
        return self.scheduler.busy()

    def freshness(self, fitted: Fitted, now: float | None = None) -> Freshness:
        return self.fitted_models.freshness(fitted, self.data.n_interactions, time.time() if now is None else now)

    def freshness_of_all(self) -> list[Freshness]:
        return [self.freshness(fitted) for fitted in self.fitted_models.entries()]

    # -- ranking, scoring, evaluation -------------------------------------------------------------

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
        check_count("history", len(history), MAX_REQUEST_HISTORY)
        check_count("exclude_item_ids", len(exclude_item_ids), MAX_REQUEST_ITEMS)
        return self.ranker.rank(self.fitted(configuration), user_id, history, k, exclude_item_ids, seed, exact)

    def score_items(
        self, configuration: Configuration, user_id: str, history: Sequence[Interaction], item_ids: Sequence[str]
    ) -> list[ScoredItem]:
        if not item_ids:
            raise InvalidArgument("item_ids", "must not be empty")
        check_count("history", len(history), MAX_REQUEST_HISTORY)
        check_count("item_ids", len(item_ids), MAX_REQUEST_ITEMS)
        return self.ranker.score_items(self.fitted(configuration), user_id, history, item_ids)

    def evaluate(
        self,
        configuration: Configuration,
        k: int,
        holdout_fraction: float,
        baseline: Configuration | None = None,
        ratio: float = 1.0,
        fidelity: Fidelity = FULL,
    ) -> Evaluation:
        if not self.limits.role.fits:
            raise refused_here("EvaluateConfiguration")
        return self.evaluator.evaluate(configuration, k, holdout_fraction, baseline, ratio, fidelity)
