"""``python -m services.policy``: serve PolicyService.

Background work: the outbox is drained to MetricsService every ``--outbox-interval-seconds``
(what cannot be sent stays queued in the database), guardrails are checked every
``--guardrail-interval-seconds``, and decisions older than the reward window are dropped.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from rectune.v1 import metrics_pb2_grpc, policy_pb2_grpc, scoring_pb2_grpc
from services.common.background import run_periodically
from services.common.clients import client_options_from, make_channel
from services.common.config import SettingsError, option
from services.common.contracts import ADMIN_METHODS, POLICY_SERVICE
from services.common.entrypoint import run_service
from services.common.server import RunningService, ServiceRegistration, start_service
from services.common.settings import ServerSettings, check_address, check_database_url
from services.common.storage import make_engine
from services.common.storage_guard import STORAGE_CHECK_SECONDS, StorageWatch
from services.policy.clients import GrpcMetricsSink, GrpcRanker
from services.policy.core.choosing import Ranker
from services.policy.core.service import PolicyCore
from services.policy.core.store import PolicyStore
from services.policy.gauges import ArmStateGauges, OutboxGauges
from services.policy.servicer import PolicyServicer


@dataclass(frozen=True)
class PolicyServerSettings(ServerSettings):
    """PolicyService: the bandit over configuration arms."""

    scoring_address: str = option(
        env="RECTUNE_SCORING_ADDRESS",
        required=True,
        default="",
        help="ScoringService replicas that rank (host:port, dns:///name:port or a list of IP endpoints)",
    )
    scoring_train_address: str = option(
        env="RECTUNE_SCORING_TRAIN_ADDRESS",
        default="",
        help="ScoringService replicas that fit a new arm's configuration (--role train); empty: --scoring-address",
    )
    metrics_address: str = option(
        env="RECTUNE_METRICS_ADDRESS", required=True, default="", help="host:port of MetricsService"
    )
    database_url: str = option(
        env="RECTUNE_DATABASE_URL",
        default="sqlite:///rectune-policy.db",
        help="SQLAlchemy URL of the policy state (a SQLite file or PostgreSQL shared by replicas)",
    )
    outbox_interval_seconds: float = option(
        env="RECTUNE_OUTBOX_INTERVAL_SECONDS", default=1.0, help="how often queued events go to MetricsService"
    )
    guardrail_interval_seconds: float = option(
        env="RECTUNE_GUARDRAIL_INTERVAL_SECONDS", default=10.0, help="how often guardrails are checked"
    )
    belief_cache_seconds: float = option(
        env="RECTUNE_BELIEF_CACHE_SECONDS", default=1.0, help="how long a replica reuses the arms it read"
    )
    seed: int = option(env="RECTUNE_POLICY_SEED", default=0, help="random seed of arm selection; 0 = unseeded")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_address("--scoring-address", "RECTUNE_SCORING_ADDRESS", self.scoring_address)
        check_database_url(self.database_url)
        check_address("--metrics-address", "RECTUNE_METRICS_ADDRESS", self.metrics_address)
        if self.scoring_train_address:
            check_address("--scoring-train-address", "RECTUNE_SCORING_TRAIN_ADDRESS", self.scoring_train_address)
        if min(self.outbox_interval_seconds, self.guardrail_interval_seconds) <= 0 or self.belief_cache_seconds < 0:
            raise SettingsError("--outbox-interval-seconds and --guardrail-interval-seconds: must be > 0")


def build(settings: PolicyServerSettings, ranker: Ranker | None = None) -> RunningService:
    """The service; ``ranker`` replaces the ScoringService client (benchmarks isolate the policy with it)."""
    options = client_options_from(settings)
    scoring_channel = make_channel(settings.scoring_address, options)
    train_channel = make_channel(settings.scoring_train_address, options) if settings.scoring_train_address else None
    metrics_channel = make_channel(settings.metrics_address, options)
    engine = make_engine(settings.database_url)
    scoring = GrpcRanker(
        scoring_pb2_grpc.ScoringServiceStub(scoring_channel),
        scoring_pb2_grpc.ScoringServiceStub(train_channel) if train_channel is not None else None,
    )
    ranker = ranker or scoring
    core = PolicyCore(
        PolicyStore(engine),
        ranker,
        seed=settings.seed or None,
        belief_cache_seconds=settings.belief_cache_seconds,
    )
    sink = GrpcMetricsSink(metrics_pb2_grpc.MetricsServiceStub(metrics_channel))
    registration = ServiceRegistration(
        POLICY_SERVICE, policy_pb2_grpc.add_PolicyServiceServicer_to_server, PolicyServicer(core)
    )
    service = start_service("policy", [registration], settings, admin_methods=ADMIN_METHODS)
    service.metrics.registry.register(OutboxGauges(core.store))
    service.metrics.registry.register(ArmStateGauges(core))
    service.closers.extend([scoring_channel.close, metrics_channel.close, engine.dispose, core.close])
    if train_channel is not None:
        service.closers.append(train_channel.close)
    # Stopped first (closers run in reverse): background work ends before the channels close.
    service.closers.append(
        run_periodically("outbox", settings.outbox_interval_seconds, lambda: core.drain_outbox(sink, scoring))
    )
    service.closers.append(run_periodically("guardrails", settings.guardrail_interval_seconds, core.check_guardrails))
    service.closers.append(run_periodically("forget", 60.0, core.forget_old_decisions))
    watch = StorageWatch(engine, service.health.set_serving, service.health.set_not_serving)
    service.closers.append(run_periodically("storage", STORAGE_CHECK_SECONDS, watch.check))
    service.health.set_serving()
    return service


if __name__ == "__main__":
    sys.exit(run_service("python -m services.policy", PolicyServerSettings, build))
