"""The tuner's decisions, free of protobuf and of gRPC (see tuner/clients.py for those).

One cycle: look at the arms and their live statistics; retire the tuner's own arms that
are clearly losing (and, when allowed, promote one that is clearly winning); fill the free
slots with new proposals that pass the offline screen against the champion; record all
of it in the audit table; apply it unless it is a dry run.

The tuner only judges arms it created (origins ``tuner-*``): the control and arms written
by hand are a person's to change.
"""

from __future__ import annotations

import enum
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Protocol

from rectune.domain.arms import SERVING_STATES, ArmOrigin, ArmState
from rectune.domain.comparison import CONFIDENCE, MAX_BASELINE_RATIO
from rectune.domain.configuration import Configuration
from rectune.domain.data import DataShape
from rectune.domain.fidelity import FULL, Fidelity
from rectune.domain.space import SearchSpace
from services.common.config import option
from tuner.errors import TunerError
from tuner.fidelity import ScreenEngine, Staged, SuccessiveHalving
from tuner.proposers import Briefing, Observation, Proposal, Proposer
from tuner.screen import LiveBest, Rejected, Screen, ScreenRule, screened
from tuner.space import default_space, narrowed

LIVE_STATES = (ArmState.CANDIDATE, ArmState.ACTIVE)
TUNER_ORIGINS = (ArmOrigin.TUNER_LM, ArmOrigin.TUNER_TPE, ArmOrigin.TUNER_RANDOM)
MAX_PARALLEL_SCREENS = 64


@dataclass(frozen=True)
class TunerLimits:
    """What the tuner may do to live traffic. Declared once: TunerSettings inherits these
    fields, so each is also a flag and an environment variable."""

    max_live_arms: int = option(
        env="RECTUNE_TUNER_MAX_LIVE_ARMS",
        default=3,
        help="tuner arms competing at once (CANDIDATE or ACTIVE); new ones only fill free slots",
    )
    max_new_arms_per_cycle: int = option(
        env="RECTUNE_TUNER_MAX_NEW_ARMS_PER_CYCLE", default=2, help="new arms registered per cycle at most"
    )
    exposure_cap: float = option(
        env="RECTUNE_TUNER_EXPOSURE_CAP",
        default=0.2,
        help="traffic share cap of each new arm, in (0, 1] (the policy's guardrails apply on top)",
    )
    min_impressions: int = option(
        env="RECTUNE_TUNER_MIN_IMPRESSIONS", default=1000, help="impressions an arm needs before it is judged"
    )
    retire_probability_best: float = option(
        env="RECTUNE_TUNER_RETIRE_PROBABILITY_BEST",
        default=0.02,
        help="retire a tuner arm whose probability of being best falls below this",
    )
    # 0, the default, never promotes: replacing the control is left to a person unless configured.
    promote_probability_best: float = option(
        env="RECTUNE_TUNER_PROMOTE_PROBABILITY_BEST",
        default=0.0,
        help="promote a tuner arm to champion at this probability of being best; 0 never promotes",
    )
    screen_min_ndcg_ratio: float = option(
        env="RECTUNE_TUNER_SCREEN_MIN_NDCG_RATIO",
        default=0.8,
        help="the offline bar: a proposal's NDCG@k against this x the best serving arm's (the champion's unless "
        "another serving arm scores better offline), on the same holdout users",
    )
    screen_confidence: float = option(
        env="RECTUNE_TUNER_SCREEN_CONFIDENCE",
        default=CONFIDENCE,
        help="a proposal goes live only if it clears the bar in at least this share of paired bootstrap "
        "resamples of the holdout users (the rule that also chooses after a search)",
    )
    evaluation_k: int = option(env="RECTUNE_TUNER_EVALUATION_K", default=10, help="k of the offline NDCG@k screen")
    candidates_per_slot: int = option(
        env="RECTUNE_TUNER_CANDIDATES_PER_SLOT",
        default=3,
        help="proposals screened per free slot; multi-fidelity screens prune the unpromising ones cheaply and "
        "the best that pass fill the slots",
    )
    parallel_screens: int = option(
        env="RECTUNE_TUNER_PARALLEL_SCREENS",
        default=1,
        help="proposals of a cycle screened at once; set it to the number of ScoringService training replicas "
        "(--role train), over which the screens are spread",
    )

    def screen_rule(self) -> ScreenRule:
        return ScreenRule(self.evaluation_k, self.screen_min_ndcg_ratio, self.screen_confidence)

    def problems(self) -> list[str]:
        """Each broken rule as 'field: rule, got value'."""
        rules = [
            ("max_live_arms", self.max_live_arms >= 0, ">= 0"),
            ("max_new_arms_per_cycle", self.max_new_arms_per_cycle >= 0, ">= 0"),
            ("exposure_cap", 0.0 < self.exposure_cap <= 1.0, "in (0, 1]"),
            ("min_impressions", self.min_impressions >= 0, ">= 0"),
            ("retire_probability_best", 0.0 <= self.retire_probability_best < 1.0, "in [0, 1)"),
            ("promote_probability_best", 0.0 <= self.promote_probability_best <= 1.0, "in [0, 1]"),
            (
                "screen_min_ndcg_ratio",
                0.0 <= self.screen_min_ndcg_ratio <= MAX_BASELINE_RATIO,
                f"in [0, {MAX_BASELINE_RATIO:g}]",
            ),
            ("screen_confidence", 0.0 <= self.screen_confidence <= 1.0, "in [0, 1]"),
            ("evaluation_k", self.evaluation_k >= 1, ">= 1"),
            ("candidates_per_slot", self.candidates_per_slot >= 1, ">= 1"),
            ("parallel_screens", 1 <= self.parallel_screens <= MAX_PARALLEL_SCREENS, f"in 1..{MAX_PARALLEL_SCREENS}"),
        ]
        return [f"{name}: must be {rule}, got {getattr(self, name)}" for name, ok, rule in rules if not ok]


