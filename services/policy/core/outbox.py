"""The outbox forwarder: what the policy acknowledged reaches MetricsService (decisions with
their impressions, feedback events) and ScoringService (interactions), at least once.

Decisions are their own outbox (a column of their table); feedback events and interactions
are rows of the outbox table. What cannot be sent stays queued for the next round."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

import structlog

from rectune.domain.errors import Relayed
from rectune.domain.events import Decision, EventKind, FeedbackEvent, Interaction, listed
from services.policy.core.store import PolicyStore

log = structlog.get_logger(__name__)

OUTBOX_BATCH = 500
Row = TypeVar("Row")


class MetricsSink(Protocol):
    """What the policy needs from MetricsService."""

    def record_decisions(self, decisions: list[Decision]) -> None: ...

    def record_events(self, events: list[FeedbackEvent]) -> None: ...


class InteractionSink(Protocol):
    """Where positive feedback goes back as interactions (ScoringService.AddInteractions)."""

    def add_interactions(self, interactions: list[Interaction]) -> None: ...


class OutboxForwarder:
    def __init__(self, store: PolicyStore) -> None:
        self.store = store

    def drain(self, sink: MetricsSink, interactions: InteractionSink | None = None) -> int:
        """Send decisions (with their impressions), then queued feedback events, to MetricsService,
        and clicks, conversions and ratings to ScoringService as interactions; what fails stays
        queued. Returns how many rows were sent."""
        sent, all_forwarded = self._forward_decisions(sink)
        if not all_forwarded:
            return sent
        senders: dict[str, Callable[[list[dict[str, Any]]], None]] = {
            "decision": lambda rows: sink.record_decisions([_stored_decision(row) for row in rows]),
            "event": lambda rows: sink.record_events([_stored_event(row) for row in rows]),
        }
        if interactions is not None:
            senders["interaction"] = lambda rows: interactions.add_interactions([Interaction(**row) for row in rows])
        while True:
            pending = self.store.pending(OUTBOX_BATCH)
            if not pending:
                return sent
            for kind, send in senders.items():
                batch = [(row_id, payload) for row_id, row_kind, payload in pending if row_kind == kind]
                if not batch:
                    continue
                if not _deliver(send, batch, kind):
                    self.store.failed_attempt([row_id for row_id, _ in batch])
                    return sent
                self.store.delivered([row_id for row_id, _ in batch])
                sent += len(batch)

    def _forward_decisions(self, sink: MetricsSink) -> tuple[int, bool]:
        """Decisions not yet forwarded, oldest first, then their impressions. Returns how many
        were sent and whether that was all (after a failed send the rest waits for the next round)."""
        sent = 0
        while True:
            pending = self.store.unforwarded_decisions(OUTBOX_BATCH)
            if not pending:
                return sent, True
            ids = [decision.decision_id for decision in pending]
            impressions = [decision.impression() for decision in pending]
            if not (
                _deliver(sink.record_decisions, list(zip(ids, pending, strict=True)), "decision")
                and _deliver(sink.record_events, list(zip(ids, impressions, strict=True)), "impression")
            ):
                return sent, False
            self.store.mark_forwarded([decision.decision_id for decision in pending])
            sent += len(pending)


def _deliver(send: Callable[[list[Row]], None], batch: Sequence[tuple[object, Row]], kind: str) -> bool:
    """Send a batch of (row id, row); False when the peer is down (the rows stay queued). Rows
    the peer refuses are sent one by one and the refused ones are logged and dropped."""
    try:
        send([row for _, row in batch])
    except Relayed:
        _send_one_by_one(send, batch)
    except Exception as exc:  # the peer is down: keep the rows, retry next round
        log.warning("outbox_send_failed", kind=kind, rows=len(batch), error=str(exc))
        return False
    return True


def _send_one_by_one(send: Callable[[list[Row]], None], batch: Sequence[tuple[object, Row]]) -> None:
    for row_id, row in batch:
        try:
            send([row])
        except Relayed as exc:
            log.error("outbox_row_refused", row=row_id, error=exc.message)


def _stored_event(payload: dict[str, Any]) -> FeedbackEvent:
    """An event row as the outbox keeps it (JSON of FeedbackEvent, kind by name)."""
    kind = payload.get("kind", "")
    return FeedbackEvent(
        event_id=payload["event_id"],
        decision_id=payload["decision_id"],
        arm_id=payload["arm_id"],
        user_id=payload.get("user_id", ""),
        item_id=payload.get("item_id", ""),
        kind=EventKind(kind) if kind in EventKind.names() else None,
        custom_name=payload.get("custom_name", ""),
        value=payload["value"],
        time=payload.get("time"),
    )


def _stored_decision(payload: dict[str, Any]) -> Decision:
    """A decision row of an outbox written before decisions were their own outbox."""
    return Decision(
        decision_id=payload["decision_id"],
        request_id=payload["request_id"],
        user_id=payload["user_id"],
        arm_id=payload["arm_id"],
        propensity=payload["propensity"],
        propensity_samples=payload["propensity_samples"],
        items=listed(payload["item_ids"]),
        degraded=payload["degraded"],
        algorithm=payload["algorithm"],
        context=payload["context"],
        time=payload["time"],
    )
