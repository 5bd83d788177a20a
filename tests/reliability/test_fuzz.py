"""Every RPC of the four services, fuzzed (issue #20, item 8): hostile values in every field
of the request (ids of 200 characters and of 64 KiB, NUL bytes, extreme integers, NaN and
infinities, times at and past the ends of Timestamp's range, unknown enum numbers,
repeated fields of many entries) and random bytes that are not a request at all. No answer
may be INTERNAL or UNKNOWN: a bad request gets a status naming what is wrong.

Real servers on loopback: EmbeddingService (the real encoder), ScoringService with
MovieLens 100K, MetricsService and PolicyService wired to them. ``RECTUNE_FUZZ_REQUESTS``
sets the requests per RPC: 24 in ``make test``, 300 in ``make fuzz`` (the issue's bar).

A second pass (issue #31) sends requests whose fields are at their limits together: every
repeated field with thousands of entries (1,000 to 30,000: the per-field limits and just past
them), counts and sizes at their largest, values otherwise valid (known ids, times of now)
so that the request reaches the code that multiplies them. ``RECTUNE_FUZZ_LIMIT_REQUESTS``
per RPC: 3 in ``make test``, 20 in ``make fuzz``.
"""

from __future__ import annotations

import math
import os
import random
import time
import zlib
from collections import Counter
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor as pb_descriptor
from google.protobuf.message import Message

from rectune.v1 import common_pb2, embedding_pb2, metrics_pb2, policy_pb2, scoring_pb2
from tests.conftest import MOVIELENS

pytestmark = pytest.mark.integration

REQUESTS_PER_RPC = int(os.environ.get("RECTUNE_FUZZ_REQUESTS", "24"))
LIMIT_REQUESTS_PER_RPC = int(os.environ.get("RECTUNE_FUZZ_LIMIT_REQUESTS", "3"))
CALL_SECONDS = 20.0
STREAM_SECONDS = 1.0  # a well-formed watch streams until its deadline: that is not a failure
FORBIDDEN = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
FD = pb_descriptor.FieldDescriptor

MODULES = {"embedding": embedding_pb2, "scoring": scoring_pb2, "metrics": metrics_pb2, "policy": policy_pb2}
KNOWN_IDS = ["1", "50", "pop", "champion", "u1", "e1", "d1"]  # values that exist, so deeper code runs
STRATEGIES = ["popularity", "item_knn", "als", "hybrid", "content", "deep"]
TIMESTAMP_SECONDS = [0, 1, 2**31, -(2**40), 2**40, 253402300799, 253402300800, -62135596800, -62135596801]


