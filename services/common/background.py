"""Periodic background work that stops cleanly with the service."""

from __future__ import annotations

import threading
from collections.abc import Callable

import structlog

log = structlog.get_logger(__name__)


def run_periodically(name: str, interval_seconds: float, work: Callable[[], object]) -> Callable[[], None]:
    """Call ``work`` every interval in a thread until the returned function is called.

    A failure is logged and the next round runs as usual: background upkeep must not
    take the service down.
    """
    stopped = threading.Event()

    def loop() -> None:
        while not stopped.wait(interval_seconds):
            try:
                work()
            except Exception:
                log.exception("background_task_failed", task=name)

    thread = threading.Thread(target=loop, name=name, daemon=True)
    thread.start()

    def stop() -> None:
        stopped.set()
        thread.join(timeout=interval_seconds + 5)

    return stop
