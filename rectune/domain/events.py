"""What users did and what the policy decided: interactions, catalogue items, feedback
events, logged decisions; and the rules their values follow.

A value is checked once, at the first service that accepts it, by these rules, which every
later service applies as well: what one service acknowledges, the next never refuses.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from time import time as wall_clock
from typing import NamedTuple

from rectune.domain.errors import InvalidArgument, quoted

MAX_ID_LENGTH = 128
# An interaction's or event's value (a rating, a count, a revenue): bounded so that one value
# cannot overflow the float32 matrices the strategies fit on and break every fit after it.
MAX_VALUE = 1e6
MAX_ITEMS_PER_DECISION = 1000
# How far ahead of the receiving service's clock a time may lie (clocks of apps and services
# drift by seconds, not minutes). Every service refuses later times by this one rule; a
# service may be configured to allow more, never less.
MAX_FUTURE_SECONDS = 300.0
# An item's text, as EmbeddingService takes it (its --max-text-bytes must not be smaller).
MAX_ITEM_TEXT_BYTES = 16384
# A decision's context (key -> value pairs an app attaches, logged for off-policy evaluation).
MAX_CONTEXT_ENTRIES = 64
MAX_CONTEXT_TEXT = 1024
# What one ranking request may carry: interactions of a cold or in-session user, and item ids
# to exclude or to score. The work of a request grows with these times k; a user's stored
# history has no such bound (it is read from the service's own data, never from the request).
MAX_REQUEST_HISTORY = 10_000
MAX_REQUEST_ITEMS = 10_000


class EventKind(enum.Enum):
    IMPRESSION = "impression"
    CLICK = "click"
    CONVERSION = "conversion"
    RATING = "rating"
    CUSTOM = "custom"

    @classmethod
    def names(cls) -> list[str]:
        return [k.value for k in cls]


# Kinds whose value means "one occurrence" when the client leaves it at 0.
COUNTED_KINDS = (EventKind.IMPRESSION, EventKind.CLICK, EventKind.CONVERSION)
# Feedback that tells what a user likes, and so goes back to scoring as an interaction.
INTERACTION_KINDS = (EventKind.CLICK, EventKind.CONVERSION, EventKind.RATING)


@dataclass(frozen=True)
class Interaction:
    user_id: str
    item_id: str
    value: float
    time: float


@dataclass(frozen=True)
class Item:
    item_id: str
    text: str
    attributes: dict[str, str] = field(default_factory=dict)


class FeedbackEvent(NamedTuple):
    """One event about a decision. A NamedTuple rather than a dataclass: batches hold
    thousands, and building one is several times cheaper."""

    event_id: str
    decision_id: str
    arm_id: str  # "" until the policy resolves the decision
    user_id: str
    item_id: str
    kind: EventKind | None  # None: the client sent an unknown or unspecified kind
    custom_name: str
    value: float
    time: float | None  # unix seconds; None: not given (the receiver stamps its own time)

    def interaction(self) -> Interaction | None:
        """The interaction this event tells scoring about, if it tells what the user likes."""
        if not (self.item_id and self.user_id and self.kind in INTERACTION_KINDS and self.time is not None):
            return None
        return Interaction(self.user_id, self.item_id, self.value or 1.0, self.time)


@dataclass(frozen=True)
class ScoredItem:
    item_id: str
    score: float
    probability: float
    rank: int


@dataclass(frozen=True)
class Decision:
    """A logged decision: which arm served whom, with what probability, and the list."""

    decision_id: str
    request_id: str
    user_id: str
    arm_id: str
    propensity: float
    propensity_samples: int
    items: tuple[ScoredItem, ...]
    degraded: bool
    algorithm: str
    context: Mapping[str, str] = field(default_factory=dict)
    time: float | None = None  # unix seconds; None: not given (the receiver stamps its own time)
    degraded_reason: str = ""

    @property
    def item_ids(self) -> tuple[str, ...]:
        return tuple(item.item_id for item in self.items)

    def impression(self) -> FeedbackEvent:
        """The impression the decision counts, as MetricsService records it."""
        return FeedbackEvent(
            f"{self.decision_id}:impression",
            self.decision_id,
            self.arm_id,
            self.user_id,
            "",
            EventKind.IMPRESSION,
            "",
            1.0,
            self.time,
        )


def listed(item_ids: Sequence[str]) -> tuple[ScoredItem, ...]:
    """Items known only by id, in rank order (a logged decision as MetricsService keeps it)."""
    return tuple(ScoredItem(item_id, 0.0, 0.0, rank) for rank, item_id in enumerate(item_ids, start=1))


@dataclass(frozen=True)
class TimeRules:
    """What times a value may carry, relative to the time it is received."""

    now: float
    max_future_seconds: float
    # Events before this were compacted into hourly aggregates: refusing them keeps
    # recording idempotent (their ids are no longer kept). None: nothing compacted.
    oldest_accepted: float | None = None


def edge_rules(now: float | None = None) -> TimeRules:
    """The time rules at a service that first accepts a value: not after now + MAX_FUTURE_SECONDS."""
    return TimeRules(wall_clock() if now is None else now, MAX_FUTURE_SECONDS)


def check_count(where: str, count: int, limit: int) -> None:
    """A repeated field of a request holds at most ``limit`` entries."""
    if count > limit:
        raise InvalidArgument(where, f"at most {limit:,} entries per request, got {count:,}")


def check_id(where: str, value: str, required: bool = True) -> None:
    if required and not value:
        raise InvalidArgument(where, "must not be empty")
    if len(value) > MAX_ID_LENGTH:
        raise InvalidArgument(where, f"at most {MAX_ID_LENGTH} characters, got {len(value)}")


def check_context(context: Mapping[str, str], where: str = "context") -> None:
    """At most MAX_CONTEXT_ENTRIES entries, each key an id and each value at most MAX_CONTEXT_TEXT characters."""
    if len(context) > MAX_CONTEXT_ENTRIES:
        raise InvalidArgument(where, f"at most {MAX_CONTEXT_ENTRIES} entries, got {len(context)}")
    for key, value in context.items():
        check_id(f"{where} key", key)
        if len(value) > MAX_CONTEXT_TEXT:
            raise InvalidArgument(f"{where}[{quoted(key)}]", f"at most {MAX_CONTEXT_TEXT} characters, got {len(value)}")


def check_finite(where: str, value: float) -> None:
    if not math.isfinite(value):
        raise InvalidArgument(where, f"must be a finite number, got {value}")


def check_value(where: str, value: float) -> None:
    """A finite number within +-MAX_VALUE."""
    check_finite(where, value)
    if abs(value) > MAX_VALUE:
        raise InvalidArgument(where, f"must be between {-MAX_VALUE:g} and {MAX_VALUE:g}, got {value:g}")


def check_time(where: str, time: float | None, rules: TimeRules) -> None:
    if time is None:
        return
    if not math.isfinite(time):
        raise InvalidArgument(where, f"must be a finite time, got {time}")
    if time < 0:
        raise InvalidArgument(where, f"must not be before 1970 (unix seconds), got {time:.0f}")
    if time > rules.now + rules.max_future_seconds:
        raise InvalidArgument(
            where, f"is {time - rules.now:.0f} s in the future; at most {rules.max_future_seconds:.0f} s is allowed"
        )
    if rules.oldest_accepted is not None and time < rules.oldest_accepted:
        raise InvalidArgument(where, "is older than the retention horizon (already compacted into hourly aggregates)")


def check_item(where: str, item: Item) -> None:
    """An item's id, its text (at most MAX_ITEM_TEXT_BYTES of UTF-8) and its attributes (as a
    context: at most 64 entries, keys are ids, values at most 1,024 characters)."""
    check_id(f"{where}.item_id", item.item_id)
    size = len(item.text.encode("utf-8", errors="replace"))
    if size > MAX_ITEM_TEXT_BYTES:
        raise InvalidArgument(f"{where}.text", f"at most {MAX_ITEM_TEXT_BYTES} bytes of UTF-8, got {size}")
    check_context(item.attributes, f"{where}.attributes")


def check_interaction(where: str, interaction: Interaction, rules: TimeRules, user_required: bool = True) -> None:
    """An interaction's ids, value and time (0 means not given)."""
    check_id(f"{where}.user_id", interaction.user_id, required=user_required)
    check_id(f"{where}.item_id", interaction.item_id)
    check_value(f"{where}.value", interaction.value)
    check_time(f"{where}.time", interaction.time, rules)


