"""PolicyService's Prometheus gauges, read from the store at scrape time: the outbox backlog
(what MetricsService and ScoringService have not got yet) and the dead letters (rows they
refused as invalid; see ``python -m services.policy.dead_letters``)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from services.policy.core.store import PolicyStore


class OutboxGauges(Collector):
    def __init__(self, store: PolicyStore) -> None:
        self.store = store

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(
            "rectune_policy_outbox_backlog",
            "Decisions, events and interactions not yet forwarded by the outbox",
            value=self.store.backlog(),
        )
        yield GaugeMetricFamily(
            "rectune_policy_outbox_dead_letters",
            "Outbox rows a receiver refused as invalid, kept in policy_dead_letters",
            value=self.store.dead_letter_count(),
        )
