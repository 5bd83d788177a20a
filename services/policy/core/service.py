"""PolicyService behaviour, free of protobuf: arms, recommend, feedback, outbox, guardrails."""

from __future__ import annotations

import dataclasses
import random
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from typing import Any, NamedTuple, Protocol

import numpy as np
import structlog
from sqlalchemy.exc import IntegrityError

from services.common.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    RectuneError,
    Relayed,
)
from services.common.group_commit import GroupCommit
from services.policy.core import feedback
from services.policy.core.bandits import ArmBelief, Selection, algorithm_named, selection
from services.policy.core.feedback import EVENT_KINDS, FeedbackEvent, FeedbackResult
from services.policy.core.guardrail import Guardrail
from services.policy.core.model import (
    SERVING_STATES,
    Arm,
    ArmCounts,
    ArmOrigin,
    ArmState,
    Configuration,
    Decision,
    PolicySettings,
    RecommendedItem,
)
from services.policy.core.store import PolicyStore

log = structlog.get_logger(__name__)

MAX_K = 1000
FALLBACK = Configuration("popularity", {})
LAST_GOOD_LISTS = 10_000  # users whose last champion list is kept for degraded answers
OUTBOX_BATCH = 500
# How long a commit may wait for concurrent requests' decisions to join it (see GroupCommit):
# a commit of eight decisions costs little more than a commit of one.
GROUP_COMMIT_MAX_WAIT_SECONDS = 0.002


class Ranker(Protocol):
    """What the policy needs from ScoringService."""

    def configuration_hash(self, configuration: Configuration) -> str: ...

    def rank(
        self, configuration: Configuration, user_id: str, history: Sequence[Any], k: int, deadline: float
    ) -> list[RecommendedItem]: ...


class MetricsSink(Protocol):
    """What the policy needs from MetricsService."""

    def record_decisions(self, decisions: list[dict[str, Any]]) -> None: ...

    def record_events(self, events: list[dict[str, Any]]) -> None: ...


class InteractionSink(Protocol):
    """Where positive feedback goes back as interactions (ScoringService.AddInteractions)."""

    def add_interactions(self, interactions: list[dict[str, Any]]) -> None: ...


class _ArmsSnapshot(NamedTuple):
    read_at: float  # time.monotonic()
    arms: list[Arm]
    step: int  # decisions counted when the arms were read


