"""The language-model proposer against an OpenAI-compatible endpoint. The endpoint here is a
stand-in (StandInChatEndpoint, an HTTP server on loopback that replays scripted answers):
the test is about the code around the model, not the model."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jsonschema
import pytest

from rectune.domain.arms import ArmOrigin
from rectune.domain.configuration import Configuration
from rectune.domain.space import SpaceError
from tests.unit.test_tuner import SPACE
from tuner.endpoint_proposer import EndpointError, EndpointProposer


class StandInChatEndpoint:
    """Answers POST /v1/chat/completions with the next scripted reply; records the requests."""

    def __init__(self, replies: list[tuple[int, Any]]) -> None:
        self.replies = list(replies)
        self.requests: list[tuple[str, dict[str, str], dict[str, Any]]] = []
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                endpoint.requests.append((self.path, dict(self.headers), body))
                status, content = endpoint.replies.pop(0)
                payload = json.dumps(content if status != 200 else {"choices": [{"message": {"content": content}}]})
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(payload.encode())

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def endpoint() -> Iterator[Any]:
    started: list[StandInChatEndpoint] = []

    def start(replies: list[tuple[int, Any]]) -> StandInChatEndpoint:
        started.append(StandInChatEndpoint(replies))
        return started[-1]

    yield start
    for stand_in in started:
        stand_in.close()


def answer(strategy: str, rationale: str = "because", **params: Any) -> str:
    return json.dumps({"strategy": strategy, "params": params, "rationale": rationale})


def test_answers_outside_the_space_and_repeats_are_refused(endpoint) -> None:
    stand_in = endpoint(
        [
            (200, answer("als", factors=4, regularization=0.1)),  # factors below 8
            (200, answer("svd")),
            (200, "not json"),
            (200, answer("als", factors=16, regularization=0.1)),  # taken
            (200, answer("als", factors=32, regularization=0.1, rationale="fewer factors overfit less")),
        ]
    )
    taken = {Configuration("als", {"factors": 16, "regularization": 0.1}).key()}
    proposer = EndpointProposer(stand_in.url, "big-model", api_key="k3y", seed=1, temperature=0.7)
    (proposal,) = proposer.propose(SPACE, 1, taken, [])
    assert proposal.configuration == Configuration("als", {"factors": 32, "regularization": 0.1})
    assert (proposal.origin, proposal.rationale) == (ArmOrigin.TUNER_LM, "big-model: fewer factors overfit less")
    path, headers, body = stand_in.requests[0]
    assert path == "/v1/chat/completions" and headers["Authorization"] == "Bearer k3y"
    assert body["model"] == "big-model" and body["temperature"] == 0.7
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    assert "- als: factors (integer from 8 to 512, log scale)" in body["messages"][1]["content"]
    schema = body["response_format"]["json_schema"]["schema"]
    jsonschema.validate(json.loads(answer("als", factors=32, regularization=0.1)), schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(json.loads(answer("als", factors=4, regularization=0.1)), schema)


def test_an_endpoint_error_names_the_url_and_the_status(endpoint) -> None:
    stand_in = endpoint([(503, {"error": "model is loading"})])
    with pytest.raises(EndpointError) as error:
        EndpointProposer(stand_in.url, "big-model").propose(SPACE, 1, set(), [])
    assert str(error.value) == (
        f'language model endpoint {stand_in.url}/chat/completions: HTTP 503: {{"error": "model is loading"}}'
    )


def test_an_unreachable_endpoint_is_an_endpoint_error() -> None:
    with pytest.raises(EndpointError, match=r"language model endpoint http://127.0.0.1:9/v1/chat/completions: "):
        EndpointProposer("http://127.0.0.1:9/v1", "big-model", timeout_seconds=2).propose(SPACE, 1, set(), [])


def test_parsing_an_answer_names_the_field_that_is_wrong() -> None:
    with pytest.raises(SpaceError, match=r"answer.params.mode: 'z' is outside"):
        SPACE.parse({"strategy": "hybrid", "params": {"mode": "z", "explore": True}})
    with pytest.raises(SpaceError, match=r"answer.params: depth not hyperparameters of hybrid"):
        SPACE.parse({"strategy": "hybrid", "params": {"mode": "a", "explore": True, "depth": 3}})
    assert SPACE.parse({"strategy": "hybrid", "params": {"mode": "a"}}).params == {"mode": "a", "explore": False}
