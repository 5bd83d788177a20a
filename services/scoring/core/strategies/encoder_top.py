"""Fine-tuning the top layers of the BERT encoder inside two_tower.

The encoder's lower layers stay frozen, so they give the same output for an item text at
every step: they run once per text (batched, grouped by length) and their output is kept
for the fit (and, in ``PrefixCache``, for later fits of the same texts and depth). Only the
top ``finetune_layers`` transformer layers, then mean pooling and L2 normalisation as the
encoder does, are trained. Their output replaces EmbeddingService's frozen vector as the
item tower's text input, and the user tower reads the same vectors for its history items
(the history passes through the same fine-tuned item encoder).

One encoder step per epoch: at the start of an epoch every item's vector is computed with
the current top layers; the epoch's tower steps use those vectors and add up the loss's
gradient with respect to them; at the end of the epoch that gradient (averaged over the
steps) flows back through the top layers, chunk by chunk, and AdamW takes one step at
``encoder_learning_rate``. The whole catalogue's texts pass through the trained layers
three times per epoch (two forward passes and one backward), so the cost grows with the
catalogue's tokens, not with the number of training examples; the layers run in eval mode
(no dropout) so that a fit stays seeded and repeatable.
"""

from __future__ import annotations

import copy
import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import nn

from rectune.domain.errors import FailedPrecondition
from services.common.encoder_model import model_source

# Texts per forward pass; the frozen layers' outputs are kept per chunk, padded to its longest text.
CHUNK = 256
MAX_TOKENS = 64  # item texts are titles and short descriptions; longer ones are cut
# The frozen layers' outputs a fit may keep in memory (items x tokens x hidden x 4 bytes).
MAX_CACHED_BYTES = 2 * 1024**3
PREFIXES_KEPT = 2


@dataclass(frozen=True)
class FrozenChunk:
    rows: torch.Tensor  # the items' catalogue positions
    hidden: torch.Tensor  # (len(rows), tokens, hidden): the frozen layers' output
    mask: torch.Tensor  # (len(rows), tokens) attention mask


@dataclass(frozen=True)
class FrozenPrefix:
    """The frozen lower layers' output for every item text, and the encoder's top layers as loaded."""

    chunks: tuple[FrozenChunk, ...]
    top: nn.ModuleList
    depth: int

    @property
    def nbytes(self) -> int:
        return sum(c.hidden.numel() * c.hidden.element_size() for c in self.chunks)


class PrefixCache:
    """The last few frozen prefixes, keyed by encoder model, frozen depth and the texts' hash:
    a tuner screening many two_tower configurations of one catalogue runs the frozen layers once."""

    def __init__(self, kept: int = PREFIXES_KEPT) -> None:
        self.kept = kept
        self._prefixes: OrderedDict[tuple[str, int, str], FrozenPrefix] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0

    def get(self, model_name: str, texts: list[str], layers: int) -> tuple[FrozenPrefix, bool]:
        """The prefix below the top ``layers`` layers, and whether it came from the cache."""
        digest = hashlib.sha256("\x00".join(texts).encode()).hexdigest()
        key = (model_name, layers, digest)
        with self._lock:
            if key in self._prefixes:
                self._prefixes.move_to_end(key)
                self.hits += 1
                return self._prefixes[key], True
        prefix = frozen_prefix(model_source(model_name), texts, layers)
        with self._lock:
            self._prefixes[key] = prefix
            while len(self._prefixes) > self.kept:
                self._prefixes.popitem(last=False)
        return prefix, False


