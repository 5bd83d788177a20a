"""Per-arm Prometheus gauges, computed from the store at scrape time (all retained history)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from services.metrics.core.records import Window
from services.metrics.core.service import MetricsCore


class ArmGauges(Collector):
    def __init__(self, core: MetricsCore) -> None:
        self.core = core

    def collect(self) -> Iterator[GaugeMetricFamily]:
        stats, _ = self.core.arm_stats(Window(), [])
        families = {
            "impressions": GaugeMetricFamily("rectune_arm_impressions", "Impressions per arm", labels=["arm_id"]),
            "ctr": GaugeMetricFamily("rectune_arm_ctr", "Click-through rate per arm", labels=["arm_id"]),
            "probability_best": GaugeMetricFamily(
                "rectune_arm_probability_best", "Posterior probability that the arm has the best CTR", labels=["arm_id"]
            ),
        }
        for arm in stats:
            families["impressions"].add_metric([arm.counts.arm_id], arm.counts.impressions)
            families["ctr"].add_metric([arm.counts.arm_id], arm.ctr)
            families["probability_best"].add_metric([arm.counts.arm_id], arm.probability_best)
        yield from families.values()
