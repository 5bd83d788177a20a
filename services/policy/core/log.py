"""The decision and feedback log: each request's decision or feedback event is written in a
group commit with the others that arrive within a few milliseconds (see GroupCommit), and
answered only once it is durable."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from rectune.domain.arms import decayed_count
from rectune.domain.errors import AlreadyExists, Duplicate
from rectune.domain.events import Decision, FeedbackEvent
from services.common.group_commit import GroupCommit
from services.policy.core import feedback
from services.policy.core.feedback import FeedbackResult
from services.policy.core.model import ArmCounts, BanditSettings
from services.policy.core.store import PolicyStore

# How long a commit may wait for concurrent requests' decisions to join it (see GroupCommit):
# a commit of eight decisions costs little more than a commit of one.
GROUP_COMMIT_MAX_WAIT_SECONDS = 0.002


def _same_request(existing: Decision, retry: Decision) -> AlreadyExists | None:
    """None when a repeated request id is a retry of the same request; else the error that
    names what differs (a request id is not reused for another user or context)."""
    for name, before, now in (
        ("user_id", existing.user_id, retry.user_id),
        ("context", dict(existing.context), dict(retry.context)),
    ):
        if before != now:
            return AlreadyExists("request_id", f"was used before for a request with another {name}")
    return None


class DecisionLog:
    def __init__(self, store: PolicyStore, settings: Callable[[], BanditSettings]) -> None:
        self.store = store
        self.settings = settings  # the current settings, as the request path caches them
        self._feedback: GroupCommit[FeedbackEvent, FeedbackResult] = GroupCommit(
            self._write_feedback, "feedback", max_wait_seconds=GROUP_COMMIT_MAX_WAIT_SECONDS
        )
        self._decisions: GroupCommit[Decision, Decision] = GroupCommit(
            self._write_decisions, "decisions", max_wait_seconds=GROUP_COMMIT_MAX_WAIT_SECONDS
        )

    def close(self) -> None:
        """Write the decisions and feedback still queued and stop their writers."""
        self._decisions.close()
        self._feedback.close()

    def record_decision(self, decision: Decision) -> Decision:
        """The decision once written; for a repeated request id, the one written first."""
        return self._decisions.submit(decision)

    def record_feedback(self, event: FeedbackEvent) -> FeedbackResult:
        return self._feedback.submit(event)

    # -- decisions -------------------------------------------------------------------------------

    def _write_decisions(self, group: Sequence[Decision]) -> list[Decision | Exception]:
        """Commit a group of concurrent requests' decisions. When one of them repeats a request
        id (a retry racing its original), write them one at a time, so that only that one is
        answered with the stored decision."""
        if len(group) > 1:
            try:
                self._commit_decisions(group)
            except Duplicate:
                pass
            else:
                return list(group)
        return [self._write_alone(decision) for decision in group]

    def _write_alone(self, decision: Decision) -> Decision | Exception:
        try:
            self._commit_decisions([decision])
        except Duplicate as exc:
            existing = self.store.decision_by_request(decision.request_id)
            if existing is None:
                return exc
            return _same_request(existing, decision) or existing
        except Exception as exc:  # this request's own failure, answered to it alone
            return exc
        return decision

    def _commit_decisions(self, group: Sequence[Decision]) -> None:
        """Write the decisions (each is its own outbox entry, with its impression) and count
        their impressions (not for degraded lists)."""
        discount = self.settings().discount_per_step
        with self.store.unit_of_work() as work:
            first_step = work.add_steps(len(group)) - len(group) + 1
            work.insert_decisions(group)
            served: dict[str, list[int]] = {}  # arm id -> the steps of its decisions in this group
            for offset, decision in enumerate(group):
                if not decision.degraded:
                    served.setdefault(decision.arm_id, []).append(first_step + offset)
            for arm_id, steps in served.items():
                impressions = float(len(steps)) if discount is None else decayed_count(steps, discount)
                work.add_to_arm(arm_id, steps[-1], ArmCounts(impressions=impressions), discount)

    # -- feedback --------------------------------------------------------------------------------

    def _write_feedback(self, group: Sequence[FeedbackEvent]) -> list[FeedbackResult | Exception]:
        """Commit a group of concurrent feedback events. When the commit finds an event id taken
        meanwhile (another replica recorded it), each is written alone: by then that id is
        recorded, so only its event is answered as a duplicate."""
        try:
            return self._commit_feedback(group)
        except Duplicate:
            return [self._feedback_alone(event) for event in group]

    def _feedback_alone(self, event: FeedbackEvent) -> FeedbackResult | Exception:
        try:
            return self._commit_feedback([event])[0]
        except Exception as exc:  # this event's own failure, answered to it alone
            return exc

    def _commit_feedback(self, group: Sequence[FeedbackEvent]) -> list[FeedbackResult | Exception]:
        settings = self.settings()
        with self.store.unit_of_work() as work:
            decisions = work.decisions_by_id({event.decision_id for event in group})
            recorded = work.recorded_feedback_ids({event.event_id for event in group})
            changes = feedback.plan(group, decisions, recorded, settings, time.time())
            if changes.new_event_ids:
                work.insert_feedback_ids(changes.new_event_ids)
                step = work.current_step()
                for arm_id, added in changes.arm_counts.items():
                    work.add_to_arm(arm_id, step, added, settings.discount_per_step)
                work.enqueue_many(changes.outbox)
        return changes.outcomes
