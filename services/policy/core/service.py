"""PolicyService behaviour, free of protobuf: the facade the servicer calls. Each job is a
collaborator of its own: arms and their states (ArmRegistry), choosing an arm and its list
(ArmChooser), the decision and feedback log (DecisionLog), the outbox (OutboxForwarder),
guardrails (guardrail.arms_to_pause). This module holds the settings cache and the
request-level checks."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any

import structlog

from rectune.domain.arms import ArmOrigin, ArmState
from rectune.domain.configuration import Configuration
from rectune.domain.errors import InvalidArgument
from rectune.domain.events import (
    MAX_REQUEST_HISTORY,
    Decision,
    EventKind,
    FeedbackEvent,
    Interaction,
    check_context,
    check_count,
    check_id,
    check_interaction,
    check_time,
    check_value,
    edge_rules,
)
from services.policy.core.arms import ArmRegistry
from services.policy.core.choosing import ArmChooser, Ranker
from services.policy.core.feedback import FeedbackResult
from services.policy.core.guardrail import arms_to_pause
from services.policy.core.log import DecisionLog
from services.policy.core.model import Arm, BanditSettings, algorithm_named
from services.policy.core.outbox import InteractionSink, MetricsSink, OutboxForwarder
from services.policy.core.store import PolicyStore

log = structlog.get_logger(__name__)

MAX_K = 1000


class PolicyCore:
    def __init__(
        self, store: PolicyStore, ranker: Ranker, seed: int | None = None, belief_cache_seconds: float = 1.0
    ) -> None:
        self.store = store
        self.belief_cache_seconds = belief_cache_seconds
        self._settings_cache: tuple[float, BanditSettings] = (float("-inf"), BanditSettings())
        self.arms = ArmRegistry(store, ranker, belief_cache_seconds)
        self.chooser = ArmChooser(ranker, seed)
        self.decision_log = DecisionLog(store, lambda: self.settings(fresh=False))
        self.outbox = OutboxForwarder(store)

    def close(self) -> None:
        """Write the decisions and feedback still queued and stop their writers."""
        self.decision_log.close()

    # -- settings ---------------------------------------------------------------------------

    def settings(self, fresh: bool = True) -> BanditSettings:
        """The stored settings; the request path reuses them for belief_cache_seconds."""
        read_at, cached = self._settings_cache
        if fresh or time.monotonic() - read_at > self.belief_cache_seconds:
            cached = self.store.settings()
            self._settings_cache = (time.monotonic(), cached)
        return cached

    def update_settings(self, changes: dict[str, Any]) -> BanditSettings:
        current = self.store.settings()
        guardrail_changes = changes.pop("guardrail", {})
        if "algorithm" in changes:
            changes["algorithm"] = algorithm_named(changes["algorithm"])
        updated = dataclasses.replace(
            current, **changes, guardrail=dataclasses.replace(current.guardrail, **guardrail_changes)
        )
        updated.check()
        self.store.save_settings(updated)
        self._settings_cache = (time.monotonic(), updated)
        return updated

    # -- arms ---------------------------------------------------------------------------------

    def list_arms(self, states: Sequence[ArmState] = ()) -> list[Arm]:
        return self.arms.list(states)

    def put_arm(
        self,
        arm_id: str,
        configuration: Configuration,
        origin: ArmOrigin,
        exposure_cap: float,
        state: ArmState,
        reason: str,
    ) -> Arm:
        check_id("arm_id", arm_id, required=False)  # empty: the policy names the arm
        cap = exposure_cap or self.store.settings().default_exposure_cap
        return self.arms.put(arm_id, configuration, origin, cap, state, reason)

    def set_arm_state(self, arm_id: str, state: ArmState, reason: str) -> Arm:
        return self.arms.set_state(arm_id, state, reason)

    def rollback_champion(self, reason: str) -> tuple[Arm, str]:
        """The previous champion back in place; it and the arm it replaced."""
        return self.arms.rollback(reason)

    # -- recommend and feedback ------------------------------------------------------------------

    def recommend(
        self, request_id: str, user_id: str, context: dict[str, str], k: int, history: Sequence[Interaction]
    ) -> Decision:
        if not request_id:
            raise InvalidArgument("request_id", "must not be empty (it makes retries return the same decision)")
        # The shared rules, here at the first service that takes these values: what the
        # policy acknowledges, MetricsService and ScoringService never refuse.
        check_id("request_id", request_id)
        check_id("user_id", user_id, required=False)
        check_context(context)
        if not 1 <= k <= MAX_K:
            raise InvalidArgument("k", f"must be between 1 and {MAX_K}, got {k}")
        if not user_id and not history:
            raise InvalidArgument("user_id", "must be set, or history given for a cold user")
        rules = edge_rules()
        check_count("history", len(history), MAX_REQUEST_HISTORY)
        for index, interaction in enumerate(history):
            check_interaction(f"history[{index}]", interaction, rules, user_required=False)
        # A repeated request id is found when its decision is written (the id is unique there),
        # which spares every first request a read.
        decision = self.chooser.decide(
            request_id, user_id, context, k, history, self.settings(fresh=False), self.arms.snapshot()
        )
        return self.decision_log.record_decision(decision)

    def record_feedback(
        self,
        event_id: str,
        decision_id: str,
        kind: EventKind | None,
        custom_name: str,
        item_id: str,
        value: float,
        when: float | None,
    ) -> FeedbackResult:
        if not event_id:
            raise InvalidArgument("event_id", "must not be empty (it makes feedback idempotent)")
        check_id("event_id", event_id)
        check_id("decision_id", decision_id)
        check_id("item_id", item_id, required=False)
        if kind is None:
            raise InvalidArgument("kind", f"must be one of {', '.join(EventKind.names())}")
        check_id("custom_name", custom_name, required=kind is EventKind.CUSTOM)
        check_value("value", value)
        rules = edge_rules()
        check_time("time", when, rules)
        happened = when if when is not None else rules.now
        if kind is EventKind.IMPRESSION:
            # A decision counts its impression when it is made, under this id: an app's own
            # impression of the decision is the same impression, counted once everywhere.
            event_id = f"{decision_id}:impression"
        event = FeedbackEvent(event_id, decision_id, "", "", item_id, kind, custom_name, value, happened)
        return self.decision_log.record_feedback(event)

    # -- background work ---------------------------------------------------------------------------

    def drain_outbox(self, sink: MetricsSink, interactions: InteractionSink | None = None) -> int:
        return self.outbox.drain(sink, interactions)

    def check_guardrails(self) -> list[Arm]:
        """Pause active arms that are probably worse than the champion; returns those paused."""
        snapshot = self.arms.snapshot(fresh=True)
        with self.chooser.rng_lock:
            verdicts = arms_to_pause(snapshot.arms, snapshot.step, self.store.settings(), self.chooser.rng)
        paused = []
        for arm_id, reason in verdicts:
            paused.append(self.arms.set_state(arm_id, ArmState.PAUSED, reason))
            log.warning("arm_paused", arm_id=arm_id, reason=reason)
        return paused

    def forget_old_decisions(self) -> None:
        self.store.forget_before(time.time() - self.store.settings().reward_window_seconds)
