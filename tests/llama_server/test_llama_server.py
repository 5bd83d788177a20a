"""The OpenAI-compatible path against a real server process: llama-cpp-python's server over
the packaged SmolLM2-135M-Instruct GGUF file, with the tuner's endpoint proposers (issue #28).

llama-cpp-python has no wheel here and builds from source (about 10 minutes on 2 cores), so
this runs by its own target, ``make test-llama-server``, which builds it into .venv-llama and
points RECTUNE_LLAMA_SERVER_PYTHON at it; ``make test`` does not collect this folder."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator

import httpx
import pytest

from demo.suite import free_port
from rectune.domain.configuration import Configuration
from rectune.domain.space import SearchSpace
from services.scoring.core.strategies.content import SPACE as CONTENT_SPACE
from services.scoring.core.strategies.registry import default_registry
from services.scoring.core.strategies.two_tower import SPACE as TWO_TOWER_SPACE
from tuner.endpoint import ChatEndpoint, EndpointModel
from tuner.endpoint_proposer import EndpointProposer
from tuner.language_model import packaged_gguf
from tuner.pool_proposer import PoolProposer
from tuner.proposers import Observation
from tuner.space import default_space

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    python = os.environ["RECTUNE_LLAMA_SERVER_PYTHON"]  # set by make test-llama-server
    port = free_port()
    log = (tmp_path_factory.mktemp("llama") / "server.log").open("w")
    argv = [python, "-m", "llama_cpp.server", "--model", str(packaged_gguf()), "--host", "127.0.0.1"]
    process = subprocess.Popen([*argv, "--port", str(port), "--n_ctx", "4096"], stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, f"the server exited: see {log.name}"
            try:
                if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the server did not answer within 120 s"
            time.sleep(1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def space() -> SearchSpace:
    spaces = [strategy.space for strategy in default_registry().values()] + [CONTENT_SPACE, TWO_TOWER_SPACE]
    return default_space(SearchSpace(tuple(sorted(spaces, key=lambda s: s.strategy)))).without("blend")


def test_the_endpoint_proposer_gets_configurations_in_the_space_from_a_real_server(server_url: str) -> None:
    searched = space()
    proposer = EndpointProposer(ChatEndpoint(server_url, "smollm2", timeout_seconds=120), seed=3, temperature=0.7)
    proposals = proposer.propose(searched, 3, set(), [])
    assert proposals, "no answer of the real server was inside the space"
    declared = searched.by_strategy()
    for proposal in proposals:
        configuration = proposal.configuration
        assert declared[configuration.strategy].canonical(configuration.params)  # valid as the service checks
        assert proposal.rationale.startswith("smollm2 wrote it")


def test_the_pool_proposer_reads_the_real_servers_probabilities(server_url: str) -> None:
    searched = space()
    defaults = [Configuration(s.strategy, s.canonical({})) for s in searched.strategies]
    history = [Observation(configuration, 0.05 + 0.01 * n) for n, configuration in enumerate(defaults)]
    model = EndpointModel(ChatEndpoint(server_url, "smollm2", timeout_seconds=120))
    (pick,) = PoolProposer(model, seed=5, k=10).propose(searched, 1, set(), history)
    assert pick.configuration.strategy in declared_names(searched)
    probabilities = model.probabilities_each("Answer with one letter.", ["A, B or C?"], ["A", "B", "C"])[0]
    assert abs(sum(probabilities) - 1.0) < 1e-6 and max(probabilities) < 1.0  # read from top_logprobs


def declared_names(searched: SearchSpace) -> list[str]:
    return searched.names()