@dataclass(frozen=True)
class ArmStats:
    """An arm's live statistics over some window (MetricsService)."""

    impressions: int = 0
    ctr: float = 0.0
    probability_best: float = 0.0


@dataclass(frozen=True)
class ArmView:
    """An arm as the tuner sees it: PolicyService's record joined with MetricsService's stats."""

    arm_id: str
    configuration: Configuration
    configuration_hash: str
    origin: ArmOrigin
    state: ArmState
    stats: ArmStats = ArmStats()
    created_at: float = 0.0


class ActionKind(enum.StrEnum):
    """What the tuner does to an arm (its value is the word the audit table and JSON show)."""

    REGISTER = "register"
    RETIRE = "retire"
    PROMOTE = "promote"


# The arm state each kind of action on an existing arm sets.
TARGET_STATES = {ActionKind.RETIRE: ArmState.RETIRED, ActionKind.PROMOTE: ArmState.CHAMPION}


@dataclass(frozen=True)
class Action:
    kind: ActionKind
    arm_id: str  # for register: the id the tuner asks for
    reason: str
    origin: ArmOrigin | None = None  # for register
    configuration: Configuration | None = None
    exposure_cap: float = 0.0
    source: str = ""  # for register: the proposal source (tuner.sources)


@dataclass
class Plan:
    cycle_id: str
    created_at: float
    actions: list[Action] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    screens: dict[str, Screen] = field(default_factory=dict)  # proposal key -> its last screen
    stages: dict[str, Staged] = field(default_factory=dict)  # proposal key -> every stage of its screen
    proposals: list[Proposal] = field(default_factory=list)
    champion_screen: Screen | None = None
    best_live: LiveBest | None = None  # the bar when a serving arm scores better offline than the champion
    # Why the cycle stopped short of proposing, when it did (an empty plan explains itself).
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        def action(a: Action) -> dict[str, Any]:
            out: dict[str, Any] = {"kind": a.kind, "arm_id": a.arm_id, "reason": a.reason}
            if a.configuration is not None:
                out.update(
                    origin=a.origin.value if a.origin else "",
                    configuration=a.configuration.as_dict(),
                    exposure_cap=a.exposure_cap,
                    stages=stages_of(a.configuration),
                )
            return out

        def stages_of(configuration: Configuration) -> list[dict[str, Any]]:
            staged = self.stages.get(configuration.key())
            return [asdict(stage) for stage in staged.stages] if staged else []

        return {
            "cycle_id": self.cycle_id,
            "champion_screen": asdict(self.champion_screen) if self.champion_screen else None,
            "best_live_arm": (
                {"arm_id": self.best_live.arm_id, "screen": asdict(self.best_live.screen)} if self.best_live else None
            ),
            "actions": [action(a) for a in self.actions],
            "notes": list(self.notes),
            "rejected": [
                {
                    "configuration": r.proposal.configuration.as_dict(),
                    "origin": r.proposal.origin.value,
                    "configuration_hash": r.configuration_hash,
                    "reason": r.reason,
                    "stages": stages_of(r.proposal.configuration),
                }
                for r in self.rejected
            ],
        }


