"""Proposal sources as arms of a bandit: the language model's share is earned by results.

Each source is a proposer (TPE alone; the language model's pick from a pool TPE drew; the
model's own zero-shot configurations; blends of the best screened configurations, see
tuner.blend). Before each proposal a source is drawn by Thompson sampling from
Beta(1 + wins, 1 + losses), where a source wins when a configuration it proposed beat,
evaluated in full, every configuration screened before it, and loses otherwise (pruned, or
not better). The record is recomputed from the screened history each time (the audit table
keeps each proposal's source), so a restarted tuner keeps it, and the audit shows it. A model
that adds nothing keeps losing and fades towards TPE's share; one that proposes well (a
capable model behind an OpenAI-compatible endpoint) earns more.

The first ``warm_start`` proposals come from the zero-shot source when there is one: before
any search has run is where published work (LLAMBO, SLLMBO) finds language models help most.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace

from rectune.domain.arms import ArmOrigin
from rectune.domain.space import SearchSpace
from tuner.blend import BLEND, BlendProposer
from tuner.proposers import NO_BRIEFING, Briefing, Observation, Proposal, Proposer, TpeProposer

TPE = "tpe"
LM_PICK = "lm-pick"
LM_ZERO_SHOT = "lm-zero-shot"


@dataclass(frozen=True)
class Record:
    """A source's proposals that beat everything screened before them, and the others."""

    wins: int = 0
    losses: int = 0

    @property
    def proposals(self) -> int:
        return self.wins + self.losses

    def draw(self, rng: random.Random) -> float:
        return rng.betavariate(1 + self.wins, 1 + self.losses)


def records(history: Sequence[Observation], sources: Collection[str]) -> dict[str, Record]:
    """Each source's record from the screened history, oldest first."""
    found = {name: Record() for name in sources}
    best = float("-inf")
    for observation in history:
        won = observation.complete and observation.value > best
        if observation.source in found:
            record = found[observation.source]
            found[observation.source] = replace(record, wins=record.wins + won, losses=record.losses + (not won))
        if observation.complete:
            best = max(best, observation.value)
    return found


def describe_records(found: Mapping[str, Record]) -> str:
    return ", ".join(f"{name} {r.wins} of {r.proposals}" for name, r in found.items())


class SourceBandit:
    """A proposer over proposers: each proposal from a source drawn by Thompson sampling."""

    origin = ArmOrigin.TUNER_TPE  # each proposal carries its own source's origin

    def __init__(self, sources: Mapping[str, Proposer], seed: int | None = None, warm_start: int = 2) -> None:
        if not sources:
            raise ValueError("sources: at least one proposer is needed")
        self.sources = dict(sources)
        self.warm_start = warm_start
        self._rng = random.Random(seed)

    def propose(
        self,
        space: SearchSpace,
        count: int,
        taken: Collection[str],
        history: Sequence[Observation] = (),
        briefing: Briefing = NO_BRIEFING,
    ) -> list[Proposal]:
        proposals: list[Proposal] = []
        taken_now = set(taken)
        for _ in range(count):
            found = records(history, self.sources)
            name, why = self.choose(found, len(proposals))
            made = self.sources[name].propose(searched(space, name), 1, taken_now, history, briefing)
            if not made and name != TPE and TPE in self.sources:  # a source that found nothing new
                name, made = TPE, self.sources[TPE].propose(searched(space, TPE), 1, taken_now, history, briefing)
            if not made:
                break
            basis = f"source {name}, {why} (records: {describe_records(found)})"
            proposal = replace(made[0], source=name, rationale=f"{made[0].rationale}; {basis}")
            proposals.append(proposal)
            taken_now.add(proposal.configuration.key())
        return proposals

    def choose(self, found: Mapping[str, Record], drawn_now: int) -> tuple[str, str]:
        """The warm start first, then the source with the highest Thompson draw; and why."""
        zero_shot = found.get(LM_ZERO_SHOT)
        if zero_shot is not None and zero_shot.proposals + drawn_now < self.warm_start:
            return LM_ZERO_SHOT, f"the warm start (the first {self.warm_start} proposals)"
        draws = {name: record.draw(self._rng) for name, record in found.items()}
        return max(draws, key=draws.__getitem__), "the highest Thompson draw"


def searched(space: SearchSpace, source: str) -> SearchSpace:
    """What a source searches: blends are the blend source's alone (tuner.blend)."""
    return space if source == BLEND else space.without(BLEND)


def source_bandit(seed: int | None, pick: Proposer, zero_shot: Proposer, warm_start: int = 2) -> SourceBandit:
    """The tuner's default proposer: TPE alone, a language model's pick from TPE's pool, its
    zero-shot configurations, and blends of the best screened configurations, as arms (the
    model may be local or behind an endpoint)."""
    rng = random.Random(seed)
    sources: dict[str, Proposer] = {
        TPE: TpeProposer(rng.randrange(2**31)),
        LM_PICK: pick,
        LM_ZERO_SHOT: zero_shot,
        BLEND: BlendProposer(rng.randrange(2**31)),
    }
    return SourceBandit(sources, rng.randrange(2**31), warm_start)
