"""Server bootstrap shared by every service.

``build_server`` returns a started-but-not-ready server: the standard
``grpc.health.v1`` service answers NOT_SERVING until the service calls
``health.set_serving()`` (for example once its model is loaded). Reflection is on.
``serve_until_signalled`` drains in-flight RPCs on SIGTERM within the grace period.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from services.common.interceptors import BearerTokenInterceptor, ErrorInterceptor
from services.common.observability import RpcMetrics, RpcObserver, rpc_metrics, serve_metrics
from services.common.settings import ServerSettings

log = structlog.get_logger(__name__)

OVERALL = ""  # the health service name that stands for the whole server


@dataclass(frozen=True)
class ServiceRegistration:
    """One gRPC service to serve: its full name and the generated ``add_*_to_server``."""

    name: str
    add_to_server: Callable[[Any, grpc.Server], None]
    servicer: Any


class HealthState:
    """The standard health servicer, with every served name moved together."""

    def __init__(self, service_names: Sequence[str]) -> None:
        self.servicer = health.HealthServicer()
        self._names = [OVERALL, *service_names]
        self.set_not_serving()

    def _set(self, status: int) -> None:
        for name in self._names:
            self.servicer.set(name, status)

    def set_serving(self) -> None:
        self._set(health_pb2.HealthCheckResponse.SERVING)

    def set_not_serving(self) -> None:
        self._set(health_pb2.HealthCheckResponse.NOT_SERVING)

    def shutdown(self) -> None:
        """NOT_SERVING for good: watchers are told, and later sets are ignored."""
        self.servicer.enter_graceful_shutdown()


def _server_credentials(settings: ServerSettings) -> grpc.ServerCredentials:
    key, cert = Path(settings.tls_key).read_bytes(), Path(settings.tls_cert).read_bytes()
    client_ca = Path(settings.tls_client_ca).read_bytes() if settings.tls_client_ca else None
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


def _interceptors(
    settings: ServerSettings, admin_methods: Sequence[str], observe: RpcObserver
) -> list[grpc.ServerInterceptor[Any, Any]]:
    chain: list[grpc.ServerInterceptor[Any, Any]] = []
    if settings.auth_token:
        chain.append(BearerTokenInterceptor(settings.auth_token, settings.admin_token, admin_methods))
    chain.append(ErrorInterceptor(observe))
    return chain


def server_options(settings: ServerSettings) -> list[tuple[str, int]]:
    """A port of its own, and connections closed at a maximum age: a client keeps one
    HTTP/2 connection per replica for as long as it can, so without an age it would never
    re-resolve a headless Service's name and never send to replicas added since. Calls in
    flight finish on the old connection (without a grace limit, gRPC's default): a fit or a
    screen waited on for minutes is not cut when its connection ages."""
    options = [("grpc.so_reuseport", 0)]
    if settings.max_connection_age_seconds > 0:
        options.append(("grpc.max_connection_age_ms", round(settings.max_connection_age_seconds * 1000)))
        if settings.max_connection_age_grace_seconds > 0:
            grace_ms = round(settings.max_connection_age_grace_seconds * 1000)
            options.append(("grpc.max_connection_age_grace_ms", grace_ms))
    return options


def build_server(
    registrations: Sequence[ServiceRegistration],
    settings: ServerSettings,
    health_state: HealthState,
    admin_methods: Sequence[str] = (),
    observe: RpcObserver | None = None,
) -> tuple[grpc.Server, int]:
    """Create, bind and start a server. Returns it with the port actually bound."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=settings.max_workers, thread_name_prefix="rpc"),
        interceptors=_interceptors(settings, admin_methods, observe or RpcMetrics.discard),
        options=server_options(settings),
    )
    for registration in registrations:
        registration.add_to_server(registration.servicer, server)
    health_pb2_grpc.add_HealthServicer_to_server(health_state.servicer, server)
    reflection.enable_server_reflection(
        [r.name for r in registrations] + [health.SERVICE_NAME, reflection.SERVICE_NAME], server
    )
    address = f"{settings.host}:{settings.port}"
    try:
        if settings.tls_cert:
            port = server.add_secure_port(address, _server_credentials(settings))
        else:
            port = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise OSError(f"cannot listen on {address}: {exc}") from None
    if port == 0:
        raise OSError(f"cannot listen on {address}: the port is taken or the host is not local")
    server.start()
    return server, port