def frozen_prefix(source: str, texts: list[str], layers: int) -> FrozenPrefix:
    """Run the encoder below its top ``layers`` layers over every text, once."""
    # Imported here: transformers loads only when a fit fine-tunes (seconds of start-up otherwise).
    from transformers import AutoModel, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModel.from_pretrained(source, dtype=torch.float32).eval()
    except (OSError, ValueError) as exc:
        raise FailedPrecondition(f"two_tower: cannot load the encoder {source!r} to fine-tune: {exc}") from exc
    encoder_layers = model.encoder.layer
    depth = len(encoder_layers)
    if layers > depth:
        raise FailedPrecondition(
            f"configuration.params['finetune_layers']: the encoder has {depth} layers, got {layers}"
        )
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    chunks, kept_bytes = [], 0
    for start in range(0, len(order), CHUNK):
        rows = order[start : start + CHUNK]
        batch = tokenizer(
            [texts[i] for i in rows], padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt"
        )
        with torch.inference_mode():
            hidden = model(**batch, output_hidden_states=True).hidden_states[depth - layers]
        kept_bytes += hidden.numel() * hidden.element_size()
        if kept_bytes > MAX_CACHED_BYTES:
            raise FailedPrecondition(
                f"two_tower: the frozen layers' output for {len(texts)} item texts passes "
                f"{MAX_CACHED_BYTES // 1024**2} MiB; use finetune_layers 0 on this catalogue"
            )
        chunks.append(FrozenChunk(torch.tensor(rows), hidden.clone(), batch["attention_mask"].clone()))
    top = nn.ModuleList(copy.deepcopy(layer) for layer in encoder_layers[depth - layers :])
    return FrozenPrefix(tuple(chunks), top, depth)


class EncoderTop(nn.Module):
    """The trainable top layers over a frozen prefix: item text vectors with gradients."""

    def __init__(self, prefix: FrozenPrefix, n_items: int) -> None:
        super().__init__()
        self.prefix = prefix
        self.layers = copy.deepcopy(prefix.top).eval()  # this fit's own copy: the cached one stays as loaded
        self.n_items = n_items

    def trained_parameters(self) -> int:
        return sum(p.numel() for p in self.layers.parameters())

    def vectors(self) -> torch.Tensor:
        """Every item's vector with the current weights, no gradient (n_items, hidden)."""
        with torch.no_grad():
            return self._all_vectors()

    def backward(self, gradient: torch.Tensor) -> None:
        """Accumulate d(loss)/d(weights) given d(loss)/d(vectors), one chunk at a time."""
        for chunk in self.prefix.chunks:
            self._chunk_vectors(chunk).backward(gradient[chunk.rows.to(gradient.device)])  # type: ignore[no-untyped-call]

    def _all_vectors(self) -> torch.Tensor:
        width = self.prefix.chunks[0].hidden.shape[-1]
        device = next(self.layers.parameters()).device
        out = torch.zeros(self.n_items, width, device=device)
        for chunk in self.prefix.chunks:
            out[chunk.rows.to(device)] = self._chunk_vectors(chunk)
        return out

    def _chunk_vectors(self, chunk: FrozenChunk) -> torch.Tensor:
        """The top layers, mean pooling over the attention mask and L2 normalisation, as the encoder does."""
        device = next(self.layers.parameters()).device
        hidden, mask = chunk.hidden.to(device), chunk.mask.to(device)
        # Additive mask: 0 where a token is attended to, the float minimum at padding.
        additive = (1.0 - mask[:, None, None, :].float()) * torch.finfo(torch.float32).min
        for layer in self.layers:
            answer = layer(hidden, attention_mask=additive)
            hidden = answer[0] if isinstance(answer, tuple) else answer
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
        return nn.functional.normalize(pooled, p=2, dim=1)


class EncoderTraining:
    """The top layers' optimiser and the once-per-epoch step (see the module's docstring)."""

    def __init__(self, top: EncoderTop, learning_rate: float, weight_decay: float) -> None:
        self.top = top
        self.optimiser = torch.optim.AdamW(top.layers.parameters(), lr=learning_rate, weight_decay=weight_decay)

    def begin_epoch(self, text: torch.Tensor) -> torch.Tensor:
        """This epoch's item vectors, as a leaf that gathers the tower steps' gradients.
        ``text`` already holds the top layers' output for their current weights (the fit
        starts from it, and each end_epoch returns it), so it is not computed again."""
        return text.detach().clone().requires_grad_(True)

    def end_epoch(self, text: torch.Tensor, steps: int) -> torch.Tensor:
        """One step of the top layers from the epoch's mean gradient; the new vectors (no gradient)."""
        if text.grad is not None and steps:
            self.optimiser.zero_grad(set_to_none=True)
            self.top.backward(text.grad / steps)
            self.optimiser.step()
        return self.top.vectors().to(text.device)

    def state(self) -> dict[str, torch.Tensor]:
        return {name: value.detach().clone() for name, value in self.top.layers.state_dict().items()}

    def load(self, state: dict[str, torch.Tensor]) -> None:
        self.top.layers.load_state_dict(state)
