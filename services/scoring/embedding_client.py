"""TextEncoder over gRPC: how ScoringService reaches EmbeddingService. Thin glue."""

from __future__ import annotations

import threading

import numpy as np

from rectune.v1 import embedding_pb2, embedding_pb2_grpc
from services.common.clients import call_peer, peer_error, retry_unavailable
from services.scoring.core.vectors import Vectors

_MODES = {
    "weighted_mean": embedding_pb2.USER_ENCODING_MODE_WEIGHTED_MEAN,
    "history_text": embedding_pb2.USER_ENCODING_MODE_HISTORY_TEXT,
}


# Whatever EmbeddingService answers, for scoring it is unavailable (vectors stay pending).
UNAVAILABLE = peer_error("embedding: EmbeddingService", passed_on=())


class GrpcTextEncoder:
    def __init__(self, stub: embedding_pb2_grpc.EmbeddingServiceStub) -> None:
        self.stub = stub
        self._model: str | None = None
        self._lock = threading.Lock()

    @retry_unavailable(attempts=5)
    def _model_info(self) -> embedding_pb2.GetModelInfoResponse:
        return self.stub.GetModelInfo(embedding_pb2.GetModelInfoRequest())

    def model_name(self) -> str:
        with self._lock:
            if self._model is None:
                self._model = call_peer("GetModelInfo", self._model_info, UNAVAILABLE).model_name
            return self._model

    def embed(self, texts: list[str]) -> Vectors:
        request = embedding_pb2.EmbedTextsRequest(texts=[t.encode() for t in texts])
        response = call_peer("EmbedTexts", lambda: self.stub.EmbedTexts(request, timeout=120), UNAVAILABLE)
        return np.array([list(v.values) for v in response.vectors], dtype=np.float32)

    def encode_user(
        self, texts: list[str], values: list[float], times: list[float], mode: str, half_life: float
    ) -> Vectors:
        request = embedding_pb2.EncodeUserRequest(mode=_MODES[mode], half_life_seconds=half_life)
        for text, value, when in zip(texts, values, times, strict=True):
            entry = request.history.add(text=text, value=max(value, 0.0))
            entry.time.FromNanoseconds(int(when * 1e9))
        response = call_peer("EncodeUser", lambda: self.stub.EncodeUser(request), UNAVAILABLE)
        return np.array(response.vector.values, dtype=np.float32)