class Fuzzer:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def string(self, name: str) -> str:
        choices = [
            "",
            "x" * 200,
            "x" * 65536,
            "nul\x00byte",
            "é" * 50,
            "../../etc/passwd",
            "🙂" * 10,
            self.rng.choice(KNOWN_IDS),
        ]
        if name == "strategy":
            choices += STRATEGIES * 3
        if name == "page_token":
            choices += ["bm90IGEgdG9rZW4=", "WzFlOTk5LCAiZDEiXQ==", "!!!"]
        return self.rng.choice(choices)

    def number(self, field: pb_descriptor.FieldDescriptor) -> Any:
        if field.type in (FD.TYPE_DOUBLE, FD.TYPE_FLOAT):
            values = [0.0, -1.0, 1.0, 0.5, 1e308, -1e308, 1e-300, math.nan, math.inf, -math.inf, 2.0**62]
            value = self.rng.choice(values)
            return value if field.type == FD.TYPE_DOUBLE or not math.isfinite(value) else max(-3e38, min(3e38, value))
        bits = 64 if field.type in (FD.TYPE_INT64, FD.TYPE_SINT64, FD.TYPE_SFIXED64) else 32
        unsigned = field.type in (FD.TYPE_UINT32, FD.TYPE_UINT64, FD.TYPE_FIXED32, FD.TYPE_FIXED64)
        low, high = (0, 2**bits - 1) if unsigned else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
        values = [0, 1, -1, 5, 10, 1000, 10**6, 2**31 - 1, -(2**31), 2**40, -(2**40), 2**62, low, high]
        return self.rng.choice([v for v in values if low <= v <= high])

    def fill(self, message: Message, depth: int = 0) -> Message:
        descriptor = message.DESCRIPTOR
        if descriptor.full_name == "google.protobuf.Timestamp":
            message.seconds = self.rng.choice(TIMESTAMP_SECONDS)  # type: ignore[attr-defined]
            message.nanos = self.rng.choice([0, 999_999_999, 10**9, -1])  # type: ignore[attr-defined]
            return message
        for field in descriptor.fields:
            if self.rng.random() < 0.25:
                continue  # left unset
            self._set(message, field, depth)
        return message

    def _set(self, message: Message, field: Any, depth: int) -> None:
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            target = getattr(message, field.name)
            for _ in range(self.rng.choice([0, 1, 3])):
                key = self.string("key")
                value_field = field.message_type.fields_by_name["value"]
                if value_field.message_type is not None:
                    self.fill(target[key], depth + 1)
                else:
                    target[key] = self._scalar(value_field)
            return
        if field.is_repeated:
            count = self.rng.choice([0, 1, 2, 3, 50]) if depth < 2 else self.rng.choice([0, 1])
            container = getattr(message, field.name)
            for _ in range(count):
                if field.message_type is not None:
                    if depth < 3:
                        self.fill(container.add(), depth + 1)
                else:
                    container.append(self._scalar(field))
            return
        if field.message_type is not None:
            if depth < 3:
                self.fill(getattr(message, field.name), depth + 1)
            return
        setattr(message, field.name, self._scalar(field))

    def _scalar(self, field: pb_descriptor.FieldDescriptor) -> Any:
        if field.type == FD.TYPE_STRING:
            return self.string(field.name)
        if field.type == FD.TYPE_BYTES:
            return self.rng.randbytes(self.rng.choice([0, 3, 64]))
        if field.type == FD.TYPE_BOOL:
            return self.rng.random() < 0.5
        if field.type == FD.TYPE_ENUM:
            assert field.enum_type is not None
            return self.rng.choice([v.number for v in field.enum_type.values] + [99, -1])
        return self.number(field)

    def raw(self) -> bytes:
        """Bytes that are not a valid request: random, or a string field holding invalid UTF-8."""
        if self.rng.random() < 0.5:
            return self.rng.randbytes(self.rng.choice([1, 7, 64, 512]))
        field_number = self.rng.choice([1, 2, 3, 4])
        invalid_utf8 = b"\xff\xfe\xc3\x28"
        return bytes([(field_number << 3) | 2, len(invalid_utf8)]) + invalid_utf8


class LimitFuzzer(Fuzzer):
    """Fields at their limits together: many entries in every repeated field of the request,
    the largest counts and sizes, otherwise valid values (see the module's docstring)."""

    def string(self, name: str) -> str:
        if name == "strategy":
            return self.rng.choice(STRATEGIES[:-1])
        return self.rng.choice([*KNOWN_IDS, "x" * 128, "1"])

    def number(self, field: pb_descriptor.FieldDescriptor) -> Any:
        if field.type in (FD.TYPE_DOUBLE, FD.TYPE_FLOAT):
            return self.rng.choice([1.0, 1e6, 3600.0, 0.5])
        return self.rng.choice([1000, 10_000, 100_000, 1_000_000, 2**31 - 1])

    def fill(self, message: Message, depth: int = 0) -> Message:
        if message.DESCRIPTOR.full_name == "google.protobuf.Timestamp":
            message.seconds = int(time.time()) - self.rng.choice([0, 60, 86_400])  # type: ignore[attr-defined]
            return message
        for field in message.DESCRIPTOR.fields:
            self._set(message, field, depth)
        return message

    def _set(self, message: Message, field: Any, depth: int) -> None:
        if field.is_repeated and not (field.message_type is not None and field.message_type.GetOptions().map_entry):
            container = getattr(message, field.name)
            count = self.rng.choice([1000, 10_000, 10_001, 30_000]) if depth == 0 else self.rng.choice([1, 3])
            if field.message_type is not None:
                template = self.fill(type(container.add())(), depth + 1)
                del container[:]
                container.extend([template] * min(count, 10_001))  # messages: up to the per-request limits
            elif field.type == FD.TYPE_BYTES:
                container.extend([self.rng.choice([b"short text", b"y" * 4096])] * min(count, 1024))
            elif field.type == FD.TYPE_STRING:
                # Distinct ids (MovieLens item ids among them) so that nothing folds them into one.
                container.extend(str(1 + n % 1682) if n < 1682 else f"id-{n}" for n in range(count))
            else:
                container.extend([self._scalar(field)] * count)
            return
        super()._set(message, field, depth)


