"""The tuner's Prometheus metrics while ``tuner run`` loops: when its last cycle succeeded,
its cycles by outcome, and its interval (an alert fires when no cycle succeeded for three
intervals)."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge


class TunerSignals:
    def __init__(self, interval_seconds: float) -> None:
        self.registry = CollectorRegistry()
        self.last_success = Gauge(
            "rectune_tuner_last_successful_cycle_timestamp_seconds",
            "Unix time at which the last cycle was planned and applied without error (0: none yet)",
            registry=self.registry,
        )
        self.cycles = Counter(
            "rectune_tuner_cycles", "Cycles run, by outcome (ok or failed)", ["outcome"], registry=self.registry
        )
        self.actions = Counter(
            "rectune_tuner_actions", "Actions carried out, by kind", ["kind"], registry=self.registry
        )
        interval = Gauge(
            "rectune_tuner_interval_seconds", "Seconds between two cycles of `tuner run`", registry=self.registry
        )
        interval.set(interval_seconds)
        self.started = Gauge(
            "rectune_tuner_started_timestamp_seconds", "Unix time at which `tuner run` started", registry=self.registry
        )
        self.started.set(time.time())
        for outcome in ("ok", "failed"):
            self.cycles.labels(outcome=outcome)

    def cycle_succeeded(self, action_kinds: list[str]) -> None:
        self.cycles.labels(outcome="ok").inc()
        self.last_success.set(time.time())
        for kind in action_kinds:
            self.actions.labels(kind=kind).inc()

    def cycle_failed(self) -> None:
        self.cycles.labels(outcome="failed").inc()
