"""PolicyService's Prometheus metrics, read at scrape time: the outbox backlog (what
MetricsService and ScoringService have not got yet, and how long the oldest has waited), the
dead letters (rows they refused as invalid; see ``python -m services.policy.dead_letters``),
the arms by state, the arms a guardrail paused, and the degraded answers served."""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from rectune.domain.arms import ArmState
from services.policy.core.guardrail import GUARDRAIL_REASON_PREFIX
from services.policy.core.service import PolicyCore
from services.policy.core.store import PolicyStore


class OutboxGauges(Collector):
    def __init__(self, store: PolicyStore) -> None:
        self.store = store

    def collect(self) -> Iterator[GaugeMetricFamily]:
        store = self.store
        yield GaugeMetricFamily(
            "rectune_policy_outbox_backlog",
            "Decisions, events and interactions not yet forwarded by the outbox",
            value=store.backlog(),
        )
        oldest = store.oldest_waiting_since()
        yield GaugeMetricFamily(
            "rectune_policy_outbox_oldest_age_seconds",
            "Seconds the oldest row not yet forwarded has waited (0 when none waits)",
            value=0.0 if oldest is None else max(time.time() - oldest, 0.0),
        )
        yield GaugeMetricFamily(
            "rectune_policy_outbox_dead_letters",
            "Outbox rows a receiver refused as invalid, kept in policy_dead_letters",
            value=store.dead_letter_count(),
        )


class ArmStateGauges(Collector):
    def __init__(self, core: PolicyCore) -> None:
        self.core = core

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        yield from self._arms()
        degraded = CounterMetricFamily(
            "rectune_policy_degraded_decisions",
            "Answers served from a fallback list because scoring failed or was too slow, by arm",
            labels=["arm_id"],
        )
        for arm_id, count in sorted(self.core.chooser.degraded_by_arm.items()):
            degraded.add_metric([arm_id], count)
        yield degraded

    def _arms(self) -> Iterator[GaugeMetricFamily]:
        arms = self.core.list_arms()
        by_state = GaugeMetricFamily("rectune_policy_arms", "Arms by state", labels=["state"])
        for state in ArmState:
            by_state.add_metric([state.value], sum(1 for arm in arms if arm.state is state))
        yield by_state
        # Joins the per-arm series with ScoringService's per-configuration ones (model age).
        info = GaugeMetricFamily(
            "rectune_policy_arm_info",
            "1 per arm, labelled with its configuration hash, strategy, state and origin",
            labels=["arm_id", "configuration_hash", "strategy", "state", "origin"],
        )
        for arm in arms:
            labels = [arm.arm_id, arm.configuration_hash, arm.configuration.strategy, arm.state.value, arm.origin.value]
            info.add_metric(labels, 1)
        yield info
        paused = GaugeMetricFamily(
            "rectune_policy_arm_paused_by_guardrail",
            "1 for each arm that a guardrail paused (and nobody resumed or retired since)",
            labels=["arm_id"],
        )
        for arm in arms:
            if arm.state is ArmState.PAUSED and arm.state_reason.startswith(GUARDRAIL_REASON_PREFIX):
                paused.add_metric([arm.arm_id], 1)
        yield paused
