"""``python -m services.scoring``: serve ScoringService."""

from __future__ import annotations

import sys
from dataclasses import dataclass

from rectune.v1 import embedding_pb2_grpc, scoring_pb2_grpc
from services.common.clients import client_options_from, make_channel
from services.common.config import option
from services.common.contracts import SCORING_SERVICE
from services.common.entrypoint import run_service
from services.common.server import RunningService, ServiceRegistration, start_service
from services.common.settings import ServerSettings, check_address
from services.scoring.servicer import ScoringServicer


@dataclass(frozen=True)
class ScoringSettings(ServerSettings):
    """ScoringService: catalogue, strategies, ranking and offline evaluation."""

    embedding_address: str = option(
        env="RECTUNE_EMBEDDING_ADDRESS", required=True, default="", help="host:port of EmbeddingService"
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        check_address("--embedding-address", "RECTUNE_EMBEDDING_ADDRESS", self.embedding_address)


def build(settings: ScoringSettings) -> RunningService:
    embedding_channel = make_channel(settings.embedding_address, client_options_from(settings))
    servicer = ScoringServicer(embedding_pb2_grpc.EmbeddingServiceStub(embedding_channel))
    registration = ServiceRegistration(SCORING_SERVICE, scoring_pb2_grpc.add_ScoringServiceServicer_to_server, servicer)
    service = start_service("scoring", [registration], settings)
    service.closers.append(embedding_channel.close)
    service.health.set_serving()
    return service


if __name__ == "__main__":
    sys.exit(run_service("python -m services.scoring", ScoringSettings, build))
