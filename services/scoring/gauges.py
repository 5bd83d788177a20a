"""ScoringService's Prometheus gauges, read at scrape time: each fitted model's freshness
(its age and the interactions added since its fit) and its refits, by configuration."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from services.scoring.core.service import ScoringCore

LABELS = ["configuration_hash", "strategy"]


class FreshnessGauges(Collector):
    def __init__(self, core: ScoringCore) -> None:
        self.core = core

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        age = GaugeMetricFamily(
            "rectune_scoring_model_age_seconds", "Seconds since the model was fitted", labels=LABELS
        )
        behind = GaugeMetricFamily(
            "rectune_scoring_model_interactions_since_fit",
            "Interactions added to the store since the model's fit (what it has not learned from)",
            labels=LABELS,
        )
        refits = CounterMetricFamily("rectune_scoring_refits", "Background refits done", labels=LABELS)
        failures = CounterMetricFamily(
            "rectune_scoring_refit_failures",
            "Background refits that failed (the old model kept serving)",
            labels=LABELS,
        )
        for freshness in self.core.freshness_of_all():
            labels = [freshness.configuration_hash, freshness.strategy]
            age.add_metric(labels, freshness.age_seconds)
            behind.add_metric(labels, freshness.interactions_since_fit)
            refits.add_metric(labels, freshness.refits)
            failures.add_metric(labels, freshness.refit_failures)
        yield from (age, behind, refits, failures)
