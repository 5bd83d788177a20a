"""The roll-up arithmetic of MetricsService (services/metrics/core/rollups.py), without a
database: the pieces a window is cut into count exactly the events inside it."""

from __future__ import annotations

import random

from services.metrics.core.records import HOUR_US, MICROS, MINUTE_US
from services.metrics.core.rollups import (
    RAW,
    ROLLUP_WIDTHS_US,
    Piece,
    rollup_rows,
    widths_within,
    window_pieces,
)


def counted(pieces: list[Piece], times: list[int], rollups: dict[tuple[int, int], int]) -> int:
    """What a store counts for these pieces: raw times in raw pieces, roll-up buckets in the others."""
    total = 0
    for piece in pieces:
        if piece.width_us == RAW:
            total += sum(1 for t in times if inside(piece, t))
        else:
            total += sum(n for (width, b), n in rollups.items() if width == piece.width_us and inside(piece, b))
    return total


def inside(piece: Piece, time_us: int) -> bool:
    return (piece.start is None or time_us >= piece.start) and (piece.end is None or time_us < piece.end)


def test_pieces_count_exactly_the_events_in_any_window() -> None:
    rng = random.Random(7)
    base = 1_750_000_000 * MICROS
    times = [base + rng.randrange(0, 5 * HOUR_US) for _ in range(2_000)]
    rows = rollup_rows({"time_us": t, "arm_id": "a", "kind": "click", "custom_name": "", "value": 1.0} for t in times)
    rollups = {(row["width_us"], row["bucket_us"]): row["count"] for row in rows}
    for _ in range(300):
        start = rng.choice([None, base + rng.randrange(-HOUR_US, 6 * HOUR_US)])
        end = rng.choice([None, base + rng.randrange(-HOUR_US, 6 * HOUR_US)])
        expected = sum(1 for t in times if (start is None or t >= start) and (end is None or t < end))
        assert counted(window_pieces(start, end, None), times, rollups) == expected, (start, end)


def test_a_window_reads_few_rows_however_long_it_is() -> None:
    start, end = 1_750_000_000 * MICROS + 123_456, 1_750_000_000 * MICROS + 30 * 86_400 * MICROS + 654_321
    pieces = window_pieces(start, end, None)
    assert [piece.width_us for piece in pieces] == [HOUR_US, MINUTE_US, MICROS, RAW, MINUTE_US, MICROS, RAW]
    raw = [piece for piece in pieces if piece.width_us == RAW]
    assert all(piece.end - piece.start < MICROS for piece in raw)  # type: ignore[operator]
    fine = [piece for piece in pieces if piece.width_us in (MINUTE_US, MICROS)]
    assert all(piece.end - piece.start < HOUR_US for piece in fine)  # type: ignore[operator]


def test_before_the_compaction_horizon_only_whole_hours_count() -> None:
    horizon = 1_750_000_000 * MICROS // HOUR_US * HOUR_US
    start = horizon - 5 * HOUR_US + 1
    assert window_pieces(start, horizon - 2 * HOUR_US + 7, horizon) == [
        Piece(HOUR_US, start, horizon - 2 * HOUR_US + 7)
    ]
    pieces = window_pieces(start, horizon + HOUR_US + 5, horizon)
    assert pieces[0] == Piece(HOUR_US, start, horizon)
    assert pieces[1:] == window_pieces(horizon, horizon + HOUR_US + 5, None)
    assert window_pieces(None, None, horizon) == [Piece(HOUR_US, None, horizon), Piece(HOUR_US, horizon, None)]


def test_series_buckets_read_only_the_widths_that_divide_them() -> None:
    assert widths_within(2 * HOUR_US) == ROLLUP_WIDTHS_US
    assert widths_within(90 * MICROS) == (MICROS,)
    assert widths_within(MICROS + MICROS // 2) == ()


def test_increments_sum_per_key_in_key_order() -> None:
    rows = rollup_rows(
        [
            {"time_us": 5 * MICROS + 1, "arm_id": "b", "kind": "click", "custom_name": "", "value": 1.0},
            {"time_us": 5 * MICROS + 2, "arm_id": "b", "kind": "click", "custom_name": "", "value": 2.5},
            {"time_us": 7 * MICROS, "arm_id": "a", "kind": "custom", "custom_name": "spend", "value": 4.0},
        ]
    )
    seconds = [(r["bucket_us"], r["arm_id"], r["count"], r["value_sum"]) for r in rows if r["width_us"] == MICROS]
    assert seconds == [(5 * MICROS, "b", 2, 3.5), (7 * MICROS, "a", 1, 4.0)]
    keys = [(r["width_us"], r["bucket_us"], r["arm_id"], r["kind"], r["custom_name"]) for r in rows]
    assert keys == sorted(keys) and len(rows) == 2 * len(ROLLUP_WIDTHS_US)
