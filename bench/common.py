"""Helpers shared by the benchmark scripts (data loading, percentiles, child services)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Collection
from pathlib import Path

import grpc
import numpy as np
import structlog

from rectune.datasets import MOVIELENS_100K
from services.common import child

ROOT = Path(__file__).resolve().parent.parent
DATA = MOVIELENS_100K


def percentiles_ms(seconds: list[float]) -> dict[str, float]:
    values = np.asarray(seconds) * 1000.0
    return {"p50_ms": round(float(np.percentile(values, 50)), 3), "p99_ms": round(float(np.percentile(values, 99)), 3)}


def start_child_service(
    name: str, *flags: str, module: str = "", cpus: Collection[int] = ()
) -> tuple[subprocess.Popen[str], str]:
    """``python -m services.<name> --port 0`` (or ``-m module``) in its own process, on ``cpus``
    alone when given; returns it and its address."""
    return child.start_child_service(module or f"services.{name}", *flags, cpus=cpus)


def memory_of(pid: int, field: str = "VmRSS") -> int:
    """A process's VmRSS (or VmHWM, its peak) in bytes, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def logs_to_stderr() -> None:
    """Keep stdout for the JSON result: services run in-process by a bench log to stderr."""
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))


def print_json(result: dict[str, object]) -> None:
    print(json.dumps(result, indent=2))


def run_clients(clients: int, count: int, call: Callable[[int], object]) -> tuple[float, list[float]]:
    """``count`` calls (numbered) spread over ``clients`` threads: calls per second and each call's latency."""
    lock, cursor, latencies, errors = threading.Lock(), iter(range(count)), [], []

    def client() -> None:
        while True:
            with lock:
                n = next(cursor, None)
            if n is None:
                return
            started = time.perf_counter()
            try:
                call(n)
            except grpc.RpcError as exc:
                errors.append(f"call {n}: {exc.code().name} {exc.details()}")
                return
            elapsed = time.perf_counter() - started
            with lock:
                latencies.append(elapsed)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise RuntimeError(f"{len(errors)} calls failed, first: {errors[0]}")
    return count / (time.perf_counter() - started), latencies
