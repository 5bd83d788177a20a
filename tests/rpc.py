"""What integration tests need to look at a failed RPC."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import pytest


def rpc_error(call: Callable[[], Any]) -> grpc.RpcError:
    """The error the call fails with (the test fails if it succeeds)."""
    with pytest.raises(grpc.RpcError) as error:
        call()
    return error.value


def error_of(call: Callable[[], Any]) -> tuple[grpc.StatusCode, str]:
    """The status code and details of the error the call fails with."""
    error = rpc_error(call)
    return error.code(), error.details() or ""