@pytest.fixture(scope="module")
def suite(tmp_path_factory) -> Iterator[dict[str, grpc.Channel]]:
    from tests.conftest import build_settings

    tmp = tmp_path_factory.mktemp("fuzz")
    started = []

    def start(name: str, **overrides: Any) -> str:
        import importlib

        if name != "embedding":
            overrides.setdefault("database_url", f"sqlite:///{tmp / f'{name}.db'}")
        service = importlib.import_module(f"services.{name}.__main__").build(build_settings(name, **overrides))
        started.append(service)
        return f"127.0.0.1:{service.port}"

    embedding = start("embedding")
    scoring = start("scoring", dataset=str(MOVIELENS), embedding_address=embedding)
    metrics = start("metrics")
    policy = start("policy", scoring_address=scoring, metrics_address=metrics, outbox_interval_seconds=0.2, seed=1)
    channels = {
        name: grpc.insecure_channel(address)
        for name, address in {"embedding": embedding, "scoring": scoring, "metrics": metrics, "policy": policy}.items()
    }
    champion = policy_pb2.PutArmRequest(
        arm_id="champion",
        configuration=common_pb2.Configuration(strategy="popularity"),
        origin=policy_pb2.ARM_ORIGIN_CONTROL,
        initial_state=policy_pb2.ARM_STATE_CHAMPION,
    )
    channels["policy"].unary_unary(
        "/rectune.v1.PolicyService/PutArm",
        request_serializer=policy_pb2.PutArmRequest.SerializeToString,
        response_deserializer=policy_pb2.PutArmResponse.FromString,
    )(champion, timeout=60)
    yield channels
    for channel in channels.values():
        channel.close()
    for service in reversed(started):
        service.stop(0)


def every_rpc() -> list[tuple[str, pb_descriptor.MethodDescriptor]]:
    return [
        (name, method)
        for name, module in MODULES.items()
        for service in module.DESCRIPTOR.services_by_name.values()
        for method in service.methods
    ]


def call(channel: grpc.Channel, method: pb_descriptor.MethodDescriptor, payload: bytes) -> grpc.StatusCode:
    """One call with these request bytes; the status it ends with (OK when it answered)."""
    path = f"/{method.containing_service.full_name}/{method.name}"
    identity = {"request_serializer": None, "response_deserializer": None}
    try:
        if method.server_streaming and method.client_streaming:
            for _ in channel.stream_stream(path, **identity)(iter([payload, payload]), timeout=CALL_SECONDS):
                pass
        elif method.server_streaming:
            for _ in channel.unary_stream(path, **identity)(payload, timeout=STREAM_SECONDS):
                pass
        elif method.client_streaming:
            answer = channel.stream_unary(path, **identity)(iter([payload, payload]), timeout=CALL_SECONDS)
            assert answer is not None
        else:
            channel.unary_unary(path, **identity)(payload, timeout=CALL_SECONDS)
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


@pytest.mark.parametrize(("service", "method"), every_rpc(), ids=lambda v: v if isinstance(v, str) else v.name)
def test_no_request_gets_internal_or_unknown(suite, service: str, method: pb_descriptor.MethodDescriptor) -> None:
    fuzzer = Fuzzer(seed=zlib.crc32(method.full_name.encode()))  # the same requests in every run
    message_class = getattr(MODULES[service], method.input_type.name)
    codes: Counter[str] = Counter()
    failures: list[str] = []
    for index in range(REQUESTS_PER_RPC):
        payload = fuzzer.raw() if index % 4 == 3 else fuzzer.fill(message_class()).SerializeToString()
        code = call(suite[service], method, payload)
        codes[code.name] += 1
        if code in FORBIDDEN and len(failures) < 5:
            failures.append(f"{code.name} for request bytes {payload[:120]!r}")
    assert not failures, f"{method.full_name}: {dict(codes)}; first: {failures}"


@pytest.mark.parametrize(("service", "method"), every_rpc(), ids=lambda v: v if isinstance(v, str) else v.name)
def test_requests_at_their_limits_together_get_no_internal_or_unknown(
    suite, service: str, method: pb_descriptor.MethodDescriptor
) -> None:
    fuzzer = LimitFuzzer(seed=zlib.crc32(method.full_name.encode()) + 1)
    message_class = getattr(MODULES[service], method.input_type.name)
    codes: Counter[str] = Counter()
    failures: list[str] = []
    for _ in range(LIMIT_REQUESTS_PER_RPC):
        payload = fuzzer.fill(message_class()).SerializeToString()
        code = call(suite[service], method, payload)
        codes[code.name] += 1
        if code in FORBIDDEN and len(failures) < 3:
            failures.append(f"{code.name} for a request of {len(payload):,} bytes: {payload[:120]!r}")
    assert not failures, f"{method.full_name}: {dict(codes)}; first: {failures}"
