"""``python -m services.embedding``: serve EmbeddingService.

The server starts at once and answers health NOT_SERVING while the model loads in the
background; it turns SERVING when the model is ready. A model that cannot be loaded
stops the service with a non-zero exit and the reason in the log.
"""

from __future__ import annotations

import re
import sys
import threading
from dataclasses import dataclass

import structlog

from rectune.v1 import embedding_pb2_grpc
from services.common.config import SettingsError, option
from services.common.contracts import EMBEDDING_SERVICE
from services.common.entrypoint import run_service
from services.common.server import RunningService, ServiceRegistration, start_service
from services.common.settings import ServerSettings
from services.embedding.core.encoder import Encoder, EncoderConfig, ModelLoadError
from services.embedding.core.service import EmbeddingCore, EmbeddingLimits
from services.embedding.gauges import QueueGauges
from services.embedding.servicer import EmbeddingServicer

log = structlog.get_logger(__name__)

_DEVICE = re.compile(r"^(auto|cpu|cuda|cuda:\d+)$")
_DTYPES = ("auto", "float32", "float16", "bfloat16")


@dataclass(frozen=True)
class EmbeddingSettings(ServerSettings):
    """EmbeddingService: encodes item texts and user histories."""

    model: str = option(
        env="RECTUNE_EMBEDDING_MODEL",
        default="",
        help="local Hugging Face model directory; empty means the packaged all-MiniLM-L6-v2",
    )
    device: str = option(env="RECTUNE_EMBEDDING_DEVICE", default="auto", help="auto, cpu, cuda or cuda:N")
    dtype: str = option(
        env="RECTUNE_EMBEDDING_DTYPE",
        default="auto",
        help="auto (bfloat16/float16 on CUDA, float32 on CPU), float32, float16, bfloat16",
    )
    max_length: int = option(env="RECTUNE_EMBEDDING_MAX_LENGTH", default=256, help="tokens per text; longer is cut")
    cpu_threads: int = option(env="RECTUNE_EMBEDDING_CPU_THREADS", default=0, help="torch CPU threads; 0 = default")
    max_batch: int = option(env="RECTUNE_EMBEDDING_MAX_BATCH", default=32, help="texts per forward pass")
    max_wait_ms: float = option(
        env="RECTUNE_EMBEDDING_MAX_WAIT_MS", default=5.0, help="longest a text waits for others to share its batch"
    )
    max_queue_texts: int = option(
        env="RECTUNE_EMBEDDING_MAX_QUEUE_TEXTS", default=4096, help="texts waiting; beyond, RESOURCE_EXHAUSTED"
    )
    max_texts_per_request: int = option(
        env="RECTUNE_EMBEDDING_MAX_TEXTS_PER_REQUEST", default=1024, help="texts in one request or bulk chunk"
    )
    max_text_bytes: int = option(env="RECTUNE_EMBEDDING_MAX_TEXT_BYTES", default=16384, help="UTF-8 bytes per text")
    cache_bytes: int = option(
        env="RECTUNE_EMBEDDING_CACHE_BYTES", default=64 * 1024 * 1024, help="text->vector LRU cache size; 0 disables"
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if not _DEVICE.match(self.device):
            raise SettingsError(
                f"--device (env RECTUNE_EMBEDDING_DEVICE): must be auto, cpu, cuda or cuda:N, got {self.device!r}"
            )
        if self.dtype not in _DTYPES:
            raise SettingsError(
                f"--dtype (env RECTUNE_EMBEDDING_DTYPE): must be one of {', '.join(_DTYPES)}, got {self.dtype!r}"
            )
        for name in ("max_length", "max_batch", "max_queue_texts", "max_texts_per_request", "max_text_bytes"):
            if getattr(self, name) < 1:
                raise SettingsError(f"--{name.replace('_', '-')}: must be >= 1, got {getattr(self, name)}")
        if self.max_wait_ms < 0 or self.cache_bytes < 0 or self.cpu_threads < 0:
            raise SettingsError("--max-wait-ms, --cache-bytes, --cpu-threads: must be >= 0")
        if self.max_texts_per_request > self.max_queue_texts:
            raise SettingsError(
                f"--max-texts-per-request ({self.max_texts_per_request}) must be <= --max-queue-texts "
                f"({self.max_queue_texts}): a request must fit in the queue"
            )

    def encoder_config(self) -> EncoderConfig:
        return EncoderConfig(self.model, self.device, self.dtype, self.max_length, self.cpu_threads)

    def limits(self) -> EmbeddingLimits:
        return EmbeddingLimits(
            max_texts_per_request=self.max_texts_per_request,
            max_text_bytes=self.max_text_bytes,
            max_batch=self.max_batch,
            max_wait_ms=self.max_wait_ms,
            max_queue_texts=self.max_queue_texts,
            cache_bytes=self.cache_bytes,
        )


def load_model(service: RunningService, core: EmbeddingCore, config: EncoderConfig) -> None:
    """Load the encoder off the main thread; SERVING once it is ready."""
    try:
        encoder = Encoder(config)
    except ModelLoadError as exc:
        service.fail(str(exc))
        return
    log.info(
        "model_loaded",
        model=encoder.model_name,
        device=str(encoder.device),
        dtype=encoder.dtype_name,
        forward_path=encoder.forward_path,
    )
    if core.attach(encoder):
        service.health.set_serving()


def build(settings: EmbeddingSettings) -> RunningService:
    core = EmbeddingCore(settings.limits())
    registration = ServiceRegistration(
        EMBEDDING_SERVICE, embedding_pb2_grpc.add_EmbeddingServiceServicer_to_server, EmbeddingServicer(core)
    )
    service = start_service("embedding", [registration], settings)
    service.metrics.registry.register(QueueGauges(core))
    service.closers.append(core.close)
    threading.Thread(target=load_model, args=(service, core, settings.encoder_config()), name="load-model").start()
    return service


if __name__ == "__main__":
    sys.exit(run_service("python -m services.embedding", EmbeddingSettings, build))
