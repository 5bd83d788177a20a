"""The policy's ports to ScoringService and MetricsService over gRPC. Thin glue."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc

from rectune.v1 import common_pb2, metrics_pb2, metrics_pb2_grpc, scoring_pb2, scoring_pb2_grpc
from services.common.clients import peer_error
from services.common.errors import Relayed
from services.common.prototime import timestamp
from services.policy.core.model import Configuration, RecommendedItem
from services.scoring import convert as scoring_convert
from services.scoring.core.data import Interaction

KINDS = {
    "impression": common_pb2.EVENT_KIND_IMPRESSION,
    "click": common_pb2.EVENT_KIND_CLICK,
    "conversion": common_pb2.EVENT_KIND_CONVERSION,
    "rating": common_pb2.EVENT_KIND_RATING,
    "custom": common_pb2.EVENT_KIND_CUSTOM,
}
FIT_DEADLINE_SECONDS = 600.0
SCORING = "scoring: ScoringService"
METRICS = "metrics: MetricsService"
# From MetricsService, INVALID_ARGUMENT means the rows themselves are refused (the outbox
# drops them one by one); anything else means try again later.
ROWS_REFUSED = (grpc.StatusCode.INVALID_ARGUMENT,)


def configuration_message(configuration: Configuration) -> common_pb2.Configuration:
    return scoring_convert.configuration_message(configuration.strategy, configuration.params)


class GrpcRanker:
    def __init__(self, stub: scoring_pb2_grpc.ScoringServiceStub) -> None:
        self.stub = stub

    def add_interactions(self, interactions: list[dict[str, Any]]) -> None:
        """Positive feedback as interactions: popularity and item_knn use them at once."""
        request = scoring_pb2.AddInteractionsRequest()
        for row in interactions:
            entry = request.interactions.add(user_id=row["user_id"], item_id=row["item_id"], value=row["value"])
            entry.time.CopyFrom(timestamp(row["time"]))
        try:
            self.stub.AddInteractions(request, timeout=30)
        except grpc.RpcError as exc:
            raise peer_error(exc, SCORING) from None

    def configuration_hash(self, configuration: Configuration) -> str:
        """The canonical hash from ScoringService, which validates the configuration and fits
        it, so that a new arm serves its own list from its first request."""
        request = scoring_pb2.FitConfigurationRequest(configuration=configuration_message(configuration), wait=True)
        try:
            response = self.stub.FitConfiguration(request, timeout=FIT_DEADLINE_SECONDS)
            if response.state == scoring_pb2.FIT_STATE_FAILED:
                raise Relayed(grpc.StatusCode.FAILED_PRECONDITION, f"configuration: the fit failed: {response.error}")
            return str(response.configuration_hash)
        except grpc.RpcError as exc:
            raise peer_error(exc, SCORING) from None

    def rank(
        self, configuration: Configuration, user_id: str, history: Sequence[Interaction], k: int, deadline: float
    ) -> list[RecommendedItem]:
        request = scoring_pb2.RankItemsRequest(configuration=configuration_message(configuration), user_id=user_id, k=k)
        for interaction in history:
            entry = request.history.add(item_id=interaction.item_id, value=interaction.value)
            entry.time.FromNanoseconds(int(interaction.time * 1e9))
        try:
            response = self.stub.RankItems(request, timeout=deadline)
        except grpc.RpcError as exc:
            # Any failure here means "degrade": nothing is passed on as the caller's fault.
            raise peer_error(exc, "ScoringService", passed_on=()) from None
        return [RecommendedItem(i.item_id, i.score, i.probability, i.rank) for i in response.items]


class GrpcMetricsSink:
    def __init__(self, stub: metrics_pb2_grpc.MetricsServiceStub) -> None:
        self.stub = stub

    def record_decisions(self, decisions: list[dict[str, Any]]) -> None:
        messages = []
        for d in decisions:
            message = metrics_pb2.Decision(
                decision_id=d["decision_id"],
                request_id=d["request_id"],
                user_id=d["user_id"],
                arm_id=d["arm_id"],
                propensity=d["propensity"],
                propensity_samples=d["propensity_samples"],
                item_ids=d["item_ids"],
                degraded=d["degraded"],
                algorithm=d["algorithm"],
                context=d["context"],
            )
            message.time.CopyFrom(timestamp(d["time"]))
            messages.append(message)
        try:
            self.stub.RecordDecisions(metrics_pb2.RecordDecisionsRequest(decisions=messages), timeout=30)
        except grpc.RpcError as exc:
            raise peer_error(exc, METRICS, passed_on=ROWS_REFUSED) from None

    def record_events(self, events: list[dict[str, Any]]) -> None:
        messages = []
        for e in events:
            message = common_pb2.Event(
                event_id=e["event_id"],
                decision_id=e["decision_id"],
                arm_id=e["arm_id"],
                user_id=e.get("user_id", ""),
                item_id=e.get("item_id", ""),
                kind=KINDS[e["kind"]],
                custom_name=e.get("custom_name", ""),
                value=e["value"],
            )
            message.time.CopyFrom(timestamp(e["time"]))
            messages.append(message)
        try:
            self.stub.RecordEvents(metrics_pb2.RecordEventsRequest(events=messages), timeout=30)
        except grpc.RpcError as exc:
            raise peer_error(exc, METRICS, passed_on=ROWS_REFUSED) from None
