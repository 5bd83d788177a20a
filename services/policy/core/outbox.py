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
from services.policy.core.feedback import event_payload
from services.policy.core.store import DeadLetter, PolicyStore
from services.policy.core.tables import decision_head

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
            # Only the kinds there is a sender for: a drain without ScoringService leaves the
            # interactions queued (and ends) instead of finding them again forever.
            pending = self.store.pending(OUTBOX_BATCH, list(senders))
            if not pending:
                return sent
            for kind, send in senders.items():
                batch = [(row_id, payload) for row_id, row_kind, payload in pending if row_kind == kind]
                if not batch:
                    continue
                refused = _deliver(send, batch, kind)
                if refused is None:
                    self.store.failed_attempt([row_id for row_id, _ in batch])
                    return sent
                dead = [DeadLetter(kind, payload, reason) for _, payload, reason in refused]
                self.store.settle([row_id for row_id, _ in batch], dead)
                sent += len(batch) - len(dead)

    def _forward_decisions(self, sink: MetricsSink) -> tuple[int, bool]:
        """Decisions not yet forwarded, oldest first, then their impressions. Returns how many
        were sent and whether that was all (after a failed send the rest waits for the next round)."""
        sent = 0
        while True:
            pending = self.store.unforwarded_decisions(OUTBOX_BATCH)
            if not pending:
                return sent, True
            ids = [decision.decision_id for decision in pending]
            refused_decisions = _deliver(sink.record_decisions, list(zip(ids, pending, strict=True)), "decision")
            if refused_decisions is None:
                return sent, False
            impressions = [decision.impression() for decision in pending]
            refused_impressions = _deliver(sink.record_events, list(zip(ids, impressions, strict=True)), "impression")
            if refused_impressions is None:
                return sent, False  # sent again next round: MetricsService counts a decision once
            dead = [DeadLetter("decision", decision_payload(d), reason) for _, d, reason in refused_decisions]
            dead += [DeadLetter("event", event_payload(e), reason) for _, e, reason in refused_impressions]
            self.store.mark_forwarded(ids, dead)
            sent += len(pending) - len(refused_decisions)


def _deliver(
    send: Callable[[list[Row]], None], batch: Sequence[tuple[object, Row]], kind: str
) -> list[tuple[object, Row, str]] | None:
    """Send a batch of (row id, row). Returns the rows the peer refused as invalid, each with
    its reason (found by sending one by one), or None when the peer is down (the rows stay
    queued). A refused row never holds up the others."""
    try:
        send([row for _, row in batch])
    except Relayed:
        return _refused_one_by_one(send, batch, kind)
    except Exception as exc:  # the peer is down: keep the rows, retry next round
        log.warning("outbox_send_failed", kind=kind, rows=len(batch), error=str(exc))
        return None
    return []


def _refused_one_by_one(
    send: Callable[[list[Row]], None], batch: Sequence[tuple[object, Row]], kind: str
) -> list[tuple[object, Row, str]] | None:
    refused = []
    for row_id, row in batch:
        try:
            send([row])
        except Relayed as exc:
            log.error("outbox_row_refused", kind=kind, row=str(row_id), reason=exc.message)
            refused.append((row_id, row, exc.message))
        except Exception as exc:  # the peer went down meanwhile: what was sent stays sent (ids dedupe)
            log.warning("outbox_send_failed", kind=kind, rows=len(batch), error=str(exc))
            return None
    return refused


def decision_payload(decision: Decision) -> dict[str, Any]:
    """A decision as an outbox or dead-letter row keeps it (``_stored_decision`` reads it back)."""
    return {
        **decision_head(decision),
        "item_ids": list(decision.item_ids),
        "degraded": decision.degraded,
        "algorithm": decision.algorithm,
        "context": dict(decision.context),
        "time": decision.time,
    }


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
    """A decision row of the outbox: a replayed dead letter, or a row written before decisions
    were their own outbox."""
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
