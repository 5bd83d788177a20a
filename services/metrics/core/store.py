"""The event and decision store over SQLAlchemy: SQLite and PostgreSQL share this code.

Every write is one transaction. Recording is idempotent by id: rows whose id is already
stored are counted as duplicates and left alone (INSERT ... ON CONFLICT DO NOTHING also
covers two writers racing on the same id).

Why one module of this size: every query here depends on the same table layout and on the
two dialects' insert paths; split up, a change of a column would be spread over files that
must change together. Its value types and encodings are in records.py.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
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
from services.metrics.core.stats import ArmCounts
from services.metrics.core.tables import CompactionStateRow, DecisionRow, EventRow, HourlyAggregateRow

EVENTS: Table = EventRow.__table__  # type: ignore[attr-defined]
DECISIONS: Table = DecisionRow.__table__  # type: ignore[attr-defined]
HOURLY: Table = HourlyAggregateRow.__table__  # type: ignore[attr-defined]
COMPACTION: Table = CompactionStateRow.__table__  # type: ignore[attr-defined]

# Larger id lists are looked up in chunks (SQLite's limit on bound parameters).
ID_CHUNK = 900


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

    def _write_new(self, table: Table, id_column: str, rows: list[dict[str, Any]]) -> WriteResult:
        """Insert rows whose id is new, in one transaction; repeats within the batch count once.

        Rows go in sorted by id, so writers with overlapping batches take row locks in the
        same order and cannot deadlock each other."""
        unique = sorted({row[id_column]: row for row in rows}.values(), key=lambda row: row[id_column])
        if self._is_sqlite:
            accepted = self._insert_sqlite(table, id_column, unique)
        else:
            accepted = self._insert_postgres(table, id_column, unique)
        return WriteResult(accepted=accepted, duplicates=len(rows) - accepted)

    def _insert_sqlite(self, table: Table, id_column: str, rows: list[dict[str, Any]]) -> int:
        """SQLite: INSERT ... ON CONFLICT DO NOTHING, whose row count says how many were new."""
        statement = self._insert(table).on_conflict_do_nothing(index_elements=[id_column])
        with self.engine.begin() as connection:
            return int(connection.execute(statement, rows).rowcount)

    def _insert_postgres(self, table: Table, id_column: str, rows: list[dict[str, Any]]) -> int:
        """PostgreSQL: one INSERT ... SELECT FROM unnest(column arrays) ON CONFLICT DO NOTHING
        RETURNING id. A single set-based statement per batch (psycopg reports no row count
        for executemany), and RETURNING counts exactly the rows that were new, races included."""
        columns = [column.name for column in table.columns]
        arrays = ", ".join(f"%s::{_pg_array_type(table.c[name])}" for name in columns)
        sql = (
            f"INSERT INTO {table.name} ({', '.join(columns)}) SELECT * FROM unnest({arrays}) "
            f"ON CONFLICT ({id_column}) DO NOTHING RETURNING {id_column}"
        )
        values = [[row[name] for row in rows] for name in columns]
        with self.engine.begin() as connection:
            # Through SQLAlchemy (not a raw cursor), so that a storage fault is mapped to
            # UNAVAILABLE like every other write (services.common.storage_guard).
            return len(connection.exec_driver_sql(sql, tuple(values)).fetchall())

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
        return self._write_new(EVENTS, "event_id", rows)

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
        return self._write_new(DECISIONS, "decision_id", rows)

    # -- reads ----------------------------------------------------------------------------

    def _counts_source(self, window: Window, arm_ids: Sequence[str]) -> Any:
        """Raw events and hourly aggregates in the window, as (arm_id, bucket time, kind, n, value)."""
        raw = select(
            EVENTS.c.arm_id,
            EVENTS.c.time_us.label("time_us"),
            EVENTS.c.kind,
            literal(1).label("n"),
            EVENTS.c.value.label("value"),
        )
        hourly = select(
            HOURLY.c.arm_id,
            HOURLY.c.hour_us.label("time_us"),
            HOURLY.c.kind,
            HOURLY.c.count.label("n"),
            HOURLY.c.value_sum.label("value"),
        )
        raw = raw.where(*self._filters(EVENTS.c.time_us, EVENTS.c.arm_id, window, arm_ids))
        hourly = hourly.where(*self._filters(HOURLY.c.hour_us, HOURLY.c.arm_id, window, arm_ids))
        return union_all(raw, hourly).subquery("counted")

    @staticmethod
    def _filters(time_column: Any, arm_column: Any, window: Window, arm_ids: Sequence[str]) -> list[Any]:
        filters = []
        if window.start is not None:
            filters.append(time_column >= to_us(window.start))
        if window.end is not None:
            filters.append(time_column < to_us(window.end))
        if arm_ids:
            filters.append(arm_column.in_(list(arm_ids)))
        return filters

    def arm_counts(self, window: Window, arm_ids: Sequence[str] = ()) -> list[ArmCounts]:
        """Impressions, clicks and conversions per arm; requested arms with no events count zero."""
        counted = self._counts_source(window, arm_ids)
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
        with self.engine.connect() as connection:
            found = {
                row[0]: ArmCounts(row[0], int(row[1]), int(row[2]), int(row[3])) for row in connection.execute(query)
            }
        for arm_id in arm_ids:
            found.setdefault(arm_id, ArmCounts(arm_id, 0, 0, 0))
        return [found[arm_id] for arm_id in sorted(found)]

    def time_series(
        self,
        window: Window,
        bucket_seconds: float,
        arm_ids: Sequence[str],
        click_weight: float,
        conversion_weight: float,
    ) -> dict[str, list[Bucket]]:
        """Counts per arm and bucket; buckets are aligned to multiples of their width since the epoch."""
        bucket_us = to_us(bucket_seconds)
        counted = self._counts_source(window, arm_ids)
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
        series: dict[str, list[Bucket]] = {}
        with self.engine.connect() as connection:
            for arm_id, index, impressions, clicks, conversions in connection.execute(query):
                reward = click_weight * int(clicks) + conversion_weight * int(conversions)
                start = int(index) * bucket_us / MICROS
                series.setdefault(arm_id, []).append(
                    Bucket(start, int(impressions), int(clicks), int(conversions), reward)
                )
        return series

    def export_decisions(
        self, window: Window, arm_ids: Sequence[str], page_size: int, page_token: str
    ) -> tuple[list[LoggedDecision], str]:
        """Decisions ordered by (time, id), with their clicks and conversions; returns the next token."""
        query = select(DECISIONS).where(*self._filters(DECISIONS.c.time_us, DECISIONS.c.arm_id, window, arm_ids))
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
            rows = list(connection.execute(query).mappings())
            page, more = rows[:page_size], len(rows) > page_size
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
        """Unix seconds before which only hourly aggregates remain; None if nothing was compacted."""
        with self.engine.connect() as connection:
            value = connection.execute(select(COMPACTION.c.compacted_before_us)).scalar()
        return None if value is None else value / MICROS

    def compact(self, horizon: float) -> int:
        """Fold raw events before the hour that contains ``horizon`` into hourly aggregates,
        and drop decisions as old. One transaction; returns the number of events folded."""
        cutoff_us = (to_us(horizon) // HOUR_US) * HOUR_US
        hour = (EVENTS.c.time_us // HOUR_US * HOUR_US).label("hour_us")
        old = EVENTS.c.time_us < cutoff_us
        summed = (
            select(EVENTS.c.arm_id, hour, EVENTS.c.kind, EVENTS.c.custom_name, func.count(), func.sum(EVENTS.c.value))
            .where(old)
            .group_by(EVENTS.c.arm_id, hour, EVENTS.c.kind, EVENTS.c.custom_name)
        )
        with self.engine.begin() as connection:
            rows = [
                {"arm_id": a, "hour_us": int(h), "kind": k, "custom_name": c, "count": int(n), "value_sum": float(v)}
                for a, h, k, c, n, v in connection.execute(summed)
            ]
            for row in rows:
                self._add_to_aggregate(connection, row)
            folded = connection.execute(EVENTS.delete().where(old)).rowcount
            connection.execute(DECISIONS.delete().where(DECISIONS.c.time_us < cutoff_us))
            self._set_compacted_before(connection, cutoff_us)
        return int(folded)

    def _add_to_aggregate(self, connection: Connection, row: dict[str, Any]) -> None:
        insert = self._insert(HOURLY).values(**row)
        keys = ["arm_id", "hour_us", "kind", "custom_name"]
        connection.execute(
            insert.on_conflict_do_update(
                index_elements=keys,
                set_={
                    "count": HOURLY.c.count + insert.excluded.count,
                    "value_sum": HOURLY.c.value_sum + insert.excluded.value_sum,
                },
            )
        )

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


def _pg_array_type(column: Any) -> str:
    """The PostgreSQL array type for a column's values in an unnest() insert."""
    kind = type(column.type).__name__
    return {"BigInteger": "int8[]", "Integer": "int4[]", "Float": "float8[]", "Boolean": "bool[]"}.get(kind, "text[]")