NO_CHAMPION = (
    "no champion: PolicyService has no arms, so there is nothing to compare proposals with; register the "
    "control arm first, e.g. `rectune arms put control --champion --strategy popularity`"
)


class Backend(Protocol):
    """What the controller needs from the services (gRPC in tuner/clients.py)."""

    def arms(self) -> list[ArmView]:
        """Every arm, with its statistics over all time."""
        ...

    def stats_since(self, start: float) -> dict[str, ArmStats]:
        """Statistics over the window since ``start`` (unix seconds) of every arm seen in it."""
        ...

    def describe(self) -> tuple[SearchSpace, DataShape]:
        """The search space ScoringService declares and the shape of the data it fits to now."""
        ...

    def evaluate(
        self,
        configuration: Configuration,
        k: int,
        baseline: Configuration | None = None,
        ratio: float = 1.0,
        fidelity: Fidelity = FULL,
    ) -> Screen:
        """Offline metrics; with a baseline, also the paired comparison against ratio x its NDCG."""
        ...

    def register(self, action: Action) -> None: ...

    def set_state(self, arm_id: str, state: ArmState, reason: str) -> None: ...


def judge(arms: Sequence[ArmView], limits: TunerLimits) -> list[Action]:
    """Retire the tuner's clearly losing arms; promote at most one clearly winning arm.

    Each tuner arm's statistics must cover only the time since it went live (see
    Controller.concurrent): over all time, an arm that joined late would be compared with
    its rivals' earlier, different traffic."""
    ripe = [
        a
        for a in arms
        if a.origin in TUNER_ORIGINS and a.state is ArmState.ACTIVE and a.stats.impressions >= limits.min_impressions
    ]
    actions = [
        Action(
            ActionKind.RETIRE,
            a.arm_id,
            f"P(best) {a.stats.probability_best:.3f} < {limits.retire_probability_best} "
            f"over its {a.stats.impressions} impressions since it went live (CTR {a.stats.ctr:.4f})",
        )
        for a in ripe
        if a.stats.probability_best < limits.retire_probability_best
    ]
    if limits.promote_probability_best > 0:
        winners = [a for a in ripe if a.stats.probability_best >= limits.promote_probability_best]
        if winners:
            best = max(winners, key=lambda a: a.stats.probability_best)
            reason = (
                f"P(best) {best.stats.probability_best:.3f} >= {limits.promote_probability_best} "
                f"over its {best.stats.impressions} impressions since it went live (CTR {best.stats.ctr:.4f})"
            )
            actions.append(Action(ActionKind.PROMOTE, best.arm_id, reason))
    return actions


def free_slots(arms: Sequence[ArmView], judged: Sequence[Action], limits: TunerLimits) -> int:
    leaving = {a.arm_id for a in judged}
    live = [a for a in arms if a.origin in TUNER_ORIGINS and a.state in LIVE_STATES and a.arm_id not in leaving]
    return max(0, min(limits.max_live_arms - len(live), limits.max_new_arms_per_cycle))


def screen_proposals(
    proposals: Sequence[Proposal],
    screens: Sequence[Screen],
    champion: Screen,
    existing_hashes: set[str],
    limits: TunerLimits,
    cycle_id: str,
    best_live: LiveBest | None = None,
    slots: int | None = None,
) -> tuple[list[Action], list[Rejected]]:
    """A registration, under the tuner's exposure cap, for each proposal that passes the screen
    (tuner/screen.py), the best first and at most ``slots``; the others with the reason."""
    passed, rejected = screened(proposals, screens, champion, existing_hashes, limits.screen_rule(), best_live)
    if slots is not None and len(passed) > slots:
        ranked = sorted(passed, key=lambda p: screens[p.index].ndcg, reverse=True)
        passed = sorted(ranked[:slots], key=lambda p: p.index)
        taken = f"passed, but {slots} better proposals of this cycle took the free slots"
        rejected.extend(Rejected(p.proposal, screens[p.index].configuration_hash, taken) for p in ranked[slots:])
    registered = [
        Action(
            ActionKind.REGISTER,
            f"{p.proposal.configuration.strategy.replace('_', '-')}-{cycle_id[:6]}-{p.index}",
            p.reason,
            p.proposal.origin,
            p.proposal.configuration,
            limits.exposure_cap,
            p.proposal.source,
        )
        for p in passed
    ]
    return registered, rejected