class PolicyCore:
    def __init__(
        self, store: PolicyStore, ranker: Ranker, seed: int | None = None, belief_cache_seconds: float = 1.0
    ) -> None:
        self.store = store
        self.ranker = ranker
        self.rng = np.random.default_rng(seed)  # Monte-Carlo estimates and guardrails, under _rng_lock
        self._rng_lock = threading.Lock()
        # Arm draws and decision ids: random.Random's methods are single C calls, safe across
        # threads without a lock of ours (a contended lock costs more than the draw).
        self._draws = random.Random(seed)
        self._ids = random.Random()  # from OS entropy, never the seed: replicas must not share ids
        self.belief_cache_seconds = belief_cache_seconds
        self._snapshot_cache = _ArmsSnapshot(float("-inf"), [], 0)
        # The last selection distribution and the beliefs it came from (see _selection).
        self._selection_cache: tuple[Hashable, Selection] | None = None
        self._settings_cache: tuple[float, PolicySettings] = (float("-inf"), PolicySettings())
        self._last_good: OrderedDict[str, tuple[RecommendedItem, ...]] = OrderedDict()
        self._lock = threading.Lock()
        self._feedback_log: GroupCommit[FeedbackEvent, FeedbackResult] = GroupCommit(
            self._write_feedback, "feedback", max_wait_seconds=GROUP_COMMIT_MAX_WAIT_SECONDS
        )
        self._decision_log: GroupCommit[Decision, Decision] = GroupCommit(
            self._write_decisions, "decisions", max_wait_seconds=GROUP_COMMIT_MAX_WAIT_SECONDS
        )

    def close(self) -> None:
        """Write the decisions and feedback still queued and stop their writers."""
        self._decision_log.close()
        self._feedback_log.close()

    # -- settings ---------------------------------------------------------------------------

    def settings(self, fresh: bool = True) -> PolicySettings:
        """The stored settings; the request path reuses them for belief_cache_seconds."""
        read_at, cached = self._settings_cache
        if fresh or time.monotonic() - read_at > self.belief_cache_seconds:
            cached = self.store.settings()
            self._settings_cache = (time.monotonic(), cached)
        return cached

    def update_settings(self, changes: dict[str, Any]) -> PolicySettings:
        current = self.store.settings()
        guardrail_changes = changes.pop("guardrail", {})
        updated = dataclasses.replace(
            current, **changes, guardrail=dataclasses.replace(current.guardrail, **guardrail_changes)
        )
        updated.check()
        self.store.save_settings(updated)
        self._settings_cache = (time.monotonic(), updated)
        return updated

    # -- arms ---------------------------------------------------------------------------------

    def _snapshot(self, fresh: bool = False) -> _ArmsSnapshot:
        """The arms and the decision count, read together; the request path reuses them for
        belief_cache_seconds."""
        cached = self._snapshot_cache
        if fresh or time.monotonic() - cached.read_at > self.belief_cache_seconds:
            arms_now, step = self.store.arms_and_step()
            cached = self._snapshot_cache = _ArmsSnapshot(time.monotonic(), arms_now, step)
        return cached

    def _arms(self, fresh: bool = False) -> list[Arm]:
        return self._snapshot(fresh).arms

    def list_arms(self, states: Sequence[ArmState] = ()) -> list[Arm]:
        return [arm for arm in self._arms(fresh=True) if not states or arm.state in states]

    def put_arm(
        self,
        arm_id: str,
        configuration: Configuration,
        origin: ArmOrigin,
        exposure_cap: float,
        state: ArmState,
        reason: str,
    ) -> Arm:
        settings = self.store.settings()
        cap = exposure_cap or settings.default_exposure_cap
        if not 0.0 < cap <= 1.0:
            raise InvalidArgument("exposure_cap", f"must be in (0, 1], got {exposure_cap}")
        if state in (ArmState.PAUSED, ArmState.RETIRED):
            raise InvalidArgument("initial_state", "must be CANDIDATE, ACTIVE or CHAMPION")
        existing = self._arms(fresh=True)
        if state is ArmState.CHAMPION and any(a.state is ArmState.CHAMPION for a in existing):
            raise FailedPrecondition(
                "initial_state: a champion exists; register as ACTIVE and promote it with SetArmState"
            )
        if state is not ArmState.CHAMPION and not any(a.state is ArmState.CHAMPION for a in existing):
            raise FailedPrecondition("initial_state: the first arm must be the champion (the control)")
        configuration_hash = self.ranker.configuration_hash(configuration)
        for arm in existing:
            if arm.configuration_hash == configuration_hash:
                raise AlreadyExists("configuration", f"equals the configuration of arm {arm.arm_id!r}")
            if arm.arm_id == arm_id:
                raise AlreadyExists("arm_id", f"arm {arm_id!r} exists")
        now = time.time()
        arm = Arm(
            arm_id=arm_id or f"arm-{uuid.uuid4().hex[:8]}",
            configuration=configuration,
            configuration_hash=configuration_hash,
            origin=origin,
            state=state,
            exposure_cap=1.0 if state is ArmState.CHAMPION else cap,
            created_at=now,
            updated_at=now,
            state_reason=reason or f"registered ({origin.value})",
            step=self.store.current_step(),
        )
        if not self.store.insert_arm(arm):
            raise AlreadyExists("arm_id", f"arm {arm.arm_id!r} or its configuration was registered concurrently")
        self._arms(fresh=True)
        return arm

    def set_arm_state(self, arm_id: str, state: ArmState, reason: str) -> Arm:
        with self.store.transaction() as connection:
            arm = self.store.arm(connection, arm_id)
            if arm is None:
                raise NotFound("arm_id", f"no arm {arm_id!r}")
            if arm.state is ArmState.RETIRED and state is not ArmState.RETIRED:
                raise FailedPrecondition(f"arm_id: arm {arm_id!r} is retired, which is final")
            if arm.state is ArmState.CHAMPION and state is not ArmState.CHAMPION:
                raise FailedPrecondition(f"arm_id: arm {arm_id!r} is the champion; promote another arm first")
            now = time.time()
            changed = [
                dataclasses.replace(arm, state=state, updated_at=now, state_reason=reason or f"set to {state.value}")
            ]
            if state is ArmState.CHAMPION:
                changed[0] = dataclasses.replace(changed[0], exposure_cap=1.0)
                for other in self.store.arms(connection):
                    if other.state is ArmState.CHAMPION and other.arm_id != arm_id:
                        changed.append(
                            dataclasses.replace(
                                other, state=ArmState.ACTIVE, updated_at=now, state_reason=f"replaced by {arm_id}"
                            )
                        )
            self.store.save_arms(connection, changed)
        self._arms(fresh=True)
        return changed[0]

    # -- recommend ----------------------------------------------------------------------------

    def _beliefs(self, serving: list[Arm], settings: PolicySettings, step: int) -> list[ArmBelief]:
        factor = settings.discount if settings.algorithm == "discounted_thompson" else 1.0
        beliefs = []
        for arm in serving:
            keep = factor ** max(step - arm.step, 0)
            beliefs.append(
                ArmBelief(
                    arm.arm_id,
                    arm.impressions * keep,
                    arm.reward * keep,
                    arm.exposure_cap,
                    arm.state is ArmState.CHAMPION,
                )
            )
        return beliefs

    def recommend(
        self, request_id: str, user_id: str, context: dict[str, str], k: int, history: Sequence[Any]
    ) -> Decision:
        if not request_id:
            raise InvalidArgument("request_id", "must not be empty (it makes retries return the same decision)")
        if not 1 <= k <= MAX_K:
            raise InvalidArgument("k", f"must be between 1 and {MAX_K}, got {k}")
        if not user_id and not history:
            raise InvalidArgument("user_id", "must be set, or history given for a cold user")
        # A repeated request id is found when its decision is written (the id is unique there),
        # which spares every first request a read.
        return self._decision_log.submit(self._decide(request_id, user_id, context, k, history))

    def _decide(
        self, request_id: str, user_id: str, context: dict[str, str], k: int, history: Sequence[Any]
    ) -> Decision:
        """Choose an arm and get its list (or a fallback); the decision is not yet written."""
        settings = self.settings(fresh=False)
        snapshot = self._snapshot()
        serving = [arm for arm in snapshot.arms if arm.state in SERVING_STATES]
        if not serving:
            raise FailedPrecondition("arms: none is serving; register a champion with PutArm")
        chosen_from = self._selection(self._beliefs(serving, settings, snapshot.step), settings)
        index = chosen_from.arm_at(self._draws.random())
        arm = serving[index]
        items, degraded_reason = self._ranked_list(arm, user_id, history, k, settings)
        return Decision(
            # uuid4 would read the OS entropy pool on every request, a system call that lets go of the GIL.
            decision_id=uuid.UUID(int=self._ids.getrandbits(128), version=4).hex,
            request_id=request_id,
            user_id=user_id,
            arm_id=arm.arm_id,
            propensity=float(chosen_from.probabilities[index]),
            propensity_samples=chosen_from.samples,
            items=tuple(items),
            degraded=bool(degraded_reason),
            degraded_reason=degraded_reason,
            algorithm=settings.algorithm,
            context=dict(context),
            created_at=time.time(),
        )

    def _selection(self, beliefs: list[ArmBelief], settings: PolicySettings) -> Selection:
        """The selection distribution for these beliefs, computed once per belief snapshot.

        Thompson sampling chooses each arm with the probability that its posterior draw is the
        highest; while the beliefs are unchanged that probability is too, so it is estimated
        once (Monte Carlo) and each request draws its arm from it, instead of paying for a new
        estimate on every request."""
        algorithm = algorithm_named(settings.algorithm, settings.epsilon, settings.ucb_c, settings.propensity_samples)
        key = (algorithm, tuple(beliefs), settings.champion_min_share)
        cached = self._selection_cache  # one read: another thread may replace it meanwhile
        if cached is not None and cached[0] == key:
            return cached[1]
        with self._rng_lock:
            chosen_from = selection(algorithm, beliefs, settings.champion_min_share, self.rng)
        self._selection_cache = (key, chosen_from)
        return chosen_from

    def _ranked_list(
        self, arm: Arm, user_id: str, history: Sequence[Any], k: int, settings: PolicySettings
    ) -> tuple[list[RecommendedItem], str]:
        """The arm's list, or a fallback with the reason: never an error for the app."""
        try:
            items = self.ranker.rank(arm.configuration, user_id, history, k, settings.scoring_deadline_seconds)
        except Exception as exc:  # scoring failed or was late: degrade, do not fail
            reason = f"scoring failed for arm {arm.arm_id}: {_message(exc)}"
        else:
            if arm.state is ArmState.CHAMPION and user_id:
                with self._lock:
                    self._last_good[user_id] = tuple(items)
                    self._last_good.move_to_end(user_id)
                    while len(self._last_good) > LAST_GOOD_LISTS:
                        self._last_good.popitem(last=False)
            return items, ""
        with self._lock:
            last = self._last_good.get(user_id)
        if last is not None:
            return list(last)[:k], reason + "; served the champion's last list for this user"
        try:
            items = self.ranker.rank(FALLBACK, user_id, history, k, settings.scoring_deadline_seconds)
        except Exception as exc:  # even the fallback failed: an empty list, still not an error
            return [], reason + f"; popularity fallback failed too: {_message(exc)}"
        return items, reason + "; served popularity"

    def _write_decisions(self, group: Sequence[Decision]) -> list[Decision | Exception]:
        """Commit a group of concurrent requests' decisions (see GroupCommit). When one of them
        repeats a request id (a retry racing its original), write them one at a time, so that
        only that one is answered with the stored decision."""
        if len(group) > 1:
            try:
                self._commit_decisions(group)
            except IntegrityError:
                pass
            else:
                return list(group)
        return [self._write_alone(decision) for decision in group]

    def _write_alone(self, decision: Decision) -> Decision | Exception:
        try:
            self._commit_decisions([decision])
        except IntegrityError as exc:
            existing = self.store.decision_by_request(decision.request_id)
            return exc if existing is None else existing
        except Exception as exc:  # this request's own failure, answered to it alone
            return exc
        return decision

    def _commit_decisions(self, group: Sequence[Decision]) -> None:
        """Write the decisions (each is its own outbox entry, with its impression) and count
        their impressions (not for degraded lists)."""
        settings = self.settings(fresh=False)
        with self.store.transaction() as connection:
            first_step = self.store.add_steps(connection, len(group)) - len(group) + 1
            self.store.insert_decisions(connection, group)
            served: dict[str, list[int]] = {}  # arm id -> the steps of its decisions in this group
            for offset, decision in enumerate(group):
                if not decision.degraded:
                    served.setdefault(decision.arm_id, []).append(first_step + offset)
            for arm_id, steps in served.items():
                added = ArmCounts(impressions=_impressions(steps, settings))
                self.store.add_to_arm(connection, arm_id, steps[-1], added, _discount(settings))

    # -- feedback --------------------------------------------------------------------------------

    def record_feedback(
        self,
        event_id: str,
        decision_id: str,
        kind: str,
        custom_name: str,
        item_id: str,
        value: float,
        when: float | None,
    ) -> FeedbackResult:
        if not event_id:
            raise InvalidArgument("event_id", "must not be empty (it makes feedback idempotent)")
        if kind not in EVENT_KINDS:
            raise InvalidArgument("kind", f"must be one of {', '.join(EVENT_KINDS)}")
        if kind == "custom" and not custom_name:
            raise InvalidArgument("custom_name", "must not be empty for a custom event")
        if not np.isfinite(value):
            raise InvalidArgument("value", f"must be a finite number, got {value}")
        now = time.time()
        happened = when if when is not None else now
        event = FeedbackEvent(event_id, decision_id, kind, custom_name, item_id, value, happened, now)
        return self._feedback_log.submit(event)

    def _write_feedback(self, group: Sequence[FeedbackEvent]) -> list[FeedbackResult | Exception]:
        """Commit a group of concurrent feedback events (see GroupCommit). When the commit
        finds an event id taken meanwhile (another replica recorded it), each is written alone:
        by then that id is recorded, so only its event is answered as a duplicate."""
        try:
            return self._commit_feedback(group)
        except IntegrityError:
            return [self._feedback_alone(event) for event in group]

    def _feedback_alone(self, event: FeedbackEvent) -> FeedbackResult | Exception:
        try:
            return self._commit_feedback([event])[0]
        except Exception as exc:  # this event's own failure, answered to it alone
            return exc

    def _commit_feedback(self, group: Sequence[FeedbackEvent]) -> list[FeedbackResult | Exception]:
        settings = self.settings(fresh=False)
        with self.store.transaction() as connection:
            decisions = self.store.decisions_by_id(connection, {event.decision_id for event in group})
            recorded = self.store.recorded_feedback_ids(connection, {event.event_id for event in group})
            changes = feedback.plan(group, decisions, recorded, settings)
            if changes.new_event_ids:
                self.store.insert_feedback_ids(connection, changes.new_event_ids)
                step = self.store.current_step(connection)
                for arm_id, added in changes.arm_counts.items():
                    self.store.add_to_arm(connection, arm_id, step, added, _discount(settings))
                self.store.enqueue_many(connection, changes.outbox)
        return changes.outcomes

    # -- background work ---------------------------------------------------------------------------

    def drain_outbox(self, sink: MetricsSink, interactions: InteractionSink | None = None) -> int:
        """Send decisions (with their impressions), then queued feedback events, to MetricsService,
        and clicks, conversions and ratings to ScoringService as interactions; what fails stays
        queued. Returns how many rows were sent."""
        sent, all_forwarded = self._forward_decisions(sink)
        if not all_forwarded:
            return sent
        senders: list[tuple[str, Any]] = [("decision", sink.record_decisions), ("event", sink.record_events)]
        if interactions is not None:
            senders.append(("interaction", interactions.add_interactions))
        while True:
            pending = self.store.pending(OUTBOX_BATCH)
            if not pending:
                return sent
            for kind, send in senders:
                batch = [(row_id, payload) for row_id, row_kind, payload in pending if row_kind == kind]
                if not batch:
                    continue
                try:
                    send([payload for _, payload in batch])
                except Relayed:  # MetricsService refuses some rows: send one by one, drop the refused
                    self._send_one_by_one(send, batch)
                except Exception as exc:  # MetricsService down: keep the rows, retry next round
                    self.store.failed_attempt([row_id for row_id, _ in batch])
                    log.warning("outbox_send_failed", kind=kind, rows=len(batch), error=str(exc))
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
            for send, payloads in (
                (sink.record_decisions, [_decision_payload(decision) for decision in pending]),
                (sink.record_events, [_impression_payload(decision) for decision in pending]),
            ):
                try:
                    send(payloads)
                except Relayed:
                    self._send_one_by_one(send, list(enumerate(payloads)))
                except Exception as exc:  # MetricsService down: the decisions stay unforwarded
                    log.warning("outbox_send_failed", kind="decision", rows=len(pending), error=str(exc))
                    return sent, False
            self.store.mark_forwarded([decision.decision_id for decision in pending])
            sent += len(pending)

    def _send_one_by_one(self, send: Any, batch: list[tuple[int, dict[str, Any]]]) -> None:
        for row_id, payload in batch:
            try:
                send([payload])
            except Relayed as exc:
                log.error("outbox_row_refused", row=row_id, payload=payload, error=exc.message)

    def check_guardrails(self) -> list[Arm]:
        """Pause active arms that are probably worse than the champion; returns those paused."""
        settings = self.store.settings()
        if not settings.guardrail.enabled:
            return []
        guardrail = Guardrail(
            settings.guardrail.delta, settings.guardrail.threshold, settings.guardrail.min_impressions
        )
        snapshot = self._snapshot(fresh=True)
        current, step = snapshot.arms, snapshot.step
        champions = [a for a in current if a.state is ArmState.CHAMPION]
        if not champions:
            return []
        champion = self._beliefs(champions, settings, step)[0]
        paused = []
        for arm in current:
            if arm.state is not ArmState.ACTIVE:
                continue
            with self._rng_lock:
                reason = guardrail.verdict(self._beliefs([arm], settings, step)[0], champion, self.rng)
            if reason is not None:
                paused.append(self.set_arm_state(arm.arm_id, ArmState.PAUSED, reason))
                log.warning("arm_paused", arm_id=arm.arm_id, reason=reason)
        return paused

    def forget_old_decisions(self) -> None:
        self.store.forget_before(time.time() - self.store.settings().reward_window_seconds)


