"""Roll-ups: events summed per time bucket, so that statistics read O(arms x buckets) rows.

Every stored event is added, in the transaction that stores it, to one bucket of each width
(1 s, 1 min, 1 h; buckets start at multiples of their width since the epoch) per arm, kind
and custom name. A duplicate is never stored, so it never counts twice.

A time window [start, end) is answered exactly by cutting it into pieces: the whole hours
inside it from the hour roll-ups, the whole minutes left at its edges from the minute ones,
the whole seconds left from the second ones, and what is left (less than a second at each
edge) from the raw events. So a query reads at most about 2 x 59 rows per arm and kind of
each fine width, one per hour of the window, and under two seconds of raw events.

Before the compaction horizon (always a whole hour) only the hour roll-ups remain; there a
window counts the hours that start inside it, as it did when compaction wrote hourly
aggregates.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from services.metrics.core.records import HOUR_US, MICROS, MINUTE_US

# Coarsest first; each width divides the one before it.
ROLLUP_WIDTHS_US = (HOUR_US, MINUTE_US, MICROS)
RAW = 0  # the width of a piece read from raw events


@dataclass(frozen=True)
class Piece:
    """Rows of one width (RAW: raw events) whose time lies in [start, end); None: unbounded."""

    width_us: int
    start: int | None
    end: int | None


def window_pieces(
    start: int | None, end: int | None, horizon: int | None, widths: tuple[int, ...] = ROLLUP_WIDTHS_US
) -> list[Piece]:
    """The pieces that together count exactly the events in [start, end) (microseconds).

    ``horizon``: the compaction horizon, before which only hour roll-ups exist (None: no
    compaction yet). ``widths``: the roll-up widths the caller may read, coarsest first."""
    if start is not None and end is not None and start >= end:
        return []
    if horizon is None or (start is not None and start >= horizon):
        return _exact_pieces(start, end, widths)
    compacted = Piece(HOUR_US, start, horizon if end is None else min(end, horizon))
    if end is not None and end <= horizon:
        return [compacted]
    return [compacted, *_exact_pieces(horizon, end, widths)]


def _exact_pieces(start: int | None, end: int | None, widths: tuple[int, ...]) -> list[Piece]:
    if start is not None and end is not None and start >= end:
        return []
    if not widths:
        return [Piece(RAW, start, end)]
    width, finer = widths[0], widths[1:]
    first = None if start is None else -(-start // width) * width  # the first whole bucket's start
    last = None if end is None else end // width * width  # the end of the last whole bucket
    if first is not None and last is not None and first >= last:
        return _exact_pieces(start, end, finer)
    pieces = [Piece(width, first, last)]
    if start is not None and first is not None and start < first:
        pieces += _exact_pieces(start, first, finer)
    if end is not None and last is not None and last < end:
        pieces += _exact_pieces(last, end, finer)
    return pieces


def widths_within(bucket_us: int) -> tuple[int, ...]:
    """The roll-up widths that divide a time-series bucket, so each roll-up row falls inside
    one bucket of the series (none for a width that is not a whole number of seconds)."""
    return tuple(width for width in ROLLUP_WIDTHS_US if bucket_us % width == 0)


def rollup_rows(events: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The roll-up increments of stored event rows, one per width, bucket, arm, kind and custom
    name, in key order (writers then lock the rows in the same order and cannot deadlock)."""
    # Events summed per second first, then the seconds per coarser bucket: one dictionary
    # update per event (ingest speed), and few seconds per batch in a live stream.
    seconds: dict[tuple[int, str, str, str], list[Any]] = {}
    for event in events:
        key = (event["time_us"] // MICROS, event["arm_id"], event["kind"], event["custom_name"])
        total = seconds.setdefault(key, [0, 0.0])
        total[0] += 1
        total[1] += event["value"]
    sums: dict[tuple[int, int, str, str, str], list[Any]] = {}
    for (second, arm, kind, custom_name), (count, value) in seconds.items():
        for width in ROLLUP_WIDTHS_US:
            total = sums.setdefault((width, second * MICROS // width * width, arm, kind, custom_name), [0, 0.0])
            total[0] += count
            total[1] += value
    return [
        {"width_us": w, "bucket_us": b, "arm_id": a, "kind": k, "custom_name": c, "count": n, "value_sum": v}
        for (w, b, a, k, c), (n, v) in sorted(sums.items())
    ]
