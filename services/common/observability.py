"""Prometheus metrics of every service: RPC counts by status code and latency histograms.

Each running service has its own registry (several servers can live in one process, as
in the tests) and serves it over HTTP at ``/metrics`` when ``--prometheus-port`` is set.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

# Observer called once per finished RPC: (full method name, status code name, seconds).
RpcObserver = Callable[[str, str, float], None]

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass
class RpcMetrics:
    registry: CollectorRegistry
    requests: Counter
    latency: Histogram

    @staticmethod
    def discard(_method: str, _code: str, _seconds: float) -> None:
        """An observer that records nothing."""

    def observe(self, method: str, code: str, seconds: float) -> None:
        self.requests.labels(method=method, code=code).inc()
        self.latency.labels(method=method).observe(seconds)


def rpc_metrics() -> RpcMetrics:
    """Fresh metrics in a registry of their own."""
    registry = CollectorRegistry()
    requests = Counter(
        "rectune_rpc_requests", "RPCs handled, by method and status code", ["method", "code"], registry=registry
    )
    latency = Histogram(
        "rectune_rpc_duration_seconds",
        "Time to handle an RPC, by method",
        ["method"],
        registry=registry,
        buckets=LATENCY_BUCKETS,
    )
    return RpcMetrics(registry, requests, latency)


def serve_metrics(metrics: RpcMetrics, host: str, port: int) -> Callable[[], None]:
    """Serve ``/metrics`` on host:port; returns the function that stops it."""
    return serve_registry(metrics.registry, host, port)


def serve_registry(registry: CollectorRegistry, host: str, port: int) -> Callable[[], None]:
    """Serve a registry at ``/metrics`` on host:port; returns the function that stops it."""
    server, thread = start_http_server(port, addr=host, registry=registry)

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    return stop
