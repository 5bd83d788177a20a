"""``python -m services.metrics``: serve MetricsService."""

from __future__ import annotations

import sys
from dataclasses import dataclass

from rectune.v1 import metrics_pb2_grpc
from services.common.contracts import METRICS_SERVICE
from services.common.entrypoint import run_service
from services.common.server import RunningService, ServiceRegistration, start_service
from services.common.settings import ServerSettings
from services.metrics.servicer import MetricsServicer


@dataclass(frozen=True)
class MetricsSettings(ServerSettings):
    """MetricsService: event store and per-arm statistics."""


def build(settings: MetricsSettings) -> RunningService:
    registration = ServiceRegistration(
        METRICS_SERVICE, metrics_pb2_grpc.add_MetricsServiceServicer_to_server, MetricsServicer()
    )
    service = start_service("metrics", [registration], settings)
    service.health.set_serving()
    return service


if __name__ == "__main__":
    sys.exit(run_service("python -m services.metrics", MetricsSettings, build))
