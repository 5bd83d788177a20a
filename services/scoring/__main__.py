"""``python -m services.scoring``: serve ScoringService.

With ``--dataset`` (a MovieLens atomic folder) or ``--items-csv``/``--interactions-csv``,
the catalogue and interactions are loaded before the service reports SERVING; a bad file
stops it at start-up with the file and line.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import structlog

from rectune.datasets import DatasetError, iter_interactions, load_items, load_movielens_atomic
from rectune.domain.errors import quoted
from rectune.domain.events import Interaction
from rectune.v1 import embedding_pb2_grpc, scoring_pb2_grpc
from services.common.background import run_periodically
from services.common.clients import client_options_from, make_channel
from services.common.config import SettingsError, option
from services.common.contracts import SCORING_SERVICE
from services.common.entrypoint import run_service
from services.common.migrations import migrate
from services.common.server import RunningService, ServiceRegistration, start_service
from services.common.settings import ServerSettings, check_address, check_database_url
from services.common.storage import make_engine
from services.common.storage_guard import STORAGE_CHECK_SECONDS, StorageWatch
from services.scoring.core.data import ScoringData, shifted_to_end_at
from services.scoring.core.fit_memo import FitMemo
from services.scoring.core.freshness import RefitPolicy
from services.scoring.core.journal import DataJournal
from services.scoring.core.model_store import ModelStore
from services.scoring.core.retrieval import RetrievalSettings
from services.scoring.core.roles import Role
from services.scoring.core.service import ScoringCore, ScoringLimits
from services.scoring.core.strategies.registry import default_registry
from services.scoring.core.strategies.two_tower import DEFAULT_MAX_FIT_SECONDS
from services.scoring.core.tables import SCHEMA
from services.scoring.core.threads import fit_threads, one_blas_thread
from services.scoring.core.vectors import ItemVectors, VectorStore
from services.scoring.embedding_client import GrpcTextEncoder
from services.scoring.gauges import FreshnessGauges
from services.scoring.servicer import ScoringServicer

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class ScoringSettings(ServerSettings):
    """ScoringService: catalogue, strategies, ranking and offline evaluation."""

    embedding_address: str = option(
        env="RECTUNE_EMBEDDING_ADDRESS", required=True, default="", help="host:port of EmbeddingService"
    )
    dataset: str = option(
        env="RECTUNE_SCORING_DATASET",
        default="",
        help="MovieLens atomic folder to load at start-up (e.g. data/movielens-100k)",
    )
    items_csv: str = option(env="RECTUNE_SCORING_ITEMS_CSV", default="", help="items CSV to load at start-up")
    interactions_csv: str = option(
        env="RECTUNE_SCORING_INTERACTIONS_CSV", default="", help="interactions CSV to load at start-up"
    )
    sync_fit_max_interactions: int = option(
        env="RECTUNE_SCORING_SYNC_FIT_MAX_INTERACTIONS",
        default=200000,
        help="ranking an unfitted configuration fits it on the spot up to this many interactions",
    )
    database_url: str = option(
        env="RECTUNE_DATABASE_URL",
        default="sqlite:///rectune-scoring.db",
        help="SQLAlchemy URL of item vectors and the journal of items and interactions added by RPC",
    )
    journal_poll_seconds: float = option(
        env="RECTUNE_SCORING_JOURNAL_POLL_SECONDS",
        default=2.0,
        help="how often other replicas' new items and interactions are read from the shared journal",
    )
    fitted_cache_bytes: int = option(
        env="RECTUNE_SCORING_FITTED_CACHE_BYTES", default=512 * 1024 * 1024, help="memory bound of fitted models"
    )
    ann_min_items: int = option(
        env="RECTUNE_SCORING_ANN_MIN_ITEMS",
        default=50_000,
        help="als, content and two_tower rank with an approximate index (faiss IVF, built at fit) from this "
        "many items on; exact below; 0 = always exact",
    )
    ann_scan_share: float = option(
        env="RECTUNE_SCORING_ANN_SCAN_SHARE",
        default=0.1,
        help="share of the index's cells scanned per request (at least 64): more, better recall and slower "
        "(docs/scaling.md)",
    )
    refit_check_seconds: float = option(
        env="RECTUNE_SCORING_REFIT_CHECK_SECONDS",
        default=10.0,
        help="how often fitted models are checked for a background refit; 0 turns refits off",
    )
    refit_interactions: int = option(
        env="RECTUNE_SCORING_REFIT_INTERACTIONS",
        default=1000,
        help="refit a model once this many interactions arrived since its fit (0: not by count)",
    )
    refit_share: float = option(
        env="RECTUNE_SCORING_REFIT_SHARE",
        default=0.05,
        help="... or once the new interactions are this share of those it was fitted on (0: not by share)",
    )
    refit_max_age_seconds: float = option(
        env="RECTUNE_SCORING_REFIT_MAX_AGE_SECONDS",
        default=3600.0,
        help="... or once it is this old, if anything arrived since (0: not by age)",
    )
    role: str = option(
        env="RECTUNE_SCORING_ROLE",
        default="all",
        help="serve: rank only, never fit (load what training replicas store); train: fit, refit and evaluate; "
        "all: both (one replica)",
    )
    fit_threads: int = option(
        env="RECTUNE_SCORING_FIT_THREADS",
        default=0,
        help="threads a neural fit (two_tower) uses; 0: torch's default, the machine's cores. Set it to the "
        "pod's CPU limit, or below the cores when serving replicas share the machine",
    )
    max_fit_seconds: float = option(
        env="RECTUNE_SCORING_MAX_FIT_SECONDS",
        default=DEFAULT_MAX_FIT_SECONDS,
        help="a two_tower fit that would run longer stops at its best epoch so far (and says so)",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        check_address("--embedding-address", "RECTUNE_EMBEDDING_ADDRESS", self.embedding_address)
        check_database_url(self.database_url)
        roles = [role.value for role in Role]
        if self.role not in roles:
            raise SettingsError(
                f"--role (env RECTUNE_SCORING_ROLE): must be one of {', '.join(roles)}, got {quoted(self.role)}"
            )
        if min(self.refit_check_seconds, self.refit_interactions, self.refit_share, self.refit_max_age_seconds) < 0:
            raise SettingsError(
                "--refit-check-seconds, --refit-interactions, --refit-share, --refit-max-age-seconds: must be >= 0"
            )
        if not self.max_fit_seconds > 0:
            raise SettingsError(f"--max-fit-seconds: must be > 0, got {self.max_fit_seconds}")
        if self.fit_threads < 0:
            raise SettingsError(f"--fit-threads: must be >= 0, got {self.fit_threads}")
        if self.ann_min_items < 0:
            raise SettingsError(f"--ann-min-items: must be >= 0, got {self.ann_min_items}")
        if not 0.0 < self.ann_scan_share <= 1.0:
            raise SettingsError(f"--ann-scan-share: must be in (0, 1], got {self.ann_scan_share}")
        if self.dataset and (self.items_csv or self.interactions_csv):
            raise SettingsError("--dataset and --items-csv/--interactions-csv: give one or the other")
        if bool(self.items_csv) != bool(self.interactions_csv):
            raise SettingsError("--items-csv and --interactions-csv: give both")
        if self.journal_poll_seconds <= 0:
            raise SettingsError(f"--journal-poll-seconds: must be > 0, got {self.journal_poll_seconds}")


def load_dataset(core: ScoringCore, settings: ScoringSettings, live_start: float) -> None:
    # Straight into the data, not through the RPC path: the files are read again at every
    # start, so they are not journaled. Vectors are made on the first content fit or upsert:
    # start-up does not wait for EmbeddingService.
    # The dataset ends where live data begins (the first journaled interaction, or now): the
    # same shift at every start, so the journal's interactions always come after it.
    if settings.dataset:
        items, interactions = load_movielens_atomic(Path(settings.dataset))
        interactions, offset = shifted_to_end_at(interactions, live_start)
        core.data.upsert_items(items)
        core.data.add_interactions(interactions)
        count = len(interactions)
    elif settings.items_csv:
        items = load_items(Path(settings.items_csv))
        core.data.upsert_items(items)
        count, offset = load_interactions_in_chunks(core, Path(settings.interactions_csv), live_start)
    else:
        return
    log.info("dataset_loaded", items=len(items), interactions=count, shifted_days=round(offset / 86400, 1))


def load_interactions_in_chunks(core: ScoringCore, path: Path, live_start: float) -> tuple[int, float]:
    """A large interactions file in two passes (its newest time, then the rows shifted by the
    same offset), a chunk at a time: never the whole file as Python objects."""
    newest = max((max(i.time for i in chunk) for chunk in iter_interactions(path)), default=live_start)
    offset = max(0.0, live_start - newest)
    count = 0
    for chunk in iter_interactions(path):
        shifted = [Interaction(i.user_id, i.item_id, i.value, i.time + offset) for i in chunk] if offset else chunk
        count += core.data.add_interactions(shifted)
    return count, offset


# A training replica on the same machine as serving ones yields the CPU to them (on a node or
# a pod of its own, as in Kubernetes, this changes nothing). Linux's SCHED_IDLE was tried too
# and measured no better here (bench/scaleout.py), and could starve a trainer's health checks
# on a busy shared node.
TRAINER_NICENESS = 10


def build(settings: ScoringSettings) -> RunningService:
    one_blas_thread()
    if settings.fit_threads:
        fit_threads(settings.fit_threads)
    if settings.role == Role.TRAIN.value:
        os.nice(TRAINER_NICENESS)
    engine = make_engine(settings.database_url)
    migrate(engine, SCHEMA)
    embedding_channel = make_channel(settings.embedding_address, client_options_from(settings))
    data = ScoringData()
    encoder = GrpcTextEncoder(embedding_pb2_grpc.EmbeddingServiceStub(embedding_channel))
    vectors = ItemVectors(data, encoder, VectorStore(engine))
    refit = RefitPolicy(settings.refit_interactions, settings.refit_share, settings.refit_max_age_seconds)
    retrieval = RetrievalSettings(settings.ann_min_items, settings.ann_scan_share)
    limits = ScoringLimits(
        settings.sync_fit_max_interactions,
        settings.fitted_cache_bytes,
        refit=refit,
        retrieval=retrieval,
        role=Role(settings.role),
    )
    journal = DataJournal(engine)
    # One memo of frozen fits: a blend's screen reuses its members' screens.
    memo = FitMemo()
    registry = default_registry(vectors, settings.max_fit_seconds, memo)
    # Stored models name the replica's live data and encoder client; the loading replica's stand in.
    store = ModelStore(engine, replica_objects={"live-data": data, "text-encoder": encoder})
    core = ScoringCore(registry, limits, data, vectors, journal, store, memo)
    try:
        load_dataset(core, settings, journal.earliest_interaction_time() or time.time())
    except DatasetError as exc:
        raise OSError(f"dataset: {exc}") from None
    items, interactions = journal.catch_up(data)
    log.info("journal_replayed", items=items, interactions=interactions)
    registration = ServiceRegistration(
        SCORING_SERVICE, scoring_pb2_grpc.add_ScoringServiceServicer_to_server, ScoringServicer(core)
    )
    service = start_service("scoring", [registration], settings)
    service.metrics.registry.register(FreshnessGauges(core))
    service.closers.extend([core.close, embedding_channel.close, engine.dispose])
    if settings.refit_check_seconds > 0:
        service.closers.append(run_periodically("refit", settings.refit_check_seconds, core.refresh))
    # Stopped first (closers run in reverse): other replicas' writes, read from the shared journal.
    service.closers.append(run_periodically("journal", settings.journal_poll_seconds, lambda: journal.catch_up(data)))
    watch = StorageWatch(engine, service.health.set_serving, service.health.set_not_serving)
    service.closers.append(run_periodically("storage", STORAGE_CHECK_SECONDS, watch.check))
    service.health.set_serving()
    return service


if __name__ == "__main__":
    sys.exit(run_service("python -m services.scoring", ScoringSettings, build))
