"""Events and decisions as the domain sees them, and their validation.

A batch is checked whole before anything is written: the first bad entry rejects it with
``events[<index>].<field>: <rule>``, and nothing of the batch is stored.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from services.common.errors import InvalidArgument

MAX_ID_LENGTH = 128
MAX_ITEMS_PER_DECISION = 1000


class EventKind(enum.Enum):
    IMPRESSION = "impression"
    CLICK = "click"
    CONVERSION = "conversion"
    RATING = "rating"
    CUSTOM = "custom"


# Kinds whose value means "one occurrence" when the client leaves it at 0.
COUNTED_KINDS = (EventKind.IMPRESSION, EventKind.CLICK, EventKind.CONVERSION)


class Event(NamedTuple):
    """One event. A NamedTuple rather than a dataclass: batches hold thousands, and
    building one is several times cheaper."""

    event_id: str
    decision_id: str
    arm_id: str
    user_id: str
    item_id: str
    kind: EventKind | None  # None: the client sent an unknown or unspecified kind
    custom_name: str
    value: float
    time: float | None  # unix seconds; None: not given (stored as the time it arrived)


@dataclass(frozen=True)
class Decision:
    decision_id: str
    request_id: str
    user_id: str
    arm_id: str
    propensity: float
    propensity_samples: int
    item_ids: tuple[str, ...]
    degraded: bool
    algorithm: str
    context: dict[str, str] = field(default_factory=dict)
    time: float | None = None


@dataclass(frozen=True)
class TimeRules:
    """What times a batch may carry, relative to the time it is received."""

    now: float
    max_future_seconds: float
    # Events before this were compacted into hourly aggregates: refusing them keeps
    # recording idempotent (their ids are no longer kept). None: nothing compacted.
    oldest_accepted: float | None


def _check_id(where: str, value: str, required: bool = True) -> None:
    if required and not value:
        raise InvalidArgument(where, "must not be empty")
    if len(value) > MAX_ID_LENGTH:
        raise InvalidArgument(where, f"at most {MAX_ID_LENGTH} characters, got {len(value)}")


def _check_time(where: str, time: float | None, rules: TimeRules) -> None:
    if time is None:
        return
    if not math.isfinite(time):
        raise InvalidArgument(where, f"must be a finite time, got {time}")
    if time > rules.now + rules.max_future_seconds:
        raise InvalidArgument(
            where, f"is {time - rules.now:.0f} s in the future; at most {rules.max_future_seconds:.0f} s is allowed"
        )
    if rules.oldest_accepted is not None and time < rules.oldest_accepted:
        raise InvalidArgument(where, "is older than the retention horizon (already compacted into hourly aggregates)")


def check_event(prefix: str, event: Event, rules: TimeRules) -> None:
    _check_id(f"{prefix}.event_id", event.event_id)
    _check_id(f"{prefix}.decision_id", event.decision_id)
    _check_id(f"{prefix}.arm_id", event.arm_id)
    _check_id(f"{prefix}.user_id", event.user_id, required=False)
    _check_id(f"{prefix}.item_id", event.item_id, required=False)
    if event.kind is None:
        kinds = ", ".join(k.value for k in EventKind)
        raise InvalidArgument(f"{prefix}.kind", f"must be one of {kinds}")
    if event.kind is EventKind.CUSTOM:
        _check_id(f"{prefix}.custom_name", event.custom_name)
    if not math.isfinite(event.value):
        raise InvalidArgument(f"{prefix}.value", f"must be a finite number, got {event.value}")
    _check_time(f"{prefix}.time", event.time, rules)


def check_events(events: Sequence[Event], rules: TimeRules, field_name: str = "events") -> None:
    """Check every event; the first error wins and names its index and field."""
    if not events:
        raise InvalidArgument(field_name, "must not be empty")
    for index, event in enumerate(events):
        check_event(f"{field_name}[{index}]", event, rules)


def stored_value(event: Event) -> float:
    """Impressions, clicks and conversions left at 0 count one occurrence."""
    return 1.0 if event.value == 0 and event.kind in COUNTED_KINDS else event.value


def check_decisions(decisions: Sequence[Decision], rules: TimeRules) -> None:
    if not decisions:
        raise InvalidArgument("decisions", "must not be empty")
    for index, decision in enumerate(decisions):
        prefix = f"decisions[{index}]"
        _check_id(f"{prefix}.decision_id", decision.decision_id)
        _check_id(f"{prefix}.arm_id", decision.arm_id)
        _check_id(f"{prefix}.request_id", decision.request_id, required=False)
        _check_id(f"{prefix}.user_id", decision.user_id, required=False)
        if not (0.0 < decision.propensity <= 1.0):
            raise InvalidArgument(f"{prefix}.propensity", f"must be in (0, 1], got {decision.propensity}")
        if decision.propensity_samples < 0:
            raise InvalidArgument(f"{prefix}.propensity_samples", f"must be >= 0, got {decision.propensity_samples}")
        if len(decision.item_ids) > MAX_ITEMS_PER_DECISION:
            raise InvalidArgument(f"{prefix}.item_ids", f"at most {MAX_ITEMS_PER_DECISION} items")
        _check_time(f"{prefix}.time", decision.time, rules)
