"""gRPC glue of MetricsService: convert -> call the core -> convert."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from rectune.v1 import metrics_pb2, metrics_pb2_grpc
from services.common import convert as shared
from services.common import prototime
from services.metrics import convert
from services.metrics.core.service import MetricsCore


class MetricsServicer(metrics_pb2_grpc.MetricsServiceServicer):
    def __init__(self, core: MetricsCore) -> None:
        self.core = core

    def RecordEvents(self, request: metrics_pb2.RecordEventsRequest, context: Any) -> metrics_pb2.RecordEventsResponse:
        result = self.core.record_events(convert.events(request.events))
        return metrics_pb2.RecordEventsResponse(accepted=result.accepted, duplicates=result.duplicates)

    def StreamEvents(
        self, request_iterator: Iterator[metrics_pb2.StreamEventsRequest], context: Any
    ) -> metrics_pb2.StreamEventsResponse:
        batches = (
            (f"requests[{position}].events", convert.events(batch.events))
            for position, batch in enumerate(request_iterator)
        )
        accepted, duplicates, batches_count = self.core.record_event_stream(batches)
        return metrics_pb2.StreamEventsResponse(accepted=accepted, duplicates=duplicates, batches=batches_count)

    def RecordDecisions(
        self, request: metrics_pb2.RecordDecisionsRequest, context: Any
    ) -> metrics_pb2.RecordDecisionsResponse:
        result = self.core.record_decisions([shared.decision(d) for d in request.decisions])
        return metrics_pb2.RecordDecisionsResponse(accepted=result.accepted, duplicates=result.duplicates)

    def GetArmStats(self, request: metrics_pb2.GetArmStatsRequest, context: Any) -> metrics_pb2.GetArmStatsResponse:
        window = convert.window(request.window, request.HasField("window"))
        stats, samples = self.core.arm_stats(window, list(request.arm_ids), request.posterior_samples)
        return metrics_pb2.GetArmStatsResponse(
            stats=[convert.arm_stats_message(s) for s in stats],
            window=convert.window_message(window),
            posterior_samples=samples,
        )

    def GetTimeSeries(
        self, request: metrics_pb2.GetTimeSeriesRequest, context: Any
    ) -> metrics_pb2.GetTimeSeriesResponse:
        window = convert.window(request.window, request.HasField("window"))
        series = self.core.time_series(window, prototime.duration_seconds(request.bucket), list(request.arm_ids))
        return metrics_pb2.GetTimeSeriesResponse(
            series=[convert.series_message(arm_id, buckets) for arm_id, buckets in series.items()]
        )

    def WatchArmStats(
        self, request: metrics_pb2.WatchArmStatsRequest, context: Any
    ) -> Iterator[metrics_pb2.WatchArmStatsResponse]:
        updates = self.core.watch(
            prototime.duration_seconds(request.window),
            list(request.arm_ids),
            prototime.duration_seconds(request.min_interval),
            context.is_active,
        )
        for as_of, stats in updates:
            yield metrics_pb2.WatchArmStatsResponse(
                stats=[convert.arm_stats_message(s) for s in stats], as_of=prototime.timestamp(as_of)
            )

    def ExportDecisions(
        self, request: metrics_pb2.ExportDecisionsRequest, context: Any
    ) -> metrics_pb2.ExportDecisionsResponse:
        window = convert.window(request.window, request.HasField("window"))
        logged, next_token = self.core.export_decisions(
            window, list(request.arm_ids), request.page_size, request.page_token
        )
        return metrics_pb2.ExportDecisionsResponse(
            decisions=[convert.logged_decision_message(d, self.core.reward_of(d)) for d in logged],
            next_page_token=next_token,
        )
