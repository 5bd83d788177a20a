"""A real EmbeddingService in this process and ScoringService's item vectors from it, for the
benchmarks whose strategies read item texts (content, two_tower)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rectune.v1 import embedding_pb2_grpc
from services.common.clients import make_channel
from services.common.migrations import migrate
from services.common.storage import make_engine
from services.common.wait_healthy import wait_serving
from services.scoring.core.data import ScoringData
from services.scoring.core.tables import SCHEMA
from services.scoring.core.vectors import ItemVectors, VectorStore
from services.scoring.embedding_client import GrpcTextEncoder


def start_embedding_service() -> tuple[Any, str]:
    from services.embedding.__main__ import EmbeddingSettings, build

    service = build(EmbeddingSettings(port=0, grace_seconds=1.0))
    address = f"127.0.0.1:{service.port}"
    if wait_serving([address], timeout_seconds=180)[address] != "SERVING":
        raise SystemExit("EmbeddingService did not start")
    return service, address


def item_vectors(data: ScoringData, address: str, folder: Path) -> ItemVectors:
    """Every item's vector, stored in ``folder`` so that a rerun does not encode again."""
    engine = make_engine(f"sqlite:///{folder / 'vectors.db'}")
    migrate(engine, SCHEMA)
    encoder = GrpcTextEncoder(embedding_pb2_grpc.EmbeddingServiceStub(make_channel(address)))
    vectors = ItemVectors(data, encoder, VectorStore(engine))
    vectors.ensure()
    return vectors
