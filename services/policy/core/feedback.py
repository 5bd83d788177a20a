"""Feedback events, and what a group of them does to the policy's state.

RecordFeedback requests are written in groups (see GroupCommit): ``plan`` takes the group,
the decisions they name and the event ids already recorded, and returns each caller's
answer and every write the group needs, so that the group is one transaction with a fixed
number of statements however many events it holds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from services.common.errors import FailedPrecondition, NotFound
from services.policy.core.model import ArmCounts, Decision, PolicySettings

EVENT_KINDS = ("impression", "click", "conversion", "rating", "custom")
# Feedback that tells what a user likes, and so goes back to scoring as an interaction.
INTERACTION_KINDS = ("click", "conversion", "rating")


@dataclass(frozen=True)
class FeedbackEvent:
    event_id: str
    decision_id: str
    kind: str
    custom_name: str
    item_id: str
    value: float
    time: float  # when it happened (the request's time, else when it was received)
    received: float


@dataclass(frozen=True)
class FeedbackResult:
    duplicate: bool
    arm_id: str


@dataclass
class FeedbackPlan:
    outcomes: list[FeedbackResult | Exception] = field(default_factory=list)
    new_event_ids: list[tuple[str, str]] = field(default_factory=list)  # (event id, decision id)
    arm_counts: dict[str, ArmCounts] = field(default_factory=dict)
    outbox: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


def plan(
    group: Sequence[FeedbackEvent],
    decisions: Mapping[str, Decision],
    recorded: set[str],
    settings: PolicySettings,
) -> FeedbackPlan:
    """Each event's answer, in order: NOT_FOUND for an unknown decision, FAILED_PRECONDITION
    past the reward window, a duplicate when its id was recorded (before, or earlier in the
    group), else counted; and the rows and arm changes of the counted ones."""
    result = FeedbackPlan()
    seen = set(recorded)
    for event in group:
        decision = decisions.get(event.decision_id)
        if decision is None:
            result.outcomes.append(
                NotFound("decision_id", f"no decision {event.decision_id!r} (unknown, or older than the reward window)")
            )
            continue
        if event.received - decision.created_at > settings.reward_window_seconds:
            result.outcomes.append(
                FailedPrecondition(
                    f"decision_id: decision {event.decision_id!r} is older than the reward window "
                    f"({settings.reward_window_seconds:.0f} s)"
                )
            )
            continue
        if event.event_id in seen:
            result.outcomes.append(FeedbackResult(True, decision.arm_id))
            continue
        seen.add(event.event_id)
        result.new_event_ids.append((event.event_id, event.decision_id))
        if not decision.degraded:
            _count(result.arm_counts.setdefault(decision.arm_id, ArmCounts()), event.kind, settings)
        result.outbox.extend(_outbox_rows(event, decision))
        result.outcomes.append(FeedbackResult(False, decision.arm_id))
    return result


def _count(counts: ArmCounts, kind: str, settings: PolicySettings) -> None:
    counts.reward += {"click": settings.click_weight, "conversion": settings.conversion_weight}.get(kind, 0.0)
    counts.clicks += int(kind == "click")
    counts.conversions += int(kind == "conversion")


def _outbox_rows(event: FeedbackEvent, decision: Decision) -> list[tuple[str, dict[str, Any]]]:
    rows: list[tuple[str, dict[str, Any]]] = [
        (
            "event",
            {
                "event_id": event.event_id,
                "decision_id": event.decision_id,
                "arm_id": decision.arm_id,
                "user_id": decision.user_id,
                "item_id": event.item_id,
                "kind": event.kind,
                "custom_name": event.custom_name,
                "value": event.value,
                "time": event.time,
            },
        )
    ]
    if event.item_id and decision.user_id and event.kind in INTERACTION_KINDS:
        interaction = {"user_id": decision.user_id, "item_id": event.item_id, "value": event.value or 1.0}
        rows.append(("interaction", {**interaction, "time": event.time}))
    return rows
