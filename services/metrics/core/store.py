"""The event and decision store over SQLAlchemy: SQLite and PostgreSQL share this code.

Every write is one transaction. Recording is idempotent by id: rows whose id is already
stored are counted as duplicates and left alone (INSERT ... ON CONFLICT DO NOTHING also
covers two writers racing on the same id). The events that were new, as the insert returns
them, are added to the roll-ups in the same transaction; statistics read those (rollups.py).

Why one module of this size: every query here depends on the same table layout and on the
two dialects' insert paths; split up, a change of a column would be spread over files that
must change together. Its value types and encodings are in records.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    Table,
    and_,
    case,
    func,
    literal,
    or_,
    select,
    union_all,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql import Select

from rectune.domain.events import Decision, FeedbackEvent, stored_value
from services.metrics.core.records import (
    HOUR_US,
    MICROS,
    Bucket,
    LoggedDecision,
    Window,
    WriteResult,
    decision_from_row,
    decode_page_token,
    encode_page_token,
    to_us,
)
from services.metrics.core.rollups import RAW, ROLLUP_WIDTHS_US, Piece, rollup_rows, widths_within, window_pieces
from services.metrics.core.stats import ArmCounts
from services.metrics.core.tables import CompactionStateRow, DecisionRow, EventRollupRow, EventRow

EVENTS: Table = EventRow.__table__  # type: ignore[attr-defined]
DECISIONS: Table = DecisionRow.__table__  # type: ignore[attr-defined]
ROLLUPS: Table = EventRollupRow.__table__  # type: ignore[attr-defined]
COMPACTION: Table = CompactionStateRow.__table__  # type: ignore[attr-defined]

# Larger id lists are looked up in chunks (SQLite's limit on bound parameters).
ID_CHUNK = 900
# Bound parameters in one SQLite statement (its limit since 3.32 is 32,766).
SQLITE_MAX_PARAMETERS = 32_000


def _counted(kind: str, column: Any) -> Any:
    return func.coalesce(func.sum(case((column.c.kind == kind, column.c.n), else_=0)), 0)


class MetricsStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        dialects = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}
        if engine.dialect.name not in dialects:
            raise ValueError(f"database: {engine.dialect.name} is not supported (use SQLite or PostgreSQL)")
        self._insert: Any = dialects[engine.dialect.name]
        self._is_sqlite = engine.dialect.name == "sqlite"

    # -- writes ---------------------------------------------------------------------------

    def _write_new(
        self, connection: Connection, table: Table, id_column: str, rows: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """Insert rows whose id is new; returns those rows (repeats within the batch count once).

        Rows go in sorted by id, so writers with overlapping batches take row locks in the
        same order and cannot deadlock each other."""
        unique = sorted({row[id_column]: row for row in rows}.values(), key=lambda row: row[id_column])
        if self._is_sqlite:
            new_ids = self._insert_sqlite(connection, table, id_column, unique)
        else:
            new_ids = self._insert_postgres(connection, table, id_column, unique)
        return [row for row in unique if row[id_column] in new_ids]

    def _insert_sqlite(
        self, connection: Connection, table: Table, id_column: str, rows: list[dict[str, Any]]
    ) -> set[str]:
        """SQLite: multi-row INSERT ... ON CONFLICT DO NOTHING RETURNING id: the ids that were
        new. Written as SQL with positional parameters, because building SQLAlchemy's
        parameters row by row cost more than the insert itself (bench/metrics.py)."""
        columns = [column.name for column in table.columns]
        head = f"INSERT INTO {table.name} ({', '.join(columns)})"
        tail = f"ON CONFLICT ({id_column}) DO NOTHING RETURNING {id_column}"
        new_ids: set[str] = set()
        for sql, values in _multi_row(head, tail, columns, rows, "?"):
            new_ids.update(found[0] for found in connection.exec_driver_sql(sql, values))
        return new_ids

    def _insert_postgres(
        self, connection: Connection, table: Table, id_column: str, rows: list[dict[str, Any]]
    ) -> set[str]:
        """PostgreSQL: one INSERT ... SELECT FROM unnest(column arrays) ON CONFLICT DO NOTHING
        RETURNING id. A single set-based statement per batch, and RETURNING names exactly the
        rows that were new, races included."""
        if not rows:
            return set()
        columns = [column.name for column in table.columns]
        arrays = ", ".join(f"%s::{_pg_array_type(table.c[name])}" for name in columns)
        sql = (
            f"INSERT INTO {table.name} ({', '.join(columns)}) SELECT * FROM unnest({arrays}) "
            f"ON CONFLICT ({id_column}) DO NOTHING RETURNING {id_column}"
        )
        values = [[row[name] for row in rows] for name in columns]
        # Through SQLAlchemy (not a raw cursor), so that a storage fault is mapped to
        # UNAVAILABLE like every other write (services.common.storage_guard).
        return {row[0] for row in connection.exec_driver_sql(sql, tuple(values))}

    def _add_to_rollups(self, connection: Connection, events: list[dict[str, Any]]) -> None:
        """Add stored events to their roll-up rows: multi-row upserts written as SQL (the same
        on both dialects but for the placeholder), for the reason _insert_sqlite gives."""
        increments = rollup_rows(events)
        columns = [column.name for column in ROLLUPS.columns]
        keys = ", ".join(column.name for column in ROLLUPS.primary_key.columns)
        head = f"INSERT INTO {ROLLUPS.name} ({', '.join(columns)})"
        tail = (
            f"ON CONFLICT ({keys}) DO UPDATE SET count = {ROLLUPS.name}.count + excluded.count, "
            f"value_sum = {ROLLUPS.name}.value_sum + excluded.value_sum"
        )
        for sql, values in _multi_row(head, tail, columns, increments, "?" if self._is_sqlite else "%s"):
            connection.exec_driver_sql(sql, values)

    def record_events(self, events: Sequence[FeedbackEvent], received_at: float) -> WriteResult:
        """Store events; those without a time are stamped ``received_at``."""
        rows = [
            {
                "event_id": e.event_id,
                "decision_id": e.decision_id,
                "arm_id": e.arm_id,
                "user_id": e.user_id,
                "item_id": e.item_id,
                "kind": e.kind.value if e.kind else "",
                "custom_name": e.custom_name,
                "value": stored_value(e),
                "time_us": to_us(received_at if e.time is None else e.time),
            }
            for e in events
        ]
        with self.engine.begin() as connection:
            stored = self._write_new(connection, EVENTS, "event_id", rows)
            self._add_to_rollups(connection, stored)
        return WriteResult(accepted=len(stored), duplicates=len(rows) - len(stored))

    def record_decisions(self, decisions: Sequence[Decision], received_at: float) -> WriteResult:
        rows = [
            {
                "decision_id": d.decision_id,
                "request_id": d.request_id,
                "user_id": d.user_id,
                "arm_id": d.arm_id,
                "propensity": d.propensity,
                "propensity_samples": d.propensity_samples,
                "item_ids": json.dumps(list(d.item_ids)),
                "degraded": d.degraded,
                "algorithm": d.algorithm,
                "context": json.dumps(d.context, sort_keys=True),
                "time_us": to_us(received_at if d.time is None else d.time),
            }
            for d in decisions
        ]
        with self.engine.begin() as connection:
            stored = self._write_new(connection, DECISIONS, "decision_id", rows)
        return WriteResult(accepted=len(stored), duplicates=len(rows) - len(stored))

    # -- reads ----------------------------------------------------------------------------

    def _counts_source(
        self, connection: Connection, window: Window, arm_ids: Sequence[str], widths: tuple[int, ...]
    ) -> Any:
        """The rows that count the events in the window, as (arm_id, time_us, kind, n): roll-ups
        of the given widths and raw events at the edges (rollups.py). The compaction horizon is
        read on the connection that runs the query."""
        start, end = _bounds_us(window)
        pieces = window_pieces(start, end, _horizon_us(connection), widths)
        parts = [self._piece_rows(piece, arm_ids) for piece in pieces]
        if not parts:  # an empty window: no rows
            parts = [self._piece_rows(Piece(RAW, 0, 0), arm_ids)]
        return (parts[0] if len(parts) == 1 else union_all(*parts)).subquery("counted")

    def _piece_rows(self, piece: Piece, arm_ids: Sequence[str]) -> Select[Any]:
        if piece.width_us == RAW:
            raw = select(EVENTS.c.arm_id, EVENTS.c.time_us.label("time_us"), EVENTS.c.kind, literal(1).label("n"))
            return raw.where(*self._filters(EVENTS.c.time_us, EVENTS.c.arm_id, piece.start, piece.end, arm_ids))
        rolled = select(
            ROLLUPS.c.arm_id, ROLLUPS.c.bucket_us.label("time_us"), ROLLUPS.c.kind, ROLLUPS.c.count.label("n")
        )
        return rolled.where(
            ROLLUPS.c.width_us == piece.width_us,
            *self._filters(ROLLUPS.c.bucket_us, ROLLUPS.c.arm_id, piece.start, piece.end, arm_ids),
        )

    @staticmethod
    def _filters(
        time_column: Any, arm_column: Any, start: int | None, end: int | None, arm_ids: Sequence[str]
    ) -> list[Any]:
        """Times in [start, end) (microseconds; None: open) and, if given, the arms."""
        filters = []
        if start is not None:
            filters.append(time_column >= start)
        if end is not None:
            filters.append(time_column < end)
        if arm_ids:
            filters.append(arm_column.in_(list(arm_ids)))
        return filters

    def arm_counts(self, window: Window, arm_ids: Sequence[str] = ()) -> list[ArmCounts]:
        """Impressions, clicks and conversions per arm; requested arms with no events count zero."""
        with self.engine.connect() as connection:
            found = self._arm_counts(connection, window, arm_ids)
        for arm_id in arm_ids:
            found.setdefault(arm_id, ArmCounts(arm_id, 0, 0, 0))
        return [found[arm_id] for arm_id in sorted(found)]

    def _arm_counts(self, connection: Connection, window: Window, arm_ids: Sequence[str]) -> dict[str, ArmCounts]:
        counted = self._counts_source(connection, window, arm_ids, ROLLUP_WIDTHS_US)
        query = (
            select(
                counted.c.arm_id,
                _counted("impression", counted),
                _counted("click", counted),
                _counted("conversion", counted),
            )
            .group_by(counted.c.arm_id)
            .order_by(counted.c.arm_id)
        )
        return {row[0]: ArmCounts(row[0], int(row[1]), int(row[2]), int(row[3])) for row in connection.execute(query)}

    def time_series(
        self,
        window: Window,
        bucket_seconds: float,
        arm_ids: Sequence[str],
        click_weight: float,
        conversion_weight: float,
        max_points: int,
    ) -> dict[str, list[Bucket]] | None:
        """Counts per arm and bucket; buckets are aligned to multiples of their width since the
        epoch. None when the answer would hold more than ``max_points`` buckets in all."""
        bucket_us = to_us(bucket_seconds)
        series: dict[str, list[Bucket]] = {}
        with self.engine.connect() as connection:
            counted = self._counts_source(connection, window, arm_ids, widths_within(bucket_us))
            bucket = (counted.c.time_us // bucket_us).label("bucket")
            query = (
                select(
                    counted.c.arm_id,
                    bucket,
                    _counted("impression", counted),
                    _counted("click", counted),
                    _counted("conversion", counted),
                )
                .group_by(counted.c.arm_id, bucket)
                .order_by(counted.c.arm_id, bucket)
            )
            for points, (arm_id, index, impressions, clicks, conversions) in enumerate(connection.execute(query)):
                if points == max_points:
                    return None
                reward = click_weight * int(clicks) + conversion_weight * int(conversions)
                start = int(index) * bucket_us / MICROS
                series.setdefault(arm_id, []).append(
                    Bucket(start, int(impressions), int(clicks), int(conversions), reward)
                )
        return series

    def export_decisions(
        self, window: Window, arm_ids: Sequence[str], page_size: int, page_token: str, max_bytes: int
    ) -> tuple[list[LoggedDecision], str]:
        """Decisions ordered by (time, id), with their clicks and conversions; returns the next
        token. A page ends at ``page_size`` decisions or before its stored text passes
        ``max_bytes`` (at least one decision), so a page of large decisions stays in bounds."""
        start, end = _bounds_us(window)
        query = select(DECISIONS).where(*self._filters(DECISIONS.c.time_us, DECISIONS.c.arm_id, start, end, arm_ids))
        if page_token:
            after_time, after_id = decode_page_token(page_token)
            query = query.where(
                or_(
                    DECISIONS.c.time_us > after_time,
                    and_(DECISIONS.c.time_us == after_time, DECISIONS.c.decision_id > after_id),
                )
            )
        query = query.order_by(DECISIONS.c.time_us, DECISIONS.c.decision_id).limit(page_size + 1)
        with self.engine.connect() as connection:
            page, more = _page_of(
                connection.execution_options(yield_per=100).execute(query).mappings(), page_size, max_bytes
            )
            feedback = self._feedback_counts(connection, [row["decision_id"] for row in page])
        logged = [LoggedDecision(decision_from_row(row), *feedback.get(row["decision_id"], (0, 0))) for row in page]
        next_token = encode_page_token(page[-1]["time_us"], page[-1]["decision_id"]) if more else ""
        return logged, next_token

    def _feedback_counts(self, connection: Connection, decision_ids: list[str]) -> dict[str, tuple[int, int]]:
        counts: dict[str, tuple[int, int]] = {}
        for start in range(0, len(decision_ids), ID_CHUNK):
            chunk = decision_ids[start : start + ID_CHUNK]
            query = (
                select(
                    EVENTS.c.decision_id,
                    func.sum(case((EVENTS.c.kind == "click", 1), else_=0)),
                    func.sum(case((EVENTS.c.kind == "conversion", 1), else_=0)),
                )
                .where(EVENTS.c.decision_id.in_(chunk))
                .group_by(EVENTS.c.decision_id)
            )
            for decision_id, clicks, conversions in connection.execute(query):
                counts[decision_id] = (int(clicks), int(conversions))
        return counts

    # -- retention -------------------------------------------------------------------------

    def compacted_before(self) -> float | None:
        """Unix seconds before which only the hour roll-ups remain; None if nothing was compacted."""
        with self.engine.connect() as connection:
            value = _horizon_us(connection)
        return None if value is None else value / MICROS

    def compact(self, horizon: float) -> int:
        """Drop raw events, finer roll-ups and decisions before the hour that contains
        ``horizon`` (the hour roll-ups keep their counts). One transaction; returns the number
        of raw events dropped."""
        cutoff_us = (to_us(horizon) // HOUR_US) * HOUR_US
        with self.engine.begin() as connection:
            dropped = connection.execute(EVENTS.delete().where(EVENTS.c.time_us < cutoff_us)).rowcount
            finer = (ROLLUPS.c.width_us < HOUR_US) & (ROLLUPS.c.bucket_us < cutoff_us)
            connection.execute(ROLLUPS.delete().where(finer))
            connection.execute(DECISIONS.delete().where(DECISIONS.c.time_us < cutoff_us))
            self._set_compacted_before(connection, cutoff_us)
        return int(dropped)

    def _set_compacted_before(self, connection: Connection, cutoff_us: int) -> None:
        insert = self._insert(COMPACTION).values(id=1, compacted_before_us=cutoff_us)
        connection.execute(
            insert.on_conflict_do_update(
                index_elements=["id"],
                set_={
                    # The horizon only moves forward (GREATEST, written portably).
                    "compacted_before_us": case(
                        (
                            COMPACTION.c.compacted_before_us > insert.excluded.compacted_before_us,
                            COMPACTION.c.compacted_before_us,
                        ),
                        else_=insert.excluded.compacted_before_us,
                    )
                },
            )
        )


def _multi_row(
    head: str, tail: str, columns: list[str], rows: list[dict[str, Any]], marker: str
) -> Iterator[tuple[str, tuple[Any, ...]]]:
    """``head VALUES (...), (...) tail`` statements with their positional parameters, as many
    rows each as SQLite's limit on parameters allows."""
    placeholders = "(" + ", ".join(marker for _ in columns) + ")"
    per_statement = SQLITE_MAX_PARAMETERS // len(columns)
    for start in range(0, len(rows), per_statement):
        chunk = rows[start : start + per_statement]
        yield (
            f"{head} VALUES {', '.join([placeholders] * len(chunk))} {tail}",
            tuple(row[name] for row in chunk for name in columns),
        )


def _page_of(rows: Any, page_size: int, max_bytes: int) -> tuple[list[Any], bool]:
    """Rows until the page holds ``page_size`` or the next would take it past ``max_bytes`` of
    stored text; and whether rows are left. Rows are read as they come (yield_per)."""
    page: list[Any] = []
    size = 0
    for row in rows:
        row_size = sum(len(value) for value in row.values() if isinstance(value, str))
        if len(page) == page_size or (page and size + row_size > max_bytes):
            rows.close()
            return page, True
        page.append(row)
        size += row_size
    return page, False


def _horizon_us(connection: Connection) -> int | None:
    value = connection.execute(select(COMPACTION.c.compacted_before_us)).scalar()
    return None if value is None else int(value)


def _bounds_us(window: Window) -> tuple[int | None, int | None]:
    """A window's start and end in microseconds (None: open)."""
    start = None if window.start is None else to_us(window.start)
    return start, None if window.end is None else to_us(window.end)


def _pg_array_type(column: Any) -> str:
    """The PostgreSQL array type for a column's values in an unnest() insert."""
    kind = type(column.type).__name__
    return {"BigInteger": "int8[]", "Integer": "int4[]", "Float": "float8[]", "Boolean": "bool[]"}.get(kind, "text[]")