def _message(exc: Exception) -> str:
    return exc.message if isinstance(exc, RectuneError) else f"{type(exc).__name__}: {exc}"


def _discount(settings: PolicySettings) -> float | None:
    """The factor per decision that beliefs decay by, for discounted Thompson sampling only."""
    return settings.discount if settings.algorithm == "discounted_thompson" else None


def _impressions(steps: Sequence[int], settings: PolicySettings) -> float:
    """One impression per step, as counted at the last of them (discounted when the algorithm discounts)."""
    if settings.algorithm != "discounted_thompson":
        return float(len(steps))
    return sum(settings.discount ** (steps[-1] - step) for step in steps)


def _impression_payload(decision: Decision) -> dict[str, Any]:
    return {
        "event_id": f"{decision.decision_id}:impression",
        "decision_id": decision.decision_id,
        "arm_id": decision.arm_id,
        "user_id": decision.user_id,
        "kind": "impression",
        "value": 1.0,
        "time": decision.created_at,
    }


def _decision_payload(decision: Decision) -> dict[str, Any]:
    return {
        "decision_id": decision.decision_id,
        "request_id": decision.request_id,
        "user_id": decision.user_id,
        "arm_id": decision.arm_id,
        "propensity": decision.propensity,
        "propensity_samples": decision.propensity_samples,
        "item_ids": [item.item_id for item in decision.items],
        "degraded": decision.degraded,
        "algorithm": decision.algorithm,
        "context": decision.context,
        "time": decision.created_at,
    }
