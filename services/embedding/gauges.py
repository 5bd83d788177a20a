"""EmbeddingService's Prometheus metrics, read at scrape time: the micro-batcher's queue (texts
waiting, and its bound: a full queue answers RESOURCE_EXHAUSTED) and the sizes of its forward
batches (small batches under load mean the encoder runs below its throughput)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from services.embedding.core.service import EmbeddingCore

BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class QueueGauges(Collector):
    def __init__(self, core: EmbeddingCore) -> None:
        self.core = core

    def collect(self) -> Iterator[GaugeMetricFamily | HistogramMetricFamily]:
        state = self.core.queue_state()
        yield GaugeMetricFamily(
            "rectune_embedding_queue_texts", "Texts waiting for a forward batch", value=state.queued_texts
        )
        yield GaugeMetricFamily(
            "rectune_embedding_queue_capacity_texts",
            "Texts the queue holds before it refuses more (--max-queue-texts)",
            value=state.max_queue_texts,
        )
        yield _histogram(state.batch_sizes)


def _histogram(batch_sizes: dict[int, int]) -> HistogramMetricFamily:
    cumulative = []
    for bound in BATCH_SIZE_BUCKETS:
        cumulative.append((str(bound), sum(n for size, n in batch_sizes.items() if size <= bound)))
    cumulative.append(("+Inf", sum(batch_sizes.values())))
    return HistogramMetricFamily(
        "rectune_embedding_batch_size_texts",
        "Texts per forward batch of the encoder",
        buckets=cumulative,
        sum_value=sum(size * n for size, n in batch_sizes.items()),
    )
