"""Domain exceptions. Each carries the gRPC status it maps to.

Domain code raises these; the one error interceptor (services.common.interceptors)
turns them into ``context.abort(code, message)``. Messages name the field and the
rule that failed, for example ``k: must be between 1 and 1682, got 0``.
"""

from __future__ import annotations

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


class Relayed(RectuneError):
    """A peer service's error passed on to our caller with its status and message
    (for example ScoringService's verdict on a configuration)."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
