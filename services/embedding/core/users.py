"""User encoding, the two modes of the seed design.

(a) weighted mean: the mean of the history's item vectors, each weighted by its value
    (rating) times a recency factor 0.5 ** (age / half_life), then L2-normalised;
(b) history text: the item texts, most recent first, joined into one text that the
    encoder truncates to its max_length tokens.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from rectune.domain.errors import InvalidArgument
from services.embedding.core.encoder import Vectors

HISTORY_SEPARATOR = " | "


class UserEncodingMode(enum.Enum):
    WEIGHTED_MEAN = "weighted_mean"
    HISTORY_TEXT = "history_text"


@dataclass(frozen=True)
class HistoryEntry:
    item_id: str
    text: str
    # Rating or strength; 0 counts as 1 (an implicit interaction with no rating).
    value: float
    # Unix seconds; None when the client did not say.
    time: float | None


def check_history(
    history: Sequence[HistoryEntry], half_life_seconds: float, max_entries: int, as_of: float | None = None
) -> None:
    if not history:
        raise InvalidArgument("history", "must not be empty")
    if len(history) > max_entries:
        raise InvalidArgument("history", f"at most {max_entries} entries, got {len(history)}")
    if not math.isfinite(half_life_seconds) or half_life_seconds < 0:
        raise InvalidArgument("half_life_seconds", f"must be a finite number >= 0, got {half_life_seconds}")
    if as_of is not None and not math.isfinite(as_of):
        raise InvalidArgument("as_of", f"must be a finite time, got {as_of}")
    for index, entry in enumerate(history):
        if not math.isfinite(entry.value) or entry.value < 0:
            raise InvalidArgument(f"history[{index}].value", f"must be a finite number >= 0, got {entry.value}")
        if entry.time is not None and not math.isfinite(entry.time):
            raise InvalidArgument(f"history[{index}].time", f"must be a finite time, got {entry.time}")
        if half_life_seconds > 0 and entry.time is None:
            raise InvalidArgument(f"history[{index}].time", "is required when half_life_seconds > 0")


def history_weights(history: Sequence[HistoryEntry], half_life_seconds: float, as_of: float | None) -> list[float]:
    """value (0 -> 1) times 0.5 ** (age / half_life); future entries count as age 0.

    Only the weights' ratios matter (the mean is L2-normalised), so they are computed in log
    space and scaled so that the largest is 1: old histories, a far ``as_of`` or tiny values
    cannot underflow every weight to 0 (which gave a NaN vector)."""
    values = [entry.value if entry.value > 0 else 1.0 for entry in history]
    if half_life_seconds <= 0:
        return _scaled([math.log2(value) for value in values])
    times = [entry.time for entry in history if entry.time is not None]
    reference = as_of if as_of is not None else max(times)
    return _scaled(
        [
            math.log2(value) - max(reference - (entry.time or reference), 0.0) / half_life_seconds
            for value, entry in zip(values, history, strict=True)
        ]
    )


def _scaled(log2_weights: Sequence[float]) -> list[float]:
    top = max(log2_weights)
    return [2.0 ** (weight - top) for weight in log2_weights]


def weighted_mean(vectors: Vectors, weights: Sequence[float]) -> Vectors:
    weight_array = np.asarray(weights, dtype=np.float64)[:, None]
    mean = (vectors.astype(np.float64) * weight_array).sum(axis=0) / weight_array.sum()
    norm = np.linalg.norm(mean)
    unit: Vectors = (mean / norm if norm > 0 else mean).astype(np.float32)
    return unit


def most_recent_first(history: Sequence[HistoryEntry]) -> list[HistoryEntry]:
    """Newest first; entries without a time keep their order after the timed ones."""
    indexed = list(enumerate(history))
    indexed.sort(key=lambda pair: (pair[1].time is None, -(pair[1].time or 0.0), pair[0]))
    return [entry for _, entry in indexed]


def entries_within_budget(token_counts: Sequence[int], separator_tokens: int, budget: int) -> int:
    """How many leading entries start inside ``budget`` tokens once joined with separators."""
    used = 0
    for count, tokens in enumerate(token_counts):
        if used >= budget:
            return count
        used += tokens + separator_tokens
    return len(token_counts)
