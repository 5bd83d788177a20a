"""Domain exceptions. Each carries the gRPC status it maps to.

Domain code raises these; the one error interceptor (services.common.interceptors)
turns them into ``context.abort(code, message)``. Messages name the field and the
rule that failed, for example ``k: must be between 1 and 1682, got 0``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NoReturn

import grpc


class RectuneError(Exception):
    """Base of every error a client may see. ``code`` is the gRPC status it maps to."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class FieldError(RectuneError):
    """An error about one field of a request: ``<field>: <rule>``."""

    def __init__(self, field: str, rule: str) -> None:
        super().__init__(f"{field}: {rule}")
        self.field = field
        self.rule = rule


class InvalidArgument(FieldError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(FieldError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(FieldError):
    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(RectuneError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class ResourceExhausted(RectuneError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(RectuneError):
    code = grpc.StatusCode.UNAVAILABLE


class Unauthenticated(RectuneError):
    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(RectuneError):
    code = grpc.StatusCode.PERMISSION_DENIED


class Unimplemented(RectuneError):
    """An RPC of the contract whose implementation has not landed yet."""

    code = grpc.StatusCode.UNIMPLEMENTED

    def __init__(self, rpc: str, issue: str) -> None:
        super().__init__(f"{rpc} is not implemented yet (tracked in {issue})")


def pending_rpc(rpc: str, issue: str) -> Callable[..., NoReturn]:
    """A servicer method for an RPC of the contract that is not built yet: UNIMPLEMENTED."""

    def not_yet(*_args: Any) -> NoReturn:
        raise Unimplemented(rpc, issue)

    return not_yet
