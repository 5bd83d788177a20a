"""EmbeddingService on a real server with the real all-MiniLM-L6-v2 model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest

from rectune.datasets import item_texts
from rectune.v1 import embedding_pb2, embedding_pb2_grpc
from services.common.wait_healthy import wait_serving
from services.embedding.__main__ import EmbeddingSettings, build
from services.embedding.core.encoder import Encoder, EncoderConfig
from services.embedding.core.users import HISTORY_SEPARATOR
from tests.rpc import error_of

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
MIN_COSINE = 0.99999


TEXTS = item_texts()[:48]


@pytest.fixture(scope="module")
def raw_encoder() -> Encoder:
    return Encoder(EncoderConfig())


@pytest.fixture(scope="module")
def stub():
    settings = EmbeddingSettings(port=0, grace_seconds=1.0, max_texts_per_request=64, max_text_bytes=512, max_batch=16)
    service = build(settings)
    address = f"127.0.0.1:{service.port}"
    assert wait_serving([address], timeout_seconds=120)[address] == "SERVING"
    channel = grpc.insecure_channel(address)
    yield embedding_pb2_grpc.EmbeddingServiceStub(channel)
    channel.close()
    service.stop(0)


def as_array(vectors) -> np.ndarray:
    return np.array([list(v.values) for v in vectors], dtype=np.float32)


def assert_same_vectors(served: np.ndarray, raw: np.ndarray) -> None:
    assert served.shape == raw.shape
    cosines = (served * raw).sum(axis=1) / (np.linalg.norm(served, axis=1) * np.linalg.norm(raw, axis=1))
    assert cosines.min() >= MIN_COSINE, f"lowest cosine {cosines.min()}"


def embed(stub, texts: list[str]) -> np.ndarray:
    response = stub.EmbedTexts(embedding_pb2.EmbedTextsRequest(texts=[t.encode() for t in texts]), timeout=60)
    return as_array(response.vectors)


def test_one_batch_equals_the_raw_encoder(stub, raw_encoder: Encoder) -> None:
    assert_same_vectors(embed(stub, TEXTS), raw_encoder.encode(TEXTS))


def test_concurrent_single_texts_equal_the_raw_encoder(stub, raw_encoder: Encoder) -> None:
    texts = [f"{t} single" for t in TEXTS]  # not in the cache yet
    with ThreadPoolExecutor(8) as pool:
        served = np.concatenate(list(pool.map(lambda t: embed(stub, [t]), texts)))
    assert_same_vectors(served, raw_encoder.encode(texts))


def test_mixed_request_sizes_equal_the_raw_encoder(stub, raw_encoder: Encoder) -> None:
    texts = [f"{t} mixed" for t in TEXTS]
    groups = [texts[0:1], texts[1:20], texts[20:23], texts[23:48]]
    with ThreadPoolExecutor(4) as pool:
        served = np.concatenate(list(pool.map(lambda g: embed(stub, g), groups)))
    assert_same_vectors(served, raw_encoder.encode(texts))


def test_response_names_the_model_and_dimension(stub) -> None:
    response = stub.EmbedTexts(embedding_pb2.EmbedTextsRequest(texts=[b"hello"]), timeout=30)
    assert (response.model_name, response.dimension, len(response.vectors[0].values)) == ("all-MiniLM-L6-v2", 384, 384)


def test_bulk_stream_answers_every_chunk_in_order(stub, raw_encoder: Encoder) -> None:
    texts = [f"{t} bulk" for t in TEXTS]
    chunks = [texts[i : i + 5] for i in range(0, len(texts), 5)]
    requests = (
        embedding_pb2.EmbedBulkRequest(sequence=100 + n, texts=[t.encode() for t in chunk])
        for n, chunk in enumerate(chunks)
    )
    responses = list(stub.EmbedBulk(requests, timeout=120))
    assert [r.sequence for r in responses] == [100 + n for n in range(len(chunks))]
    served = np.concatenate([as_array(r.vectors) for r in responses])
    assert_same_vectors(served, raw_encoder.encode(texts))


def history_request(
    mode: embedding_pb2.UserEncodingMode.ValueType, half_life: float = 0.0
) -> embedding_pb2.EncodeUserRequest:
    request = embedding_pb2.EncodeUserRequest(mode=mode, half_life_seconds=half_life)
    for n, (text, rating) in enumerate(zip(TEXTS[:4], [5.0, 3.0, 4.0, 1.0], strict=True)):
        request.history.add(item_id=str(n), text=text, value=rating).time.seconds = 1_000_000 + 3600 * n
    return request


def test_encode_user_weighted_mean_matches_a_direct_computation(stub, raw_encoder: Encoder) -> None:
    request = history_request(embedding_pb2.USER_ENCODING_MODE_WEIGHTED_MEAN, half_life=7200.0)
    response = stub.EncodeUser(request, timeout=30)
    ages = np.array([3, 2, 1, 0]) * 3600.0
    weights = np.array([5.0, 3.0, 4.0, 1.0]) * 0.5 ** (ages / 7200.0)
    expected = (raw_encoder.encode(TEXTS[:4]) * weights[:, None]).sum(axis=0)
    assert_same_vectors(as_array([response.vector]), (expected / np.linalg.norm(expected))[None, :])
    assert (response.mode, response.entries_used) == (embedding_pb2.USER_ENCODING_MODE_WEIGHTED_MEAN, 4)


def test_encode_user_history_text_encodes_the_newest_first(stub, raw_encoder: Encoder) -> None:
    response = stub.EncodeUser(history_request(embedding_pb2.USER_ENCODING_MODE_HISTORY_TEXT), timeout=30)
    expected = raw_encoder.encode([HISTORY_SEPARATOR.join(reversed(TEXTS[:4]))])
    assert_same_vectors(as_array([response.vector]), expected)
    assert (response.mode, response.entries_used) == (embedding_pb2.USER_ENCODING_MODE_HISTORY_TEXT, 4)


def test_model_info(stub) -> None:
    info = stub.GetModelInfo(embedding_pb2.GetModelInfoRequest(), timeout=10)
    assert (info.model_name, info.dimension, info.device, info.dtype) == ("all-MiniLM-L6-v2", 384, "cpu", "float32")
    assert (info.max_length, info.max_texts_per_request, info.max_text_bytes, info.max_batch) == (256, 64, 512, 16)


@pytest.mark.parametrize(
    ("texts", "details"),
    [
        ([], "texts: must not be empty"),
        ([b"x"] * 65, "texts: at most 64 texts per request, got 65"),
        ([b"fine", b"y" * 513], "texts[1]: at most 512 bytes, got 513"),
        ([b"fine", b"fine", b"caf\xe9"], "texts[2]: is not valid UTF-8 (byte 3)"),
    ],
)
def test_bad_texts_are_invalid_argument_naming_the_index(stub, texts: list[bytes], details: str) -> None:
    request = embedding_pb2.EmbedTextsRequest(texts=texts)
    assert error_of(lambda: stub.EmbedTexts(request, timeout=10)) == (grpc.StatusCode.INVALID_ARGUMENT, details)


def test_a_bad_bulk_chunk_names_its_position_and_index(stub) -> None:
    requests = iter(
        [
            embedding_pb2.EmbedBulkRequest(sequence=1, texts=[b"ok"]),
            embedding_pb2.EmbedBulkRequest(sequence=2, texts=[b"\xff"]),
        ]
    )
    assert error_of(lambda: list(stub.EmbedBulk(requests, timeout=30))) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "requests[1].texts[0]: is not valid UTF-8 (byte 0)",
    )


def test_bad_user_requests_name_the_field(stub) -> None:
    empty = embedding_pb2.EncodeUserRequest()
    assert error_of(lambda: stub.EncodeUser(empty, timeout=10)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "history: must not be empty",
    )
    bad_mode = history_request(mode=embedding_pb2.UserEncodingMode.ValueType(7))  # no such mode
    assert error_of(lambda: stub.EncodeUser(bad_mode, timeout=10)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "mode: must be a UserEncodingMode, got 7",
    )


def test_a_model_that_cannot_load_stops_the_service_with_the_reason(tmp_path: Path) -> None:
    process = subprocess.run(
        [sys.executable, "-m", "services.embedding", "--port", "0", "--model", str(tmp_path / "no-model")],
        cwd=ROOT,
        env={**os.environ, "RECTUNE_LOG_FORMAT": "json"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert process.returncode == 1
    records = [json.loads(line) for line in process.stdout.splitlines()]
    failure = next(r for r in records if r["event"] == "failed")
    assert failure["reason"].startswith(f"cannot load model '{tmp_path / 'no-model'}'")
