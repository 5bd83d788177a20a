"""Server interceptors: the one place where domain errors become gRPC statuses, and auth.

Servicers and domain code raise ``RectuneError`` subclasses; ``ErrorInterceptor`` turns
them into ``context.abort(code, message)``. Anything unexpected is logged with its
traceback under an error id and answered INTERNAL with only that id: never a stack
trace to the client.
"""

from __future__ import annotations

import hmac
import time
import typing
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NoReturn

import grpc
import structlog

from rectune.domain.errors import InvalidArgument, PermissionDenied, RectuneError, Unauthenticated
from services.common.observability import RpcObserver

log = structlog.get_logger(__name__)

Behavior = Callable[..., Any]
HandlerContinuation = Callable[[grpc.HandlerCallDetails], "grpc.RpcMethodHandler[Any, Any] | None"]

# Clients may tag a call with this metadata key; its value is bound into every log line.
REQUEST_ID_KEY = "x-request-id"

# Health checks must work without credentials: Kubernetes probes carry none.
AUTH_EXEMPT_PREFIXES = ("/grpc.health.v1.Health/",)


def _rebuild_handler(
    handler: grpc.RpcMethodHandler[Any, Any],
    wrap_unary: Callable[[Behavior], Behavior],
    wrap_streaming: Callable[[Behavior], Behavior],
    request_deserializer: Callable[[bytes], Any] | None = None,
) -> grpc.RpcMethodHandler[Any, Any]:
    """The same handler with its behaviour wrapped (and its request deserializer replaced,
    when one is given); unary and streaming responses differ."""
    serializers = {
        "request_deserializer": request_deserializer or handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(wrap_unary(handler.unary_unary), **serializers)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(wrap_streaming(handler.unary_stream), **serializers)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(wrap_unary(handler.stream_unary), **serializers)
    stream_stream = typing.cast(Behavior, handler.stream_stream)
    return grpc.stream_stream_rpc_method_handler(wrap_streaming(stream_stream), **serializers)


class _Unparsable:
    """What a request that does not parse becomes: grpcio would answer it INTERNAL
    ("Exception deserializing request!"); the handler answers INVALID_ARGUMENT instead."""


UNPARSABLE = _Unparsable()


def _tolerant(deserialize: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserialize is None:
        return None

    def parse(data: bytes) -> Any:
        try:
            return deserialize(data)
        except Exception:  # protobuf's DecodeError, or a string field that is not UTF-8
            return UNPARSABLE

    return parse


def _parsed(request: Any, method: str) -> Any:
    """The request, or (for a client stream) an iterator that checks each message."""
    if request is UNPARSABLE:
        raise InvalidArgument(
            "request", f"does not parse as the request of {method} (bad protobuf bytes or a string that is not UTF-8)"
        )
    if isinstance(request, Iterator):
        return (_parsed(message, method) for message in request)
    return request


def grpc_code(exc: RectuneError) -> grpc.StatusCode:
    """The gRPC status a domain error names (INTERNAL for a name gRPC does not know)."""
    return getattr(grpc.StatusCode, exc.code, grpc.StatusCode.INTERNAL)


def _status_of(exc: Exception, context: grpc.ServicerContext) -> grpc.StatusCode:
    """The status an exception ends the RPC with (see _abort_for_exception)."""
    if isinstance(exc, RectuneError):
        return grpc_code(exc)
    if isinstance(exc, NotImplementedError):
        return grpc.StatusCode.UNIMPLEMENTED
    chosen = context.code()  # type: ignore[attr-defined]
    return grpc.StatusCode.INTERNAL if chosen in (None, grpc.StatusCode.OK) else chosen


def _abort_for_exception(exc: Exception, context: grpc.ServicerContext, method: str) -> NoReturn:
    if isinstance(exc, RectuneError):
        log.info("rpc_error", code=exc.code, message=exc.message)
        context.abort(grpc_code(exc), exc.message)
    if isinstance(exc, NotImplementedError):
        context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{method} is not implemented yet")
    if context.code() not in (None, grpc.StatusCode.OK):  # type: ignore[attr-defined]
        # The handler already chose a status (context.abort raises a bare Exception).
        raise exc
    error_id = uuid.uuid4().hex[:12]
    log.error("unexpected_error", error_id=error_id, exc_info=exc)
    context.abort(grpc.StatusCode.INTERNAL, f"internal error (reference {error_id}); see the server log")


class ErrorInterceptor(grpc.ServerInterceptor):  # type: ignore[type-arg]
    """Maps exceptions raised by handlers to statuses, binds the method into the log context,
    and reports each finished RPC's status and duration to the observer (Prometheus)."""

    def __init__(self, observe: RpcObserver | None = None) -> None:
        self._observe: RpcObserver = observe or (lambda _method, _code, _seconds: None)

    def intercept_service(
        self, continuation: HandlerContinuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        log_context = {"rpc": method}
        request_id = _metadata_value(handler_call_details.invocation_metadata, REQUEST_ID_KEY)
        if request_id:
            log_context["request_id"] = request_id

        observe = self._observe

        def wrap_unary(behavior: Behavior) -> Behavior:
            def guarded(request: Any, context: grpc.ServicerContext) -> Any:
                started, code = time.perf_counter(), grpc.StatusCode.OK
                with structlog.contextvars.bound_contextvars(**log_context):
                    try:
                        return behavior(_parsed(request, method), context)
                    except Exception as exc:
                        code = _status_of(exc, context)
                        _abort_for_exception(exc, context, method)
                    finally:
                        observe(method, code.name, time.perf_counter() - started)

            return guarded

        def wrap_streaming(behavior: Behavior) -> Behavior:
            def guarded(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                started, code = time.perf_counter(), grpc.StatusCode.OK
                with structlog.contextvars.bound_contextvars(**log_context):
                    try:
                        yield from behavior(_parsed(request, method), context)
                    except Exception as exc:
                        code = _status_of(exc, context)
                        _abort_for_exception(exc, context, method)
                    finally:
                        observe(method, code.name, time.perf_counter() - started)

            return guarded

        return _rebuild_handler(handler, wrap_unary, wrap_streaming, _tolerant(handler.request_deserializer))


def _metadata_value(metadata: Iterable[tuple[str, str | bytes]] | None, wanted: str) -> str | None:
    for key, value in metadata or ():
        if key == wanted and isinstance(value, str):
            return value
    return None


def _bearer_token(metadata: Iterable[tuple[str, str | bytes]] | None) -> str | None:
    value = _metadata_value(metadata, "authorization")
    if value is None or not value.startswith("Bearer "):
        return None
    return value.removeprefix("Bearer ").strip()


class BearerTokenInterceptor(grpc.ServerInterceptor):  # type: ignore[type-arg]
    """Requires ``authorization: Bearer <token>`` on every RPC but health checks.

    With an admin token configured, the methods in ``admin_methods`` (those that change
    arms and settings) accept only the admin token; every other method accepts either.
    """

    def __init__(self, token: str, admin_token: str = "", admin_methods: Iterable[str] = ()) -> None:
        if not token:
            raise ValueError("token: must not be empty when auth is on")
        self._token = token.encode()
        self._admin_token = admin_token.encode()
        self._admin_methods = frozenset(admin_methods)

    def _rejection(self, method: str, presented: str | None) -> RectuneError | None:
        if presented is None:
            return Unauthenticated("authorization: missing bearer token (metadata 'authorization: Bearer <token>')")
        token = presented.encode()
        is_admin = bool(self._admin_token) and hmac.compare_digest(token, self._admin_token)
        if method in self._admin_methods and self._admin_token:
            return None if is_admin else PermissionDenied(f"{method} requires the admin token")
        if is_admin or hmac.compare_digest(token, self._token):
            return None
        return Unauthenticated("authorization: bearer token is not valid")

    def intercept_service(
        self, continuation: HandlerContinuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        method = handler_call_details.method
        handler = continuation(handler_call_details)
        if handler is None or method.startswith(AUTH_EXEMPT_PREFIXES):
            return handler
        rejection = self._rejection(method, _bearer_token(handler_call_details.invocation_metadata))
        if rejection is None:
            return handler

        def refuse_unary(_behavior: Behavior) -> Behavior:
            def refuse(_request: Any, context: grpc.ServicerContext) -> Any:
                context.abort(grpc_code(rejection), rejection.message)

            return refuse

        def refuse_streaming(_behavior: Behavior) -> Behavior:
            def refuse(_request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                context.abort(grpc_code(rejection), rejection.message)
                yield  # pragma: no cover - abort raises; this makes the function a generator

            return refuse

        return _rebuild_handler(handler, refuse_unary, refuse_streaming)
