"""Outgoing calls: channels with a deadline on every call, retries for idempotent RPCs.

Two layers of retry, for two kinds of failure:
- the channel's retry policy (gRPC service config) retries idempotent RPCs on
  UNAVAILABLE transparently, a few times within the call's deadline;
- ``retry_unavailable`` (tenacity) retries a whole application-level operation over a
  longer horizon, for example a start-up that waits for a dependency.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
import tenacity

from rectune.domain.errors import RectuneError, Relayed, Unavailable
from services.common.contracts import IDEMPOTENT_METHODS
from services.common.targets import grpc_target

T = TypeVar("T")

# The deadline of a call that may fit a model before it answers: FitConfiguration with wait,
# PutArm (the policy has ScoringService fit the arm's configuration), EvaluateConfiguration.
FIT_DEADLINE_SECONDS = 600.0


@dataclass(frozen=True)
class ClientOptions:
    """How to reach another rectune service."""

    deadline_seconds: float = 5.0
    token: str = ""
    ca_cert: str = ""
    client_cert: str = ""
    client_key: str = ""
    max_attempts: int = 4
    dns_interval_seconds: float = 30.0  # gRPC's own default


# A replica that was down (restarting, or listed before it started) is dialled again at
# least this often, so that it takes traffic within seconds of coming up.
MAX_RECONNECT_BACKOFF_MS = 2000


def retry_service_config(methods: Mapping[str, Sequence[str]], max_attempts: int) -> str:
    """gRPC service config: calls balanced over every endpoint the target resolves to
    (``round_robin``; gRPC's default, ``pick_first``, sends everything to one replica), and the
    given methods retried on UNAVAILABLE with backoff (a retry may go to another replica)."""
    names = [{"service": service, "method": method} for service, names in methods.items() for method in names]
    config = {
        "loadBalancingConfig": [{"round_robin": {}}],
        "methodConfig": [
            {
                "name": names,
                "retryPolicy": {
                    "maxAttempts": max_attempts,
                    "initialBackoff": "0.05s",
                    "maxBackoff": "1s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ],
    }
    return json.dumps(config)


class _CallDetails(grpc.ClientCallDetails):
    def __init__(self, base: grpc.ClientCallDetails, timeout: float | None, metadata: Any) -> None:
        self.method = base.method
        self.timeout = timeout
        self.metadata = metadata
        self.credentials = base.credentials
        self.wait_for_ready = base.wait_for_ready
        self.compression = base.compression


class DefaultsInterceptor(
    grpc.UnaryUnaryClientInterceptor,  # type: ignore[type-arg]
    grpc.UnaryStreamClientInterceptor,  # type: ignore[type-arg]
    grpc.StreamUnaryClientInterceptor,  # type: ignore[type-arg]
    grpc.StreamStreamClientInterceptor,  # type: ignore[type-arg]
):
    """Gives every call a deadline if it has none, and the bearer token if configured."""

    def __init__(self, deadline_seconds: float, token: str) -> None:
        self._deadline = deadline_seconds
        self._auth = ("authorization", f"Bearer {token}") if token else None

    def _details(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        timeout = details.timeout if details.timeout is not None else self._deadline
        metadata = list(details.metadata or [])
        if self._auth is not None:
            metadata.append(self._auth)
        return _CallDetails(details, timeout, metadata)

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation: Any, details: Any, request_iterator: Any) -> Any:
        return continuation(self._details(details), request_iterator)

    def intercept_stream_stream(self, continuation: Any, details: Any, request_iterator: Any) -> Any:
        return continuation(self._details(details), request_iterator)


def _channel_credentials(options: ClientOptions) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=Path(options.ca_cert).read_bytes(),
        private_key=Path(options.client_key).read_bytes() if options.client_key else None,
        certificate_chain=Path(options.client_cert).read_bytes() if options.client_cert else None,
    )


def make_channel(address: str, options: ClientOptions | None = None) -> grpc.Channel:
    """A channel to a service's replicas (any address form of services.common.targets),
    balanced over them, with deadlines, retries and optional TLS and token."""
    options = options or ClientOptions()
    target = grpc_target(address)
    channel_options = [
        ("grpc.enable_retries", 1),
        ("grpc.service_config", retry_service_config(IDEMPOTENT_METHODS, options.max_attempts)),
        ("grpc.max_receive_message_length", 64 * 1024 * 1024),
        ("grpc.max_reconnect_backoff_ms", MAX_RECONNECT_BACKOFF_MS),
        ("grpc.dns_min_time_between_resolutions_ms", round(options.dns_interval_seconds * 1000)),
    ]
    if options.ca_cert:
        channel = grpc.secure_channel(target, _channel_credentials(options), options=channel_options)
    else:
        channel = grpc.insecure_channel(target, options=channel_options)
    return grpc.intercept_channel(channel, DefaultsInterceptor(options.deadline_seconds, options.token))


def is_unavailable(exc: BaseException) -> bool:
    return isinstance(exc, grpc.RpcError) and exc.code() == grpc.StatusCode.UNAVAILABLE


def retry_unavailable(
    attempts: int = 5, max_wait_seconds: float = 2.0
) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Decorator: retry an idempotent operation while its peer answers UNAVAILABLE."""
    return tenacity.retry(
        retry=tenacity.retry_if_exception(is_unavailable),
        stop=tenacity.stop_after_attempt(attempts),
        wait=tenacity.wait_exponential_jitter(multiplier=0.1, max=max_wait_seconds),
        reraise=True,
    )


def client_options_from(settings: Any) -> ClientOptions:
    """Outgoing-call options from a service's ServerSettings (client_* fields)."""
    return ClientOptions(
        deadline_seconds=settings.client_deadline_seconds,
        token=settings.client_token,
        ca_cert=settings.client_ca,
        client_cert=settings.client_cert,
        client_key=settings.client_key,
        dns_interval_seconds=settings.client_dns_interval_seconds,
    )


# A peer's verdict on the request itself, passed on to our caller as it is.
CLIENT_ERROR_CODES = (
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
)


ErrorOf = Callable[[str, grpc.RpcError], Exception]  # (method, the failure) -> what to raise


def call_peer(method: str, call: Callable[[], T], error: ErrorOf) -> T:
    """One call to another service (``method`` names it, e.g. "PolicyService.ListArms"); a gRPC
    failure is raised as the exception that ``error`` makes of it. Every client goes through
    this: each says what a failure means to its own callers, nothing else differs."""
    try:
        return call()
    except grpc.RpcError as exc:
        raise error(method, exc) from None


def peer_error(peer: str, passed_on: tuple[grpc.StatusCode, ...] = CLIENT_ERROR_CODES) -> ErrorOf:
    """For a service calling a peer: codes in ``passed_on`` keep their status and message
    (Relayed, the peer's verdict on the request); anything else means the peer is unavailable
    for now."""

    def error(method: str, exc: grpc.RpcError) -> RectuneError:
        if exc.code() in passed_on:
            return Relayed(exc.code().name, str(exc.details()))
        return Unavailable(f"{peer} answered {exc.code().name}: {exc.details()}")

    return error


class Channels:
    """Channels to other services, opened by name and closed together."""

    def __init__(self) -> None:
        self._open: dict[str, grpc.Channel] = {}

    def open(self, name: str, address: str, options: ClientOptions | None = None) -> grpc.Channel:
        channel = make_channel(address, options)
        self._open[name] = channel
        return channel

    def close(self) -> None:
        for channel in self._open.values():
            channel.close()
