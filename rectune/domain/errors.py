"""Domain exceptions. Each names the gRPC status it maps to, by name, so that this module
needs no gRPC: the one error interceptor (services.common.interceptors) turns the name into
``context.abort(code, message)``. Messages name the field and the rule that failed, for
example ``k: must be between 1 and 1682, got 0``.
"""

from __future__ import annotations


class RectuneError(Exception):
    """Base of every error a client may see. ``code`` is the name of its gRPC status."""

    code: str = "INTERNAL"

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
    code = "INVALID_ARGUMENT"


class NotFound(FieldError):
    code = "NOT_FOUND"


class AlreadyExists(FieldError):
    code = "ALREADY_EXISTS"


class FailedPrecondition(RectuneError):
    code = "FAILED_PRECONDITION"


class ResourceExhausted(RectuneError):
    code = "RESOURCE_EXHAUSTED"


class Unavailable(RectuneError):
    code = "UNAVAILABLE"


class Unauthenticated(RectuneError):
    code = "UNAUTHENTICATED"


class PermissionDenied(RectuneError):
    code = "PERMISSION_DENIED"


class Relayed(RectuneError):
    """A peer service's error passed on to our caller with its status and message
    (for example ScoringService's verdict on a configuration)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class Duplicate(Exception):
    """A store found an id (or another unique value) taken. Not an answer by itself: the
    caller decides what a duplicate means (a retry to answer alike, or ALREADY_EXISTS)."""


def quoted(value: str, limit: int = 32) -> str:
    """A value as an error message may quote it: the repr of at most ``limit`` characters (a
    message that echoes a large value could overflow the caller's metadata limit)."""
    return repr(value if len(value) <= limit else value[:limit] + "...")
