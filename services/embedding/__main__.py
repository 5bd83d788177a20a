"""``python -m services.embedding``: serve EmbeddingService."""

from __future__ import annotations

import sys
from dataclasses import dataclass

from rectune.v1 import embedding_pb2_grpc
from services.common.contracts import EMBEDDING_SERVICE
from services.common.entrypoint import run_service
from services.common.server import RunningService, ServiceRegistration, start_service
from services.common.settings import ServerSettings
from services.embedding.servicer import EmbeddingServicer


@dataclass(frozen=True)
class EmbeddingSettings(ServerSettings):
    """EmbeddingService: encodes item texts and user histories."""


def build(settings: EmbeddingSettings) -> RunningService:
    registration = ServiceRegistration(
        EMBEDDING_SERVICE, embedding_pb2_grpc.add_EmbeddingServiceServicer_to_server, EmbeddingServicer()
    )
    service = start_service("embedding", [registration], settings)
    service.health.set_serving()
    return service


if __name__ == "__main__":
    sys.exit(run_service("python -m services.embedding", EmbeddingSettings, build))