def check_event(prefix: str, event: FeedbackEvent, rules: TimeRules) -> None:
    check_id(f"{prefix}.event_id", event.event_id)
    check_id(f"{prefix}.decision_id", event.decision_id)
    check_id(f"{prefix}.arm_id", event.arm_id)
    check_id(f"{prefix}.user_id", event.user_id, required=False)
    check_id(f"{prefix}.item_id", event.item_id, required=False)
    if event.kind is None:
        raise InvalidArgument(f"{prefix}.kind", f"must be one of {', '.join(EventKind.names())}")
    if event.kind is EventKind.CUSTOM:
        check_id(f"{prefix}.custom_name", event.custom_name)
    check_value(f"{prefix}.value", event.value)
    check_time(f"{prefix}.time", event.time, rules)


def check_events(events: Sequence[FeedbackEvent], rules: TimeRules, field_name: str = "events") -> None:
    """Check every event; the first error wins and names its index and field."""
    if not events:
        raise InvalidArgument(field_name, "must not be empty")
    for index, event in enumerate(events):
        check_event(f"{field_name}[{index}]", event, rules)


def stored_value(event: FeedbackEvent) -> float:
    """Impressions, clicks and conversions left at 0 count one occurrence."""
    return 1.0 if event.value == 0 and event.kind in COUNTED_KINDS else event.value


def check_decision(prefix: str, decision: Decision, rules: TimeRules) -> None:
    check_id(f"{prefix}.decision_id", decision.decision_id)
    check_id(f"{prefix}.arm_id", decision.arm_id)
    check_id(f"{prefix}.request_id", decision.request_id, required=False)
    check_id(f"{prefix}.user_id", decision.user_id, required=False)
    check_context(decision.context, f"{prefix}.context")
    if not (0.0 < decision.propensity <= 1.0):
        raise InvalidArgument(f"{prefix}.propensity", f"must be in (0, 1], got {decision.propensity}")
    if decision.propensity_samples < 0:
        raise InvalidArgument(f"{prefix}.propensity_samples", f"must be >= 0, got {decision.propensity_samples}")
    if len(decision.items) > MAX_ITEMS_PER_DECISION:
        raise InvalidArgument(f"{prefix}.item_ids", f"at most {MAX_ITEMS_PER_DECISION} items")
    check_time(f"{prefix}.time", decision.time, rules)


def check_decisions(decisions: Sequence[Decision], rules: TimeRules) -> None:
    if not decisions:
        raise InvalidArgument("decisions", "must not be empty")
    for index, decision in enumerate(decisions):
        check_decision(f"decisions[{index}]", decision, rules)
