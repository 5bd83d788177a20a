"""The arms and their states: registration, state changes, and the snapshot of arms that the
request path reads (reused for ``belief_cache_seconds``)."""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Sequence
from typing import NamedTuple, Protocol

from rectune.domain.arms import ArmOrigin, ArmState
from rectune.domain.configuration import Configuration
from rectune.domain.errors import AlreadyExists, Duplicate, FailedPrecondition, InvalidArgument, NotFound, quoted
from services.policy.core.model import Arm
from services.policy.core.store import PolicyStore, StoreWork


class ConfigurationFitter(Protocol):
    def fit_configuration(self, configuration: Configuration) -> str:
        """Have ScoringService validate and fit the configuration; its canonical hash."""
        ...


class ArmsSnapshot(NamedTuple):
    read_at: float  # time.monotonic()
    arms: list[Arm]
    step: int  # decisions counted when the arms were read


class ArmRegistry:
    def __init__(self, store: PolicyStore, fitter: ConfigurationFitter, cache_seconds: float) -> None:
        self.store = store
        self.fitter = fitter  # ScoringService: validates and fits a configuration, and names it
        self.cache_seconds = cache_seconds
        self._cached = ArmsSnapshot(float("-inf"), [], 0)

    def snapshot(self, fresh: bool = False) -> ArmsSnapshot:
        """The arms and the decision count, read together; reused for cache_seconds unless fresh."""
        cached = self._cached
        if fresh or time.monotonic() - cached.read_at > self.cache_seconds:
            arms_now, step = self.store.arms_and_step()
            cached = self._cached = ArmsSnapshot(time.monotonic(), arms_now, step)
        return cached

    def list(self, states: Sequence[ArmState] = ()) -> list[Arm]:
        return [arm for arm in self.snapshot(fresh=True).arms if not states or arm.state in states]

    def put(
        self,
        arm_id: str,
        configuration: Configuration,
        origin: ArmOrigin,
        cap: float,
        state: ArmState,
        reason: str,
    ) -> Arm:
        """Register an arm; ``cap`` is its exposure cap (the caller fills in the default)."""
        if not 0.0 < cap <= 1.0:
            raise InvalidArgument("exposure_cap", f"must be in (0, 1], got {cap}")
        if state in (ArmState.PAUSED, ArmState.RETIRED):
            raise InvalidArgument("initial_state", "must be CANDIDATE, ACTIVE or CHAMPION")
        existing = self.snapshot(fresh=True).arms
        _check_champion_rule(state, existing)
        configuration_hash = self.fitter.fit_configuration(configuration)
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
        try:
            self.store.insert_arm(arm)
        except Duplicate:
            raise AlreadyExists(
                "arm_id", f"arm {arm.arm_id!r} or its configuration was registered concurrently"
            ) from None
        self.snapshot(fresh=True)
        return arm

    def set_state(self, arm_id: str, state: ArmState, reason: str) -> Arm:
        # Read before the write transaction: what a champion that loses its place gets.
        demoted_cap = self.store.settings().default_exposure_cap if state is ArmState.CHAMPION else 1.0
        with self.store.unit_of_work() as work:
            arm = work.arm(arm_id)
            if arm is None:
                raise NotFound("arm_id", f"no arm {quoted(arm_id)}")
            if arm.state is ArmState.RETIRED and state is not ArmState.RETIRED:
                raise FailedPrecondition(f"arm_id: arm {arm_id!r} is retired, which is final")
            if arm.state is ArmState.CHAMPION and state is not ArmState.CHAMPION:
                raise FailedPrecondition(f"arm_id: arm {arm_id!r} is the champion; promote another arm first")
            reason = reason or f"set to {state.value}"
            if state is ArmState.CHAMPION and arm.state is not ArmState.CHAMPION:
                changed = _crowned(work, arm, reason, demoted_cap)
                work.record_promotion(arm_id, changed[1].arm_id if len(changed) > 1 else "", reason)
            else:
                changed = [dataclasses.replace(arm, state=state, updated_at=time.time(), state_reason=reason)]
            work.save_arms(changed)
        self.snapshot(fresh=True)
        return changed[0]

    def rollback(self, reason: str) -> tuple[Arm, str]:
        """Put back the champion that the newest promotion (not yet rolled back) replaced; the
        new champion and the arm it replaced. Rollbacks walk back through the promotions."""
        demoted_cap = self.store.settings().default_exposure_cap
        with self.store.unit_of_work() as work:
            promotion = work.last_promotion()
            if promotion is None or not promotion.previous_arm_id:
                raise FailedPrecondition(
                    "champion: no promotion is recorded, so there is no previous champion to put back"
                )
            previous = work.arm(promotion.previous_arm_id)
            if previous is None or previous.state is ArmState.RETIRED:
                raise FailedPrecondition(
                    f"champion: the previous champion {promotion.previous_arm_id!r} is retired (or gone); "
                    "promote another arm instead"
                )
            replaced = next((a.arm_id for a in work.arms() if a.state is ArmState.CHAMPION), "")
            changed = _crowned(work, previous, reason or f"rolled back from {replaced}", demoted_cap)
            work.mark_rolled_back(promotion.promotion_id)
            work.save_arms(changed)
        self.snapshot(fresh=True)
        return changed[0], replaced


def _crowned(work: StoreWork, arm: Arm, reason: str, demoted_cap: float) -> list[Arm]:
    """The arm as champion (uncapped) and the champion it replaces, now active under
    ``demoted_cap`` (the default exposure cap: an arm that lost its place competes like any
    other, rather than keeping the champion's whole share): to be saved together."""
    now = time.time()
    crowned = dataclasses.replace(arm, state=ArmState.CHAMPION, exposure_cap=1.0, updated_at=now, state_reason=reason)
    replaced = [
        dataclasses.replace(
            other,
            state=ArmState.ACTIVE,
            exposure_cap=demoted_cap,
            updated_at=now,
            state_reason=f"replaced by {arm.arm_id}",
        )
        for other in work.arms()
        if other.state is ArmState.CHAMPION and other.arm_id != arm.arm_id
    ]
    return [crowned, *replaced]


def _check_champion_rule(state: ArmState, existing: Sequence[Arm]) -> None:
    """Exactly one champion: the first arm is it, and a second is promoted, not registered."""
    has_champion = any(a.state is ArmState.CHAMPION for a in existing)
    if state is ArmState.CHAMPION and has_champion:
        raise FailedPrecondition("initial_state: a champion exists; register as ACTIVE and promote it with SetArmState")
    if state is not ArmState.CHAMPION and not has_champion:
        raise FailedPrecondition("initial_state: the first arm must be the champion (the control)")