def serve_health_only(health_state: HealthState, host: str, port: int) -> Callable[[], None]:
    """The health service alone on a plaintext port, for probes that cannot do TLS or tokens
    (the kubelet's gRPC probe can do neither). Returns the function that stops it."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="health"))
    health_pb2_grpc.add_HealthServicer_to_server(health_state.servicer, server)
    if server.add_insecure_port(f"{host}:{port}") == 0:
        raise OSError(f"cannot listen on {host}:{port} for health checks")
    server.start()

    def stop() -> None:
        server.stop(0).wait()

    return stop


@dataclass
class RunningService:
    """A started server and what must be closed after it stops."""

    name: str
    server: grpc.Server
    port: int
    health: HealthState
    grace_seconds: float
    metrics: RpcMetrics
    closers: list[Callable[[], None]] = field(default_factory=list)
    # Run when stopping starts, before the grace period: for example ending open streams.
    on_stopping: list[Callable[[], None]] = field(default_factory=list)
    # Why the service gave up (for example its model failed to load); None while healthy.
    failure: str | None = None
    _stopping: threading.Event = field(default_factory=threading.Event)
    _stopped: threading.Event = field(default_factory=threading.Event)

    def stop(self, grace_seconds: float | None = None) -> None:
        """Refuse new RPCs, let in-flight ones finish within the grace period, then close."""
        if self._stopping.is_set():
            self._stopped.wait()
            return
        self._stopping.set()
        self.health.shutdown()
        for begin in self.on_stopping:
            begin()
        grace = self.grace_seconds if grace_seconds is None else grace_seconds
        self.server.stop(grace).wait()
        for close in reversed(self.closers):
            close()
        self._stopped.set()
        log.info("stopped", service=self.name)

    def fail(self, reason: str) -> None:
        """Give up: log why, stay NOT_SERVING, and stop (the entrypoint then exits non-zero)."""
        self.failure = reason
        log.error("failed", service=self.name, reason=reason)
        threading.Thread(target=self.stop, name="fail-stop").start()

    def serve_until_signalled(self) -> None:
        """Block until SIGTERM or SIGINT, then drain and stop."""

        def on_signal(signum: int, _frame: FrameType | None) -> None:
            log.info("draining", service=self.name, signal=signal.Signals(signum).name, grace=self.grace_seconds)
            threading.Thread(target=self.stop, name="drain").start()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        self.server.wait_for_termination()
        self._stopped.wait()


def start_service(
    name: str,
    registrations: Sequence[ServiceRegistration],
    settings: ServerSettings,
    admin_methods: Sequence[str] = (),
) -> RunningService:
    """Build and start the server; health stays NOT_SERVING until the caller is ready."""
    health_state = HealthState([r.name for r in registrations])
    metrics = rpc_metrics()
    server, port = build_server(registrations, settings, health_state, admin_methods, metrics.observe)
    service = RunningService(name, server, port, health_state, settings.grace_seconds, metrics)
    try:
        if settings.prometheus_port:
            service.closers.append(serve_metrics(metrics, settings.host, settings.prometheus_port))
        if settings.health_port:
            service.closers.append(serve_health_only(health_state, settings.host, settings.health_port))
    except OSError:
        service.stop(0)
        raise
    log.info(
        "listening",
        service=name,
        host=settings.host,
        port=port,
        health_port=settings.health_port or None,
        prometheus_port=settings.prometheus_port or None,
        tls=bool(settings.tls_cert),
        auth=bool(settings.auth_token),
    )
    return service
