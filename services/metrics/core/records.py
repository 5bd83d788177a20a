"""What MetricsService's store takes and gives back besides the shared vocabulary: time
windows, write results, time buckets, logged decisions with their feedback counts; and
the encodings its rows and page tokens use."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from rectune.domain.errors import InvalidArgument
from rectune.domain.events import Decision, listed

MICROS = 1_000_000
MINUTE_US = 60 * MICROS
HOUR_US = 3600 * MICROS


def to_us(seconds: float) -> int:
    return round(seconds * MICROS)


@dataclass(frozen=True)
class Window:
    """[start, end) in unix seconds; None means unbounded on that side."""

    start: float | None = None
    end: float | None = None


@dataclass(frozen=True)
class WriteResult:
    accepted: int
    duplicates: int


@dataclass(frozen=True)
class Bucket:
    start: float
    impressions: int
    clicks: int
    conversions: int
    reward_sum: float


@dataclass(frozen=True)
class LoggedDecision:
    decision: Decision
    clicks: int
    conversions: int


def encode_page_token(time_us: int, decision_id: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([time_us, decision_id]).encode()).decode()


def decode_page_token(token: str) -> tuple[int, str]:
    refused = InvalidArgument("page_token", "is not a token this service returned")
    try:
        time_us, decision_id = json.loads(base64.urlsafe_b64decode(token.encode()))
    except (ValueError, TypeError):
        raise refused from None
    # A token is [microseconds as a 64-bit integer, a decision id]: anything else was not issued here.
    if not isinstance(time_us, int) or not -(2**63) <= time_us < 2**63 or not isinstance(decision_id, str):
        raise refused
    return time_us, decision_id


def decision_from_row(row: Any) -> Decision:
    return Decision(
        decision_id=row["decision_id"],
        request_id=row["request_id"],
        user_id=row["user_id"],
        arm_id=row["arm_id"],
        propensity=row["propensity"],
        propensity_samples=row["propensity_samples"],
        items=listed(json.loads(row["item_ids"])),
        degraded=bool(row["degraded"]),
        algorithm=row["algorithm"],
        context=json.loads(row["context"]),
        time=row["time_us"] / MICROS,
    )
