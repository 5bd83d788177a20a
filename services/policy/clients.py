"""The policy's ports to ScoringService and MetricsService over gRPC. Thin glue."""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from rectune.domain.configuration import Configuration
from rectune.domain.errors import Relayed
from rectune.domain.events import Decision, FeedbackEvent, Interaction, ScoredItem
from rectune.v1 import metrics_pb2, metrics_pb2_grpc, scoring_pb2, scoring_pb2_grpc
from services.common import convert as shared
from services.common.clients import peer_error

FIT_DEADLINE_SECONDS = 600.0
SCORING = "scoring: ScoringService"
METRICS = "metrics: MetricsService"
# From MetricsService, INVALID_ARGUMENT means the rows themselves are refused (the outbox
# drops them one by one); anything else means try again later.
ROWS_REFUSED = (grpc.StatusCode.INVALID_ARGUMENT,)


class GrpcRanker:
    def __init__(self, stub: scoring_pb2_grpc.ScoringServiceStub) -> None:
        self.stub = stub

    def add_interactions(self, interactions: list[Interaction]) -> None:
        """Positive feedback as interactions: popularity and item_knn use them at once."""
        request = scoring_pb2.AddInteractionsRequest(interactions=map(shared.interaction_message, interactions))
        try:
            self.stub.AddInteractions(request, timeout=30)
        except grpc.RpcError as exc:
            raise peer_error(exc, SCORING) from None

    def configuration_hash(self, configuration: Configuration) -> str:
        """The canonical hash from ScoringService, which validates the configuration and fits
        it, so that a new arm serves its own list from its first request."""
        message = shared.configuration_message(configuration)
        request = scoring_pb2.FitConfigurationRequest(configuration=message, wait=True)
        try:
            response = self.stub.FitConfiguration(request, timeout=FIT_DEADLINE_SECONDS)
            if response.state == scoring_pb2.FIT_STATE_FAILED:
                raise Relayed("FAILED_PRECONDITION", f"configuration: the fit failed: {response.error}")
            return str(response.configuration_hash)
        except grpc.RpcError as exc:
            raise peer_error(exc, SCORING) from None

    def rank(
        self, configuration: Configuration, user_id: str, history: Sequence[Interaction], k: int, deadline: float
    ) -> list[ScoredItem]:
        request = scoring_pb2.RankItemsRequest(
            configuration=shared.configuration_message(configuration), user_id=user_id, k=k
        )
        for interaction in history:
            entry = request.history.add(item_id=interaction.item_id, value=interaction.value)
            entry.time.FromNanoseconds(int(interaction.time * 1e9))
        try:
            response = self.stub.RankItems(request, timeout=deadline)
        except grpc.RpcError as exc:
            # Any failure here means "degrade". Scoring's verdict on the request (a bad or
            # unfitted configuration) is told apart from scoring being unreachable or late
            # (Unavailable), which opens the policy's breaker.
            raise peer_error(exc, "ScoringService") from None
        return [shared.scored_item(item) for item in response.items]


class GrpcMetricsSink:
    def __init__(self, stub: metrics_pb2_grpc.MetricsServiceStub) -> None:
        self.stub = stub

    def record_decisions(self, decisions: list[Decision]) -> None:
        request = metrics_pb2.RecordDecisionsRequest(decisions=map(shared.decision_message, decisions))
        try:
            self.stub.RecordDecisions(request, timeout=30)
        except grpc.RpcError as exc:
            raise peer_error(exc, METRICS, passed_on=ROWS_REFUSED) from None

    def record_events(self, events: list[FeedbackEvent]) -> None:
        request = metrics_pb2.RecordEventsRequest(events=map(shared.event_message, events))
        try:
            self.stub.RecordEvents(request, timeout=30)
        except grpc.RpcError as exc:
            raise peer_error(exc, METRICS, passed_on=ROWS_REFUSED) from None
