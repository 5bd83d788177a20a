"""Choosing an arm for a request and getting its list, with the degraded fallback.

Nothing here writes: the decision it returns is logged by the DecisionLog."""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from typing import Protocol

import numpy as np

from rectune.domain.arms import SERVING_STATES, ArmState
from rectune.domain.configuration import Configuration
from rectune.domain.errors import FailedPrecondition, RectuneError
from rectune.domain.events import Decision, Interaction, ScoredItem
from services.policy.core.arms import ArmsSnapshot, Hasher
from services.policy.core.bandits import Selection, bandit_for, selection
from services.policy.core.model import Arm, BanditSettings, belief_of

FALLBACK = Configuration("popularity", {})
LAST_GOOD_LISTS = 10_000  # users whose last champion list is kept for degraded answers


class Ranker(Hasher, Protocol):
    """What the policy needs from ScoringService."""

    def rank(
        self, configuration: Configuration, user_id: str, history: Sequence[Interaction], k: int, deadline: float
    ) -> list[ScoredItem]: ...


class ArmChooser:
    def __init__(self, ranker: Ranker, seed: int | None) -> None:
        self.ranker = ranker
        self.rng = np.random.default_rng(seed)  # Monte-Carlo estimates and guardrails, under rng_lock
        self.rng_lock = threading.Lock()
        # Arm draws and decision ids: random.Random's methods are single C calls, safe across
        # threads without a lock of ours (a contended lock costs more than the draw).
        self._draws = random.Random(seed)
        self._ids = random.Random()  # from OS entropy, never the seed: replicas must not share ids
        # The last selection distribution and the beliefs it came from (see _selection).
        self._selection_cache: tuple[Hashable, Selection] | None = None
        self._last_good: OrderedDict[str, tuple[ScoredItem, ...]] = OrderedDict()
        self._lock = threading.Lock()

    def decide(
        self,
        request_id: str,
        user_id: str,
        context: dict[str, str],
        k: int,
        history: Sequence[Interaction],
        settings: BanditSettings,
        snapshot: ArmsSnapshot,
    ) -> Decision:
        """Choose an arm and get its list (or a fallback); the decision is not yet written."""
        serving = [arm for arm in snapshot.arms if arm.state in SERVING_STATES]
        if not serving:
            raise FailedPrecondition("arms: none is serving; register a champion with PutArm")
        chosen_from = self._selection(serving, settings, snapshot.step)
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
            algorithm=settings.algorithm.value,
            context=dict(context),
            time=time.time(),
        )

    def _selection(self, serving: list[Arm], settings: BanditSettings, step: int) -> Selection:
        """The selection distribution for these beliefs, computed once per belief snapshot.

        Thompson sampling chooses each arm with the probability that its posterior draw is the
        highest; while the beliefs are unchanged that probability is too, so it is estimated
        once (Monte Carlo) and each request draws its arm from it, instead of paying for a new
        estimate on every request."""
        beliefs = [belief_of(arm, settings, step) for arm in serving]
        bandit = bandit_for(settings.algorithm, settings.epsilon, settings.ucb_c, settings.propensity_samples)
        key = (bandit, tuple(beliefs), settings.champion_min_share)
        cached = self._selection_cache  # one read: another thread may replace it meanwhile
        if cached is not None and cached[0] == key:
            return cached[1]
        with self.rng_lock:
            chosen_from = selection(bandit, beliefs, settings.champion_min_share, self.rng)
        self._selection_cache = (key, chosen_from)
        return chosen_from

    def _ranked_list(
        self, arm: Arm, user_id: str, history: Sequence[Interaction], k: int, settings: BanditSettings
    ) -> tuple[list[ScoredItem], str]:
        """The arm's list, or a fallback with the reason: never an error for the app."""
        deadline = settings.scoring_deadline_seconds
        try:
            items = self.ranker.rank(arm.configuration, user_id, history, k, deadline)
        except Exception as exc:  # scoring failed or was late: degrade, do not fail
            reason = f"scoring failed for arm {arm.arm_id}: {_message(exc)}"
        else:
            if arm.state is ArmState.CHAMPION and user_id:
                self._remember(user_id, items)
            return items, ""
        with self._lock:
            last = self._last_good.get(user_id)
        if last is not None:
            return list(last)[:k], reason + "; served the champion's last list for this user"
        try:
            items = self.ranker.rank(FALLBACK, user_id, history, k, deadline)
        except Exception as exc:  # even the fallback failed: an empty list, still not an error
            return [], reason + f"; popularity fallback failed too: {_message(exc)}"
        return items, reason + "; served popularity"

    def _remember(self, user_id: str, items: list[ScoredItem]) -> None:
        with self._lock:
            self._last_good[user_id] = tuple(items)
            self._last_good.move_to_end(user_id)
            while len(self._last_good) > LAST_GOOD_LISTS:
                self._last_good.popitem(last=False)


def _message(exc: Exception) -> str:
    return exc.message if isinstance(exc, RectuneError) else f"{type(exc).__name__}: {exc}"
