"""The proposer and the screen engine a search uses, built from its settings (the tuner's
and `rectune study`'s); the language model loads only for the proposers that need it."""

from __future__ import annotations

from tuner.blend import Unblended
from tuner.fidelity import FullFidelity, ScreenEngine, SuccessiveHalving
from tuner.proposers import PROPOSERS, Proposer
from tuner.settings import SearchSettings
from tuner.sources import source_bandit


def make_proposer(settings: SearchSettings, k: int) -> Proposer:
    """The proposer by name; only ``sources`` proposes blends (the others search without them)."""
    seed = settings.seed or None
    if settings.proposer not in ("lm", "pool", "sources"):
        return Unblended(PROPOSERS[settings.proposer](seed))
    pick, zero_shot = language_model_proposers(settings, seed, k)
    if settings.proposer == "pool":
        return Unblended(pick)
    if settings.proposer == "lm":
        return Unblended(zero_shot)
    return source_bandit(seed, pick, zero_shot)


def language_model_proposers(settings: SearchSettings, seed: int | None, k: int) -> tuple[Proposer, Proposer]:
    """The model's pick from TPE's pool, and its own zero-shot proposals: a local model, or
    one behind an OpenAI-compatible endpoint."""
    from tuner.pool_proposer import PoolProposer

    if settings.lm_endpoint:
        from tuner.endpoint import ChatEndpoint, EndpointModel
        from tuner.endpoint_proposer import EndpointProposer

        endpoint = ChatEndpoint(
            settings.lm_endpoint, settings.lm_model, settings.lm_api_key, settings.lm_timeout_seconds
        )
        keep_words = settings.lm_rationale_tokens > 0
        return (
            PoolProposer(EndpointModel(endpoint), seed, k=k),
            EndpointProposer(endpoint, seed, settings.lm_temperature, k, keep_words),
        )
    # Imported here: torch and transformers load only for the language-model proposers.
    from tuner.language_model import LanguageModel
    from tuner.lm_proposer import LanguageModelProposer

    model = LanguageModel(settings.lm_model, settings.lm_cache_dir)
    return (
        PoolProposer(model, seed, k=k),
        LanguageModelProposer(model, seed, settings.lm_temperature, settings.lm_rationale_tokens, k=k),
    )


def make_engine(settings: SearchSettings) -> ScreenEngine:
    return FullFidelity() if settings.screening == "full" else SuccessiveHalving()
