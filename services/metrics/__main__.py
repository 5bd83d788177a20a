"""``python -m services.metrics``: serve MetricsService.

Migrates the database to the newest schema at start-up, then serves. Compaction of raw
events past the retention horizon runs in the background.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from rectune.domain.events import MAX_FUTURE_SECONDS
from rectune.v1 import metrics_pb2_grpc
from services.common.background import run_periodically
from services.common.config import SettingsError, option
from services.common.contracts import METRICS_SERVICE
from services.common.entrypoint import run_service
from services.common.server import RunningService, ServiceRegistration, start_service
from services.common.settings import ServerSettings, check_database_url
from services.common.storage import make_engine
from services.common.storage_guard import STORAGE_CHECK_SECONDS, StorageWatch
from services.metrics.core.database import migrate
from services.metrics.core.service import MetricsConfig, MetricsCore
from services.metrics.core.stats import RewardWeights
from services.metrics.core.store import MetricsStore
from services.metrics.gauges import ArmGauges
from services.metrics.servicer import MetricsServicer


@dataclass(frozen=True)
class MetricsSettings(ServerSettings):
    """MetricsService: event store and per-arm statistics."""

    database_url: str = option(
        env="RECTUNE_DATABASE_URL",
        default="sqlite:///rectune-metrics.db",
        help="SQLAlchemy URL: a SQLite file (WAL) or postgresql+psycopg://user@host/db",
    )
    reward_click_weight: float = option(env="RECTUNE_REWARD_CLICK_WEIGHT", default=1.0, help="reward of a click")
    reward_conversion_weight: float = option(
        env="RECTUNE_REWARD_CONVERSION_WEIGHT", default=0.0, help="reward of a conversion"
    )
    posterior_samples: int = option(
        env="RECTUNE_POSTERIOR_SAMPLES", default=10000, help="Monte-Carlo samples for probability best"
    )
    max_future_seconds: float = option(
        env="RECTUNE_MAX_FUTURE_SECONDS",
        default=MAX_FUTURE_SECONDS,
        help=f"events further in the future are refused; at least {MAX_FUTURE_SECONDS:g} (what the policy accepts)",
    )
    retention_hours: float = option(
        env="RECTUNE_RETENTION_HOURS",
        default=168.0,
        help="raw events older than this are dropped (their hourly roll-ups stay); 0 = keep",
    )
    compaction_interval_seconds: float = option(
        env="RECTUNE_COMPACTION_INTERVAL_SECONDS", default=600.0, help="how often compaction runs"
    )
    max_streams: int = option(
        env="RECTUNE_MAX_STREAMS",
        default=4,
        help="WatchArmStats and StreamEvents streams open at once, together; more are refused with "
        "RESOURCE_EXHAUSTED (each holds one of --max-workers threads)",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        check_database_url(self.database_url)
        if self.posterior_samples < 1:
            raise SettingsError(f"--posterior-samples: must be >= 1, got {self.posterior_samples}")
        if self.retention_hours < 0 or self.compaction_interval_seconds <= 0:
            raise SettingsError("--retention-hours: must be >= 0; --compaction-interval-seconds: must be > 0")
        if not 1 <= self.max_streams < self.max_workers:
            raise SettingsError(
                f"--max-streams: must be between 1 and --max-workers - 1 ({self.max_workers - 1}), so that "
                f"unary calls and health always find a thread; got {self.max_streams}"
            )
        if self.max_future_seconds < MAX_FUTURE_SECONDS:
            # PolicyService acknowledges times up to MAX_FUTURE_SECONDS ahead: refusing them
            # here would drop what was acknowledged.
            raise SettingsError(
                f"--max-future-seconds: must be >= {MAX_FUTURE_SECONDS:g} (what PolicyService accepts), "
                f"got {self.max_future_seconds:g}"
            )

    def config(self) -> MetricsConfig:
        return MetricsConfig(
            reward=RewardWeights(self.reward_click_weight, self.reward_conversion_weight),
            posterior_samples=self.posterior_samples,
            max_future_seconds=self.max_future_seconds,
            retention_hours=self.retention_hours,
            max_streams=self.max_streams,
        )


def build(settings: MetricsSettings) -> RunningService:
    engine = make_engine(settings.database_url)
    migrate(engine)
    core = MetricsCore(MetricsStore(engine), settings.config())
    registration = ServiceRegistration(
        METRICS_SERVICE, metrics_pb2_grpc.add_MetricsServiceServicer_to_server, MetricsServicer(core)
    )
    service = start_service("metrics", [registration], settings)
    service.metrics.registry.register(ArmGauges(core))
    service.on_stopping.append(core.stop_streams)
    service.closers.append(engine.dispose)
    service.closers.append(run_periodically("compaction", settings.compaction_interval_seconds, core.compact))
    watch = StorageWatch(engine, service.health.set_serving, service.health.set_not_serving)
    service.closers.append(run_periodically("storage", STORAGE_CHECK_SECONDS, watch.check))
    service.health.set_serving()
    return service


if __name__ == "__main__":
    sys.exit(run_service("python -m services.metrics", MetricsSettings, build))
