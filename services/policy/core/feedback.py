"""What a group of feedback events does to the policy's state.

RecordFeedback requests are written in groups (see GroupCommit): ``plan`` takes the group,
the decisions they name and the event ids already recorded, and returns each caller's
answer and every write the group needs, so that the group is one transaction with a fixed
number of statements however many events it holds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rectune.domain.errors import FailedPrecondition, NotFound, quoted
from rectune.domain.events import Decision, EventKind, FeedbackEvent
from services.policy.core.model import ArmCounts, BanditSettings


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
    settings: BanditSettings,
    now: float,
) -> FeedbackPlan:
    """Each event's answer, in order: NOT_FOUND for an unknown decision, FAILED_PRECONDITION
    past the reward window (as of ``now``), a duplicate when its id was recorded (before,
    or earlier in the group), else counted; and the rows and arm changes of the counted ones."""
    result = FeedbackPlan()
    seen = set(recorded)
    for event in group:
        decision = decisions.get(event.decision_id)
        if decision is None:
            result.outcomes.append(
                NotFound(
                    "decision_id", f"no decision {quoted(event.decision_id)} (unknown, or older than the reward window)"
                )
            )
            continue
        if now - (decision.time or now) > settings.reward_window_seconds:
            result.outcomes.append(
                FailedPrecondition(
                    f"decision_id: decision {quoted(event.decision_id)} is older than the reward window "
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
        result.outbox.extend(outbox_rows(event._replace(arm_id=decision.arm_id, user_id=decision.user_id)))
        result.outcomes.append(FeedbackResult(False, decision.arm_id))
    return result


def _count(counts: ArmCounts, kind: EventKind | None, settings: BanditSettings) -> None:
    if kind is EventKind.CLICK:
        counts.reward += settings.click_weight
    elif kind is EventKind.CONVERSION:
        counts.reward += settings.conversion_weight
    counts.clicks += int(kind is EventKind.CLICK)
    counts.conversions += int(kind is EventKind.CONVERSION)


def outbox_rows(event: FeedbackEvent) -> list[tuple[str, dict[str, Any]]]:
    """The event for MetricsService, and the interaction for ScoringService when it tells
    what the user likes, as outbox rows (kind, JSON payload)."""
    rows: list[tuple[str, dict[str, Any]]] = [("event", event_payload(event))]
    interaction = event.interaction()
    if interaction is not None:
        rows.append(("interaction", vars(interaction).copy()))
    return rows


def event_payload(event: FeedbackEvent) -> dict[str, Any]:
    payload = event._asdict()
    payload["kind"] = event.kind.value if event.kind is not None else ""
    return payload
