"""Client helpers: the retry service config and the tenacity wrapper."""

from __future__ import annotations

import json

import grpc
import pytest

from services.common.clients import retry_service_config, retry_unavailable
from services.common.contracts import IDEMPOTENT_METHODS, POLICY_SERVICE


def test_retry_config_covers_exactly_the_idempotent_methods() -> None:
    config = json.loads(retry_service_config(IDEMPOTENT_METHODS, max_attempts=4))
    (method_config,) = config["methodConfig"]
    names = {(n["service"], n["method"]) for n in method_config["name"]}
    assert (POLICY_SERVICE, "Recommend") in names
    assert (POLICY_SERVICE, "PutArm") not in names
    assert method_config["retryPolicy"]["retryableStatusCodes"] == ["UNAVAILABLE"]
    assert method_config["retryPolicy"]["maxAttempts"] == 4


class StandInRpcError(grpc.RpcError):
    """A stand-in for the error a stub raises, for testing the retry predicate."""

    def __init__(self, code: grpc.StatusCode) -> None:
        self._code = code

    def code(self) -> grpc.StatusCode:
        return self._code


def test_retry_unavailable_retries_then_succeeds() -> None:
    calls = []

    @retry_unavailable(attempts=4, max_wait_seconds=0.01)
    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise StandInRpcError(grpc.StatusCode.UNAVAILABLE)
        return "ok"

    assert flaky() == "ok"
    assert len(calls) == 3


def test_retry_unavailable_does_not_retry_other_codes() -> None:
    calls = []

    @retry_unavailable(attempts=4, max_wait_seconds=0.01)
    def invalid() -> None:
        calls.append(1)
        raise StandInRpcError(grpc.StatusCode.INVALID_ARGUMENT)

    with pytest.raises(StandInRpcError):
        invalid()
    assert len(calls) == 1
