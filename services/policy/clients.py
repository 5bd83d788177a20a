"""The policy's ports to ScoringService and MetricsService over gRPC. Thin glue."""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from rectune.domain.configuration import Configuration
from rectune.domain.errors import Relayed
from rectune.domain.events import Decision, FeedbackEvent, Interaction, ScoredItem
from rectune.v1 import metrics_pb2, metrics_pb2_grpc, scoring_pb2, scoring_pb2_grpc
from services.common import convert as shared
from services.common.clients import FIT_DEADLINE_SECONDS, call_peer, peer_error

# Scoring's verdict on a request (a bad or unfitted configuration) is passed on; scoring
# unreachable or late is Unavailable, which opens the policy's breaker and degrades lists.
FROM_SCORING = peer_error("scoring: ScoringService")
RANKING = peer_error("ScoringService")
# From MetricsService, INVALID_ARGUMENT means the rows themselves are refused (the outbox
# drops them one by one); anything else means try again later.
FROM_METRICS = peer_error("metrics: MetricsService", passed_on=(grpc.StatusCode.INVALID_ARGUMENT,))


class GrpcRanker:
    def __init__(
        self, stub: scoring_pb2_grpc.ScoringServiceStub, trainer: scoring_pb2_grpc.ScoringServiceStub | None = None
    ) -> None:
        self.stub = stub  # the replicas that rank
        self.trainer = trainer or stub  # the replicas that fit (ScoringService --role train)

    def add_interactions(self, interactions: list[Interaction]) -> None:
        """Positive feedback as interactions: popularity and item_knn use them at once."""
        request = scoring_pb2.AddInteractionsRequest(interactions=map(shared.interaction_message, interactions))
        call_peer("AddInteractions", lambda: self.stub.AddInteractions(request, timeout=30), FROM_SCORING)

    def fit_configuration(self, configuration: Configuration) -> str:
        """The canonical hash from ScoringService, which validates the configuration and fits
        it, so that a new arm serves its own list from its first request."""
        message = shared.configuration_message(configuration)
        request = scoring_pb2.FitConfigurationRequest(configuration=message, wait=True)
        fit = self.trainer.FitConfiguration
        response = call_peer("FitConfiguration", lambda: fit(request, timeout=FIT_DEADLINE_SECONDS), FROM_SCORING)
        if response.state == scoring_pb2.FIT_STATE_FAILED:
            raise Relayed("FAILED_PRECONDITION", f"configuration: the fit failed: {response.error}")
        return str(response.configuration_hash)

    def rank(
        self, configuration: Configuration, user_id: str, history: Sequence[Interaction], k: int, deadline: float
    ) -> list[ScoredItem]:
        request = scoring_pb2.RankItemsRequest(
            configuration=shared.configuration_message(configuration), user_id=user_id, k=k
        )
        for interaction in history:
            entry = request.history.add(item_id=interaction.item_id, value=interaction.value)
            entry.time.FromNanoseconds(int(interaction.time * 1e9))
        response = call_peer("RankItems", lambda: self.stub.RankItems(request, timeout=deadline), RANKING)
        return [shared.scored_item(item) for item in response.items]


class GrpcMetricsSink:
    def __init__(self, stub: metrics_pb2_grpc.MetricsServiceStub) -> None:
        self.stub = stub

    def record_decisions(self, decisions: list[Decision]) -> None:
        request = metrics_pb2.RecordDecisionsRequest(decisions=map(shared.decision_message, decisions))
        call_peer("RecordDecisions", lambda: self.stub.RecordDecisions(request, timeout=30), FROM_METRICS)

    def record_events(self, events: list[FeedbackEvent]) -> None:
        request = metrics_pb2.RecordEventsRequest(events=map(shared.event_message, events))
        call_peer("RecordEvents", lambda: self.stub.RecordEvents(request, timeout=30), FROM_METRICS)
