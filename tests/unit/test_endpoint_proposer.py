"""The endpoint client and the language-model proposers against an OpenAI-compatible
endpoint. The endpoint here is a stand-in (StandInChatEndpoint, an HTTP server on loopback
that replays scripted answers): the test is about the code around the model, not the model."""

from __future__ import annotations

import json
import math
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
from tuner.endpoint import ChatEndpoint, EndpointError, EndpointModel, option_weights
from tuner.endpoint_proposer import EndpointProposer
from tuner.pool_proposer import PoolProposer


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
                if status == 200 and isinstance(content, str):
                    content = {"choices": [{"message": {"content": content}}]}
                payload = json.dumps(content)
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
    client = ChatEndpoint(stand_in.url, "big-model", api_key="k3y")
    proposer = EndpointProposer(client, seed=1, temperature=0.7, keep_words=True)
    (proposal,) = proposer.propose(SPACE, 1, taken, [])
    assert proposal.configuration == Configuration("als", {"factors": 32, "regularization": 0.1})
    assert proposal.origin is ArmOrigin.TUNER_LM
    assert proposal.rationale == (
        "big-model wrote it among the values the space allows, with nothing screened yet; "
        "the model's words: fewer factors overfit less"
    )
    path, headers, body = stand_in.requests[0]
    assert path == "/v1/chat/completions" and headers["Authorization"] == "Bearer k3y"
    assert body["model"] == "big-model" and body["temperature"] == 0.7
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    assert "- als: factors (integer from 8 to 512, log scale)" in body["messages"][1]["content"]
    schema = body["response_format"]["json_schema"]["schema"]
    jsonschema.validate(json.loads(answer("als", factors=32, regularization=0.1)), schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(json.loads(answer("als", factors=4, regularization=0.1)), schema)


def test_a_transient_failure_is_retried_and_a_lasting_one_names_the_url_and_the_status(endpoint) -> None:
    stand_in = endpoint([(503, {"error": "model is loading"}), (429, {"error": "slow down"}), (200, "{}")])
    client = ChatEndpoint(stand_in.url, "big-model", attempts=3)
    assert client.complete("system", "user") == {"choices": [{"message": {"content": "{}"}}]}
    assert len(stand_in.requests) == 3
    stand_in.replies = [(503, {"error": "model is loading"})] * 2
    with pytest.raises(EndpointError) as error:
        ChatEndpoint(stand_in.url, "big-model", attempts=2).complete("system", "user")
    assert str(error.value) == (
        f'language model endpoint {stand_in.url}/chat/completions: HTTP 503: {{"error": "model is loading"}}'
    )


def test_a_refusal_is_not_retried(endpoint) -> None:
    stand_in = endpoint([(400, {"error": "unknown field response_format"}), (200, "{}")])
    with pytest.raises(EndpointError, match=r"HTTP 400: \{\"error\": \"unknown field response_format\"\}$"):
        ChatEndpoint(stand_in.url, "big-model").complete("system", "user")
    assert len(stand_in.requests) == 1 and len(stand_in.replies) == 1


def test_an_unreachable_endpoint_is_an_endpoint_error() -> None:
    client = ChatEndpoint("http://127.0.0.1:9/v1", "big-model", timeout_seconds=2, attempts=2)
    with pytest.raises(EndpointError, match=r"language model endpoint http://127.0.0.1:9/v1/chat/completions: "):
        EndpointProposer(client).propose(SPACE, 1, set(), [])


def first_token(*alternatives: tuple[str, float], content: str = "") -> dict[str, Any]:
    """A chat reply whose first answer token had these alternatives (token, log-probability)."""
    top = [{"token": token, "logprob": logprob} for token, logprob in alternatives]
    return {"choices": [{"message": {"content": content}, "logprobs": {"content": [{"top_logprobs": top}]}}]}


def test_the_pool_proposer_reads_an_endpoints_probabilities_of_its_candidates(endpoint) -> None:
    # Two orders of a pool of two: the endpoint prefers B in the first and A in the second,
    # both times the same candidate (the second of the pool as drawn).
    stand_in = endpoint([(200, first_token(("B", -0.1), ("A", -2.5))), (200, first_token((" A", -0.2), ("B", -1.8)))])
    proposer = PoolProposer(EndpointModel(ChatEndpoint(stand_in.url, "big-model")), seed=3, pool_size=2)
    (proposal,) = proposer.propose(SPACE, 1, set(), [])
    assert "big-model chose" in proposal.rationale and proposal.rationale.count(" p=") == 2
    candidates = proposal.rationale.split("pool of 2: ")[1].split("; big-model chose")[0].split("; ")
    assert f"big-model chose {candidates[1].split(' p=')[0]}" in proposal.rationale
    for _path, _headers, body in stand_in.requests:
        assert (body["max_tokens"], body["logprobs"], body["temperature"]) == (1, True, 0.0)
        assert body["messages"][1]["content"].endswith("Which candidate will score highest? Answer with one letter.")


def test_option_weights_sum_each_options_tokens_and_ignore_the_rest() -> None:
    reply = first_token(("A", math.log(0.5)), (" A", math.log(0.1)), ("B", math.log(0.2)), ("C", -math.inf), ("x", 0.0))
    assert option_weights(reply, ["A", "B", "C"]) == pytest.approx([0.6, 0.2, 0.0])
    assert option_weights({"choices": [{"message": {"content": "B"}}]}, ["A", "B"]) == [0.0, 0.0]


def test_without_log_probabilities_the_answered_letter_takes_all_the_weight(endpoint) -> None:
    stand_in = endpoint([(200, "B"), (200, "no idea")])
    model = EndpointModel(ChatEndpoint(stand_in.url, "big-model"))
    assert model.probabilities_each("system", ["first", "second"], ["A", "B"]) == [[0.0, 1.0], [0.5, 0.5]]


def test_parsing_an_answer_names_the_field_that_is_wrong() -> None:
    with pytest.raises(SpaceError, match=r"answer.params.mode: 'z' is outside"):
        SPACE.parse({"strategy": "hybrid", "params": {"mode": "z", "explore": True}})
    with pytest.raises(SpaceError, match=r"answer.params: depth not hyperparameters of hybrid"):
        SPACE.parse({"strategy": "hybrid", "params": {"mode": "a", "explore": True, "depth": 3}})
    assert SPACE.parse({"strategy": "hybrid", "params": {"mode": "a"}}).params == {"mode": "a", "explore": False}


def test_a_server_that_knows_only_json_object_with_a_schema_is_asked_in_that_form(endpoint) -> None:
    refusal = {"error": {"message": "body.response_format.type: Input should be 'text' or 'json_object'"}}
    stand_in = endpoint(
        [
            (422, refusal),
            (200, answer("als", factors=32, regularization=0.1)),
            (200, answer("als", factors=64, regularization=0.1)),
        ]
    )
    proposer = EndpointProposer(ChatEndpoint(stand_in.url, "llama"), seed=1)
    assert len(proposer.propose(SPACE, 2, set(), [])) == 2
    forms = [body["response_format"] for _, _, body in stand_in.requests]
    assert [form["type"] for form in forms] == ["json_schema", "json_object", "json_object"]
    assert forms[1]["schema"] == forms[0]["json_schema"]["schema"]
    # Any other refusal is not taken for this one.
    other = endpoint([(422, {"error": {"message": "model not found"}})])
    with pytest.raises(EndpointError, match="model not found"):
        EndpointProposer(ChatEndpoint(other.url, "llama"), seed=1).propose(SPACE, 1, set(), [])
