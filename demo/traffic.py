"""The traffic loop: simulated users call PolicyService.Recommend, click by the click model,
and send their feedback back with a delay. For every request the champion's own list is
also asked from ScoringService and scored with the same random draws: the clicks that
serving the champion alone would have earned (the counterfactual)."""

from __future__ import annotations

import heapq
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np

from demo.simulation import ClickModel, MovingWorld, Release, SimulatedUsers, clicks
from rectune.domain.events import Interaction
from rectune.v1 import common_pb2, policy_pb2, policy_pb2_grpc, scoring_pb2, scoring_pb2_grpc
from services.common.prototime import timestamp

K = 10


@dataclass
class Tally:
    """The simulator's own counters (the report recomputes the served ones from MetricsService)."""

    requests: int = 0
    degraded: int = 0
    clicks: int = 0
    counterfactual_clicks: int = 0
    timeline: list[tuple[float, int, int]] = field(default_factory=list)  # (time, clicks, counterfactual)


class DelayedFeedback:
    """Sends feedback when it falls due (0 to max_delay seconds after the impression)."""

    def __init__(self, stub: policy_pb2_grpc.PolicyServiceStub, max_delay: float, rng: np.random.Generator) -> None:
        self.stub = stub
        self.max_delay = max_delay
        self.rng = rng
        self._queue: list[tuple[float, int, policy_pb2.RecordFeedbackRequest]] = []
        self._counter = 0
        self._condition = threading.Condition()
        self._closing = False
        self.sent = 0
        self._thread = threading.Thread(target=self._run, name="feedback", daemon=True)
        self._thread.start()

    def add(self, request: policy_pb2.RecordFeedbackRequest) -> None:
        with self._condition:
            due = time.monotonic() + float(self.rng.uniform(0, self.max_delay))
            heapq.heappush(self._queue, (due, self._counter, request))
            self._counter += 1
            self._condition.notify()

    def _run(self) -> None:
        while True:
            with self._condition:
                while not self._queue and not self._closing:
                    self._condition.wait()
                if not self._queue:
                    return
                due, _, request = self._queue[0]
                wait = due - time.monotonic()
                if wait > 0 and not self._closing:
                    self._condition.wait(wait)
                    continue
                heapq.heappop(self._queue)
            self.stub.RecordFeedback(request, timeout=30)
            self.sent += 1

    def close(self) -> None:
        """Send everything still queued at once, then stop."""
        with self._condition:
            self._closing = True
            self._condition.notify()
        self._thread.join()


class Traffic:
    def __init__(
        self,
        policy: policy_pb2_grpc.PolicyServiceStub,
        scoring: scoring_pb2_grpc.ScoringServiceStub,
        users: SimulatedUsers,
        champion: common_pb2.Configuration,
        model: ClickModel,
        seed: int,
        rate_per_second: float,
        feedback_delay: float = 2.0,
    ) -> None:
        self.policy, self.scoring, self.users, self.champion, self.model = policy, scoring, users, champion, model
        self.rng = np.random.default_rng(seed)
        self.rate = rate_per_second
        self.feedback = DelayedFeedback(policy, feedback_delay, np.random.default_rng(seed + 1))
        self.tally = Tally()

    def run(self, seconds: float, stop: threading.Event) -> Tally:
        started = time.monotonic()
        interval = 1.0 / self.rate
        next_at = started
        while not stop.is_set() and time.monotonic() - started < seconds:
            self.request(self.tally.requests)
            next_at += interval
            stop.wait(max(0.0, next_at - time.monotonic()))
        self.feedback.close()
        return self.tally

    def next_user(self, n: int) -> tuple[str, dict[str, float]]:
        """Who asks for request ``n``, and what they would like (item -> rating)."""
        user = self.users.pick(self.rng)
        return user, self.users.truth.get(user, {})

    def after(self, n: int) -> None:
        """What happens once request ``n`` was answered (nothing in the static world)."""

    def request(self, n: int) -> None:
        user, truth = self.next_user(n)
        uniforms, noise = self.rng.random(K), self.rng.uniform(1 - self.model.noise, 1 + self.model.noise, K)
        decision = self.policy.Recommend(
            policy_pb2.RecommendRequest(request_id=f"demo-{n}", user_id=user, k=K), timeout=10
        )
        served = [item.item_id for item in decision.items]
        clicked = clicks(self.model, truth, served, uniforms, noise)
        for rank, (item, hit) in enumerate(zip(served, clicked, strict=True), start=1):
            if hit:
                self.feedback.add(
                    policy_pb2.RecordFeedbackRequest(
                        event_id=f"{decision.decision_id}:click:{rank}",
                        decision_id=decision.decision_id,
                        kind=common_pb2.EVENT_KIND_CLICK,
                        item_id=item,
                        value=1.0,
                    )
                )
        try:
            counterfactual = self.scoring.RankItems(
                scoring_pb2.RankItemsRequest(configuration=self.champion, user_id=user, k=K), timeout=10
            )
            champion_list = [item.item_id for item in counterfactual.items]
        except grpc.RpcError:
            champion_list = served
        self.tally.requests += 1
        self.tally.degraded += int(decision.degraded)
        self.tally.clicks += sum(clicked)
        self.tally.counterfactual_clicks += sum(clicks(self.model, truth, champion_list, uniforms, noise))
        self.tally.timeline.append((time.time(), self.tally.clicks, self.tally.counterfactual_clicks))
        self.after(n)


class MovingTraffic(Traffic):
    """The moving world (DEMO_SCENARIO=moving, see MovingWorld): before each request the
    items released since and the users' own interactions go to ScoringService (as happening
    now), the request comes from the user of the next real interaction, who likes what they
    rated later, and that interaction happens after the request."""

    def __init__(self, world: MovingWorld, steps: list[Release], *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.world, self.steps = world, steps

    def next_user(self, n: int) -> tuple[str, dict[str, float]]:
        step = self.steps[min(n, len(self.steps) - 1)]
        now = time.time()
        if step.items:
            items = [scoring_pb2.Item(item_id=item_id, text=self.world.texts[item_id]) for item_id in step.items]
            self.scoring.UpsertItems(scoring_pb2.UpsertItemsRequest(items=items), timeout=60)
        if step.interactions:
            self._add(step.interactions, now)
        return step.user_id, self.world.interest(step.user_id, step.asker.time)

    def after(self, n: int) -> None:
        self._add([self.steps[min(n, len(self.steps) - 1)].asker], time.time())

    def _add(self, rows: list[Interaction], now: float) -> None:
        request = scoring_pb2.AddInteractionsRequest(
            interactions=[
                common_pb2.Interaction(user_id=row.user_id, item_id=row.item_id, value=row.value, time=timestamp(now))
                for row in rows
            ]
        )
        self.scoring.AddInteractions(request, timeout=30)
