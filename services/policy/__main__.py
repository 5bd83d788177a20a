"""``python -m services.policy``: serve PolicyService."""

from __future__ import annotations

import sys
from dataclasses import dataclass

from rectune.v1 import metrics_pb2_grpc, policy_pb2_grpc, scoring_pb2_grpc
from services.common.clients import client_options_from, make_channel
from services.common.config import option
from services.common.contracts import ADMIN_METHODS, POLICY_SERVICE
from services.common.entrypoint import run_service
from services.common.server import RunningService, ServiceRegistration, start_service
from services.common.settings import ServerSettings, check_address
from services.policy.servicer import PolicyServicer


@dataclass(frozen=True)
class PolicySettings(ServerSettings):
    """PolicyService: the bandit over configuration arms."""

    scoring_address: str = option(
        env="RECTUNE_SCORING_ADDRESS", required=True, default="", help="host:port of ScoringService"
    )
    metrics_address: str = option(
        env="RECTUNE_METRICS_ADDRESS", required=True, default="", help="host:port of MetricsService"
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        check_address("--scoring-address", "RECTUNE_SCORING_ADDRESS", self.scoring_address)
        check_address("--metrics-address", "RECTUNE_METRICS_ADDRESS", self.metrics_address)


def build(settings: PolicySettings) -> RunningService:
    options = client_options_from(settings)
    scoring_channel = make_channel(settings.scoring_address, options)
    metrics_channel = make_channel(settings.metrics_address, options)
    servicer = PolicyServicer(
        scoring_pb2_grpc.ScoringServiceStub(scoring_channel),
        metrics_pb2_grpc.MetricsServiceStub(metrics_channel),
    )
    registration = ServiceRegistration(POLICY_SERVICE, policy_pb2_grpc.add_PolicyServiceServicer_to_server, servicer)
    service = start_service("policy", [registration], settings, admin_methods=ADMIN_METHODS)
    service.closers.extend([scoring_channel.close, metrics_channel.close])
    service.health.set_serving()
    return service


if __name__ == "__main__":
    sys.exit(run_service("python -m services.policy", PolicySettings, build))