class Controller:
    def __init__(
        self,
        backend: Backend,
        proposer: Proposer,
        limits: TunerLimits,
        restriction: dict[str, Any] | None = None,
        history: Callable[[], Sequence[Observation]] = tuple,
        engine: ScreenEngine | None = None,
    ) -> None:
        self.backend = backend
        self.proposer = proposer
        self.limits = limits
        self.restriction = restriction
        self.history = history  # configurations screened before, for proposers that learn
        # Multi-fidelity screens by default (tuner/fidelity.py); FullFidelity screens every proposal in full.
        self.engine = engine or SuccessiveHalving()

    def described(self) -> tuple[SearchSpace, DataShape]:
        """The space to search (narrowed by the operator's file, else the default ranges) and the
        data's shape, in one call."""
        space, shape = self.backend.describe()
        return (narrowed(space, self.restriction) if self.restriction else default_space(space)), shape

    def plan(self) -> Plan:
        plan = Plan(cycle_id=uuid.uuid4().hex[:12], created_at=time.time())
        arms = self.backend.arms()
        plan.actions = judge([self.concurrent(a) for a in arms], self.limits)
        champions = [a for a in arms if a.state is ArmState.CHAMPION]
        if not champions:  # nothing to compare with: PolicyService has no arms yet
            plan.notes.append(NO_CHAMPION)
            return plan
        slots = free_slots(arms, plan.actions, self.limits)
        if slots == 0:
            plan.notes.append(
                f"no free slot: the tuner's live arms fill --max-live-arms ({self.limits.max_live_arms}) or this "
                f"cycle's --max-new-arms-per-cycle ({self.limits.max_new_arms_per_cycle}) is 0; a slot frees when "
                "one of them is retired, paused or promoted"
            )
            return plan
        history = self.history()
        # Arms and configurations screened before: a proposal equal to one of them would
        # only repeat a screen whose answer is known.
        taken = {a.configuration.key() for a in arms} | {o.configuration.key() for o in history}
        space, shape = self.described()
        wanted = slots * self.limits.candidates_per_slot
        plan.proposals = self.proposer.propose(space, wanted, taken, history, self.briefing(arms, shape))
        if not plan.proposals:
            plan.notes.append("the proposer found no configuration that was not tried before in the search space")
            return plan
        # Screened again every cycle, not taken from the audit table: ScoringService's
        # interactions grow (feedback, AddInteractions) and so does its holdout, and the bar
        # must come from the same data as the proposals' screens beside it.
        k, ratio = self.limits.evaluation_k, self.limits.screen_min_ndcg_ratio
        plan.champion_screen, plan.best_live, bar = self.bars(arms, champions[0], k, plan.notes)
        # A bar of 0 lets every new proposal through: no comparison is needed for that.
        baseline = bar if ratio > 0 else None
        for proposal, staged in zip(plan.proposals, self.screen_all(plan.proposals, k, baseline, ratio), strict=True):
            plan.stages[proposal.configuration.key()] = staged
            plan.screens[proposal.configuration.key()] = staged.final
        complete = [p for p in plan.proposals if plan.stages[p.configuration.key()].complete]
        for proposal in plan.proposals:
            staged = plan.stages[proposal.configuration.key()]
            if not staged.complete:
                plan.rejected.append(Rejected(proposal, staged.final.configuration_hash, staged.describe()))
        registered, rejected = screen_proposals(
            complete,
            [plan.screens[p.configuration.key()] for p in complete],
            plan.champion_screen,
            {a.configuration_hash for a in arms},
            self.limits,
            plan.cycle_id,
            plan.best_live,
            slots,
        )
        plan.rejected.extend(rejected)
        plan.actions.extend(registered)
        return plan

    def bars(
        self, arms: Sequence[ArmView], champion: ArmView, k: int, notes: list[str]
    ) -> tuple[Screen, LiveBest | None, Configuration]:
        """The champion's screen; the best serving arm's, when it beats the champion's offline;
        and the configuration proposals are compared with (that arm's, else the champion's).
        A serving arm that cannot be screened now is left out of the bar, with a note."""
        champion_screen = self.backend.evaluate(champion.configuration, k)
        best: LiveBest | None = None
        screened_hashes = {champion.configuration_hash}
        for arm in arms:
            if arm.state not in SERVING_STATES or arm.configuration_hash in screened_hashes:
                continue
            screened_hashes.add(arm.configuration_hash)
            try:
                screen = self.backend.evaluate(arm.configuration, k)
            except BackendError as exc:
                notes.append(f"serving arm {arm.arm_id} left out of the bar: its screen failed ({exc})")
                continue
            if screen.ndcg > (best.screen.ndcg if best else champion_screen.ndcg):
                best = LiveBest(arm.arm_id, screen)
        bar = champion.configuration
        if best is not None:
            bar = next(a.configuration for a in arms if a.arm_id == best.arm_id)
        return champion_screen, best, bar

    def screen_all(
        self, proposals: Sequence[Proposal], k: int, baseline: Configuration | None, ratio: float
    ) -> list[Staged]:
        """Each proposal's screen, up to --parallel-screens at once (the channel spreads them over
        the training replicas); in the proposals' order whatever order they finish in."""
        if self.limits.parallel_screens == 1 or len(proposals) == 1:
            return [self.screen(p.configuration, k, baseline, ratio) for p in proposals]
        workers = min(self.limits.parallel_screens, len(proposals))
        with ThreadPoolExecutor(workers, thread_name_prefix="screen") as pool:
            return list(pool.map(lambda p: self.screen(p.configuration, k, baseline, ratio), proposals))

    def screen(self, configuration: Configuration, k: int, baseline: Configuration | None, ratio: float) -> Staged:
        """The multi-fidelity screen; the paired comparison with the baseline at full fidelity."""

        def evaluate(fidelity: Fidelity) -> Screen:
            compared = baseline if fidelity.training_budget >= 1.0 else None
            return self.backend.evaluate(configuration, k, compared, ratio, fidelity)

        staged = self.engine.screen(configuration, evaluate)
        final = staged.final
        if staged.complete and baseline is not None and final.probability_clears is None:
            # Fitted in full at a lower rung (no training budget axis): the comparison is still owed.
            compared = self.backend.evaluate(configuration, k, baseline, ratio)
            staged = Staged(
                configuration, (*staged.stages[:-1], replace(compared, seconds=final.seconds + compared.seconds))
            )
        return staged

    def briefing(self, arms: Sequence[ArmView], shape: DataShape) -> Briefing:
        """The data's shape and the serving arms' click rates, for proposers that read them."""
        serving = sorted((a for a in arms if a.state in SERVING_STATES), key=lambda a: a.stats.ctr, reverse=True)
        live = tuple(
            f"{a.arm_id} ({a.state.value}): {a.configuration.strategy}, click rate {a.stats.ctr:.4f} "
            f"over {a.stats.impressions} impressions"
            for a in serving
        )
        return Briefing(shape.summary(), live)

    def concurrent(self, arm: ArmView) -> ArmView:
        """A live tuner arm with its statistics, and its rivals', since it went live."""
        if arm.origin not in TUNER_ORIGINS or arm.state not in LIVE_STATES:
            return arm
        return replace(arm, stats=self.backend.stats_since(arm.created_at).get(arm.arm_id, ArmStats()))

    def apply(self, plan: Plan) -> list[tuple[Action, str]]:
        """Carry out each action; one that fails is reported and does not stop the others."""
        outcomes: list[tuple[Action, str]] = []
        for action in plan.actions:
            try:
                if action.kind is ActionKind.REGISTER:
                    self.backend.register(action)
                else:
                    self.backend.set_state(action.arm_id, TARGET_STATES[action.kind], action.reason)
                outcomes.append((action, "applied"))
            except BackendError as exc:
                outcomes.append((action, f"failed: {exc}"))
        return outcomes


class BackendError(TunerError):
    """A service refused or could not be reached; the message says which call and why."""
