"""gRPC glue of ScoringService: convert -> call the core -> convert."""

from __future__ import annotations

from typing import Any

from rectune.domain.configuration import Configuration
from rectune.v1 import scoring_pb2, scoring_pb2_grpc
from services.common import convert as shared
from services.scoring import convert
from services.scoring.core.service import ScoringCore

DEFAULT_K = 10
DEFAULT_HOLDOUT = 0.2


# Beyond a year, "time remaining" means the caller set no deadline.
NO_DEADLINE_SECONDS = 365 * 86400.0


class ScoringServicer(scoring_pb2_grpc.ScoringServiceServicer):
    def __init__(self, core: ScoringCore) -> None:
        self.core = core

    def _configuration(self, request: Any, field: str = "configuration") -> Configuration:
        given = shared.configuration(getattr(request, field), request.HasField(field), field)
        return self.core.configuration(given.strategy, given.params, field)

    def UpsertItems(self, request: scoring_pb2.UpsertItemsRequest, context: Any) -> scoring_pb2.UpsertItemsResponse:
        embedded = self.core.upsert_items(convert.items(request.items), embed=not request.defer_embedding)
        return scoring_pb2.UpsertItemsResponse(upserted=len(request.items), embedded=embedded)

    def AddInteractions(
        self, request: scoring_pb2.AddInteractionsRequest, context: Any
    ) -> scoring_pb2.AddInteractionsResponse:
        return scoring_pb2.AddInteractionsResponse(
            added=self.core.add_interactions(shared.interactions(request.interactions))
        )

    def RankItems(self, request: scoring_pb2.RankItemsRequest, context: Any) -> scoring_pb2.RankItemsResponse:
        configuration = self._configuration(request)
        ranked = self.core.rank(
            configuration,
            request.user_id,
            shared.interactions(request.history),
            request.k,
            list(request.exclude_item_ids),
            seed=request.seed,
            exact=request.exact,
        )
        return scoring_pb2.RankItemsResponse(items=shared.scored_items(ranked), configuration_hash=configuration.hash)

    def ScoreItems(self, request: scoring_pb2.ScoreItemsRequest, context: Any) -> scoring_pb2.ScoreItemsResponse:
        configuration = self._configuration(request)
        scored = self.core.score_items(
            configuration, request.user_id, shared.interactions(request.history), list(request.item_ids)
        )
        return scoring_pb2.ScoreItemsResponse(items=shared.scored_items(scored), configuration_hash=configuration.hash)

    def FitConfiguration(
        self, request: scoring_pb2.FitConfigurationRequest, context: Any
    ) -> scoring_pb2.FitConfigurationResponse:
        remaining = context.time_remaining() if request.wait else None
        if remaining is not None and remaining > NO_DEADLINE_SECONDS:
            remaining = None  # a call without a deadline: grpc reports ~2^63 ns, past what a wait accepts
        return convert.fit_response(self.core.fit(self._configuration(request), request.wait, remaining))

    def EvaluateConfiguration(
        self, request: scoring_pb2.EvaluateConfigurationRequest, context: Any
    ) -> scoring_pb2.EvaluateConfigurationResponse:
        configuration = self._configuration(request)
        baseline = self._configuration(request, "baseline") if request.HasField("baseline") else None
        evaluation = self.core.evaluate(
            configuration,
            request.k or DEFAULT_K,
            request.holdout_fraction or DEFAULT_HOLDOUT,
            baseline,
            request.baseline_ratio or 1.0,
            convert.fidelity(request.fidelity),
        )
        return convert.evaluation_response(configuration.hash, evaluation)

    def DescribeSearchSpace(
        self, request: scoring_pb2.DescribeSearchSpaceRequest, context: Any
    ) -> scoring_pb2.DescribeSearchSpaceResponse:
        return convert.search_space_response(self.core.spaces(list(request.strategies)), self.core.data.shape())

    def ListModels(self, request: scoring_pb2.ListModelsRequest, context: Any) -> scoring_pb2.ListModelsResponse:
        models = sorted(self.core.freshness_of_all(), key=lambda fresh: -fresh.served)
        return scoring_pb2.ListModelsResponse(models=[convert.freshness_message(fresh) for fresh in models])
