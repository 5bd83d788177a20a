"""Choosing an arm for a request and getting its list, with the degraded fallback.

Nothing here writes: the decision it returns is logged by the DecisionLog."""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections import Counter, OrderedDict
from collections.abc import Hashable, Sequence
from typing import Protocol

import numpy as np

from rectune.domain.arms import SERVING_STATES, ArmState
from rectune.domain.configuration import Configuration
from rectune.domain.errors import FailedPrecondition, RectuneError, Unavailable
from rectune.domain.events import Decision, Interaction, ScoredItem
from services.policy.core.arms import ArmsSnapshot, ConfigurationFitter
from services.policy.core.bandits import Selection, bandit_for, selection
from services.policy.core.model import Arm, BanditSettings, belief_of

FALLBACK = Configuration("popularity", {})
LAST_GOOD_LISTS = 10_000  # users whose last champion list is kept for degraded answers
# After ScoringService was unreachable or late, requests skip it for this long, then one probes it.
PROBE_SECONDS = 0.5


class Ranker(ConfigurationFitter, Protocol):
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
        self._popular: tuple[ScoredItem, ...] = ()  # the longest popularity list scoring gave
        self._lock = threading.Lock()
        self.breaker = Breaker()
        # Degraded answers served since start, by arm (for the Prometheus counter).
        self.degraded_by_arm: Counter[str] = Counter()

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
        if degraded_reason:
            with self._lock:
                self.degraded_by_arm[arm.arm_id] += 1
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
        """The arm's list, or a fallback with the reason: never an error for the app. While
        ScoringService is unreachable (the breaker is open) it is not called at all, except
        for one probe request every PROBE_SECONDS, so that degraded answers are immediate and
        recovery is prompt."""
        deadline = settings.scoring_deadline_seconds
        if not self.breaker.allows():
            reason = f"scoring unavailable for arm {arm.arm_id}: {self.breaker.last_error}"
            return self._fallback(user_id, k, reason, ask_scoring=False, history=history, deadline=deadline)
        try:
            items = self.ranker.rank(arm.configuration, user_id, history, k, deadline)
        except Unavailable as exc:  # unreachable or late: open the breaker, degrade
            self.breaker.failed(exc.message)
            reason = f"scoring failed for arm {arm.arm_id}: {exc.message}"
            return self._fallback(user_id, k, reason, ask_scoring=False, history=history, deadline=deadline)
        except Exception as exc:  # this arm's own failure (scoring answered): degrade, do not fail
            reason = f"scoring failed for arm {arm.arm_id}: {_message(exc)}"
            return self._fallback(user_id, k, reason, ask_scoring=True, history=history, deadline=deadline)
        self.breaker.succeeded()
        if arm.state is ArmState.CHAMPION and user_id:
            self._remember(user_id, items)
        if arm.configuration.strategy == FALLBACK.strategy:
            self._remember_popular(items)
        return items, ""

    def _fallback(
        self,
        user_id: str,
        k: int,
        reason: str,
        ask_scoring: bool,
        history: Sequence[Interaction],
        deadline: float,
    ) -> tuple[list[ScoredItem], str]:
        """The champion's last list for this user, else popularity (from ScoringService when
        it answers, else the last popularity list it gave), else an empty list."""
        with self._lock:
            last = self._last_good.get(user_id)
        popular = self._popular
        if last is not None:
            return list(last)[:k], reason + "; served the champion's last list for this user"
        if ask_scoring:
            try:
                items = self.ranker.rank(FALLBACK, user_id, history, k, deadline)
            except Exception as exc:  # even the fallback failed
                reason += f"; popularity fallback failed too: {_message(exc)}"
            else:
                self._remember_popular(items)
                return items, reason + "; served popularity"
        if popular:
            return list(popular)[:k], reason + "; served the last popularity list"
        return [], reason + "; no list to fall back on"

    def _remember_popular(self, items: list[ScoredItem]) -> None:
        """Keep the longest popularity list seen: what a degraded answer serves while scoring is away."""
        # No lock: replacing the attribute is atomic, and a race between two requests only
        # decides which of two lists of the same length is kept.
        if len(items) >= len(self._popular):
            self._popular = tuple(items)

    def _remember(self, user_id: str, items: list[ScoredItem]) -> None:
        with self._lock:
            self._last_good[user_id] = tuple(items)
            self._last_good.move_to_end(user_id)
            while len(self._last_good) > LAST_GOOD_LISTS:
                self._last_good.popitem(last=False)


class Breaker:
    """Whether ScoringService is worth calling: closed while it answers; open for
    PROBE_SECONDS after it was unreachable or late, then one request probes it (half-open)."""

    def __init__(self, probe_seconds: float = PROBE_SECONDS) -> None:
        self.probe_seconds = probe_seconds
        self.last_error = ""
        self._open_until = float("-inf")
        self._lock = threading.Lock()

    def allows(self) -> bool:
        if not self.last_error:  # closed, the request path's usual case: no lock, no clock
            return True
        now = time.monotonic()
        with self._lock:
            if now < self._open_until:
                return False
            if self.last_error:  # half-open: this caller probes; the others wait for its answer
                self._open_until = now + self.probe_seconds
            return True

    def failed(self, error: str) -> None:
        with self._lock:
            self.last_error = error
            self._open_until = time.monotonic() + self.probe_seconds

    def succeeded(self) -> None:
        if self.last_error:
            with self._lock:
                self.last_error, self._open_until = "", float("-inf")


def _message(exc: Exception) -> str:
    return exc.message if isinstance(exc, RectuneError) else f"{type(exc).__name__}: {exc}"
