"""Fixtures shared by the test suite: real services in-process on ephemeral loopback ports."""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from rectune.datasets import MOVIELENS_100K
from rectune.v1 import embedding_pb2_grpc, metrics_pb2_grpc, policy_pb2_grpc, scoring_pb2_grpc
from services.common.server import RunningService

# tests/llama_server needs llama-cpp-python, built from source by its own target
# (`make test-llama-server`, which sets this variable); the suite does not collect it.
collect_ignore = [] if os.environ.get("RECTUNE_LLAMA_SERVER_PYTHON") else ["llama_server"]
STUBS: dict[str, Any] = {
    "embedding": embedding_pb2_grpc.EmbeddingServiceStub,
    "scoring": scoring_pb2_grpc.ScoringServiceStub,
    "policy": policy_pb2_grpc.PolicyServiceStub,
    "metrics": metrics_pb2_grpc.MetricsServiceStub,
}
SETTINGS_CLASSES = {
    "embedding": "EmbeddingSettings",
    "scoring": "ScoringSettings",
    "policy": "PolicyServerSettings",
    "metrics": "MetricsSettings",
}
# Peers that do not need to answer for a service to start (channels connect lazily).
UNUSED_PEER = "127.0.0.1:9"
ROOT = Path(__file__).resolve().parent.parent
MOVIELENS = MOVIELENS_100K
STATEFUL = {"metrics", "scoring", "policy"}
REQUIRED_PEERS = {
    "scoring": {"embedding_address": UNUSED_PEER},
    "policy": {"scoring_address": UNUSED_PEER, "metrics_address": UNUSED_PEER},
}


@dataclass
class StartedService:
    service: RunningService
    channel: grpc.Channel
    stub: Any

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.service.port}"


def build_settings(name: str, **overrides: Any) -> Any:
    module = importlib.import_module(f"services.{name}.__main__")
    settings_class = getattr(module, SETTINGS_CLASSES[name])
    values = {"port": 0, "grace_seconds": 1.0, **REQUIRED_PEERS.get(name, {}), **overrides}
    return settings_class(**values)


@pytest.fixture
def start_service(tmp_path: Path) -> Iterator[Callable[..., StartedService]]:
    """``start_service("policy", auth_token="t")`` -> the running service and a typed stub.

    Services that store state get a fresh SQLite file under the test's tmp_path unless
    the test passes ``database_url``."""
    started: list[StartedService] = []

    def start(name: str, **overrides: Any) -> StartedService:
        if name in STATEFUL:
            overrides.setdefault("database_url", f"sqlite:///{tmp_path / f'{name}-{len(started)}.db'}")
        module = importlib.import_module(f"services.{name}.__main__")
        service = module.build(build_settings(name, **overrides))
        channel = grpc.insecure_channel(f"127.0.0.1:{service.port}")
        handle = StartedService(service, channel, STUBS[name](channel))
        started.append(handle)
        return handle

    yield start
    for handle in started:
        handle.channel.close()
        handle.service.stop(0)


@pytest.fixture(scope="module")
def embedding_address() -> Iterator[str]:
    """A real EmbeddingService (the packaged all-MiniLM-L6-v2), serving, for a module's tests."""
    from services.common.wait_healthy import wait_serving
    from services.embedding.__main__ import EmbeddingSettings, build

    service = build(EmbeddingSettings(port=0, grace_seconds=1.0))
    address = f"127.0.0.1:{service.port}"
    assert wait_serving([address], timeout_seconds=120)[address] == "SERVING"
    yield address
    service.stop(0)


@pytest.fixture(scope="session")
def postgres_admin_url() -> Iterator[str]:
    """One throw-away PostgreSQL cluster for the session (fails, never skips, if it cannot start)."""
    from tests.postgres import throwaway_cluster

    with throwaway_cluster() as url:
        yield url


_database_counter = iter(range(1_000_000))


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh empty database on each backend: the same contract suite runs on both."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'test.db'}"
    from tests.postgres import create_database

    admin_url = request.getfixturevalue("postgres_admin_url")
    return create_database(admin_url, f"test_{next(_database_counter)}")


@pytest.fixture(scope="session")
def lm_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Where the packaged language model's dequantised weights go, once per test session."""
    return str(tmp_path_factory.mktemp("lm-cache"))


@pytest.fixture(scope="session")
def language_model(lm_cache_dir: str) -> Any:
    """The real SmolLM2-135M-Instruct (about 20 s to dequantise on first use in a session)."""
    from tuner.language_model import LanguageModel

    return LanguageModel("", lm_cache_dir)
