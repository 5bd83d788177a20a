"""The tuner's settings: where the services are, where the audit table lives, how it proposes,
and its limits. Flags, then environment variables, then defaults, read once."""

from __future__ import annotations

import dataclasses
import tempfile
from dataclasses import dataclass
from pathlib import Path

from services.common.config import SettingsError, option
from services.common.settings import ClientSettings, check_address, check_database_url
from tuner.controller import TunerLimits
from tuner.proposers import PROPOSERS

# "lm", "pool" and "sources" are built apart from the others: they load torch and a model only when chosen.
PROPOSER_NAMES = (*PROPOSERS, "lm", "pool", "sources")
SCREENINGS = ("successive-halving", "full")
MAX_RATIONALE_TOKENS = 200  # one sentence; more only slows each proposal


@dataclass(frozen=True)
class SearchSettings:
    """How the tuner searches: its proposer (and language model) and its screens. Shared by
    the tuner (TunerSettings inherits these fields) and `rectune study`."""

    proposer: str = option(
        env="RECTUNE_TUNER_PROPOSER",
        default="sources",
        help="where proposals come from: sources (TPE, the language model's pick from TPE's pool and its "
        "zero-shot proposals, each source's share earned by its screens; see docs/tuner.md), pool (the model "
        "picks from TPE's pool every time), tpe, random, or lm (the model writes each)",
    )
    screening: str = option(
        env="RECTUNE_TUNER_SCREENING",
        default="successive-halving",
        help="successive-halving (proposals first fitted with a share of their training budget, the promising "
        "ones in full) or full (every proposal fitted in full)",
    )
    lm_model: str = option(
        env="RECTUNE_TUNER_LM_MODEL",
        default="",
        help="pool and lm proposers: a local Hugging Face model directory (empty = the packaged "
        "SmolLM2-135M-Instruct), or with --lm-endpoint the model name the endpoint serves",
    )
    lm_endpoint: str = option(
        env="RECTUNE_TUNER_LM_ENDPOINT",
        default="",
        help="pool and lm proposers: base URL of an OpenAI-compatible API (e.g. http://vllm:8000/v1); "
        "empty = a local model. The pool proposer reads the answer's top_logprobs",
    )
    lm_api_key: str = option(env="RECTUNE_TUNER_LM_API_KEY", default="", help="the endpoint's bearer key")
    lm_timeout_seconds: float = option(
        env="RECTUNE_TUNER_LM_TIMEOUT_SECONDS",
        default=60.0,
        help="deadline of one endpoint request (transient failures are retried twice, with backoff)",
    )
    lm_cache_dir: str = option(
        env="RECTUNE_TUNER_LM_CACHE_DIR",
        default=str(Path(tempfile.gettempdir()) / "rectune-lm"),
        help="pool and lm proposers: where the packaged model's dequantised weights are kept (made on first use)",
    )
    lm_temperature: float = option(
        env="RECTUNE_TUNER_LM_TEMPERATURE",
        default=1.0,
        help="lm proposer: sampling temperature over the allowed values; 0 always takes the likeliest",
    )
    lm_rationale_tokens: int = option(
        env="RECTUNE_TUNER_LM_RATIONALE_TOKENS",
        default=0,
        help="lm proposer: also keep the model's one-sentence rationale (at most this many tokens; with an "
        "endpoint, any length), labelled as its words; 0 keeps only the computed evidence",
    )
    seed: int = option(env="RECTUNE_TUNER_SEED", default=0, help="seed of the proposer; 0 draws a fresh one")
    search_space_file: str = option(
        env="RECTUNE_TUNER_SEARCH_SPACE",
        default="",
        help="JSON file naming the strategies to explore and narrower ranges; empty = every strategy "
        "ScoringService declares, in the tuner's default ranges (docs/tuner.md)",
    )

    def __post_init__(self) -> None:
        if self.proposer not in PROPOSER_NAMES:
            raise SettingsError(
                f"--proposer (env RECTUNE_TUNER_PROPOSER): must be one of {', '.join(PROPOSER_NAMES)}, "
                f"got {self.proposer!r}"
            )
        if self.screening not in SCREENINGS:
            raise SettingsError(
                f"--screening (env RECTUNE_TUNER_SCREENING): must be one of {', '.join(SCREENINGS)}, "
                f"got {self.screening!r}"
            )
        if not 0 <= self.lm_rationale_tokens <= MAX_RATIONALE_TOKENS:
            raise SettingsError(
                f"--lm-rationale-tokens: must be between 0 and {MAX_RATIONALE_TOKENS}, got {self.lm_rationale_tokens}"
            )
        if self.lm_temperature < 0:
            raise SettingsError(f"--lm-temperature: must be >= 0, got {self.lm_temperature}")
        if self.lm_endpoint and not self.lm_endpoint.startswith(("http://", "https://")):
            raise SettingsError(
                f"--lm-endpoint (env RECTUNE_TUNER_LM_ENDPOINT): must be an http(s) URL, got {self.lm_endpoint!r}"
            )
        if self.lm_endpoint and not self.lm_model:
            raise SettingsError(
                "--lm-model (env RECTUNE_TUNER_LM_MODEL): required with --lm-endpoint (the model it serves)"
            )
        if self.lm_timeout_seconds <= 0:
            raise SettingsError(f"--lm-timeout-seconds: must be > 0, got {self.lm_timeout_seconds}")


@dataclass(frozen=True)
class TunerSettings(ClientSettings, TunerLimits, SearchSettings):
    """The tuner: proposes configurations and manages the arms it created (its limits are
    TunerLimits' fields)."""

    policy_address: str = option(
        env="RECTUNE_POLICY_ADDRESS", required=True, help="host:port of PolicyService (arms; needs the admin token)"
    )
    scoring_address: str = option(
        env="RECTUNE_SCORING_ADDRESS", required=True, help="host:port of ScoringService (search space, offline screen)"
    )
    metrics_address: str = option(
        env="RECTUNE_METRICS_ADDRESS", required=True, help="host:port of MetricsService (live per-arm statistics)"
    )
    database_url: str = option(
        env="RECTUNE_DATABASE_URL",
        default="sqlite:///rectune-tuner.db",
        help="SQLAlchemy URL of the audit table: a SQLite file or postgresql+psycopg://...",
    )
    interval_seconds: float = option(
        env="RECTUNE_TUNER_INTERVAL_SECONDS", default=300.0, help="time between two cycles of `tuner run`"
    )
    health_port: int = option(
        env="RECTUNE_HEALTH_PORT",
        default=0,
        help="`tuner run` serves grpc.health.v1 on this plaintext port while its loop runs (for probes); 0 = off",
    )
    prometheus_port: int = option(
        env="RECTUNE_PROMETHEUS_PORT",
        default=0,
        help="`tuner run` serves Prometheus metrics (last successful cycle, cycles by outcome) at /metrics "
        "on this port; 0 = off",
    )
    host: str = option(env="RECTUNE_HOST", default="127.0.0.1", help="address the health port binds; 0.0.0.0 in pods")

    def __post_init__(self) -> None:
        super().__post_init__()
        SearchSettings.__post_init__(self)  # ClientSettings' check does not chain to it
        check_address("--policy-address", "RECTUNE_POLICY_ADDRESS", self.policy_address)
        check_address("--scoring-address", "RECTUNE_SCORING_ADDRESS", self.scoring_address)
        check_address("--metrics-address", "RECTUNE_METRICS_ADDRESS", self.metrics_address)
        check_database_url(self.database_url)
        for flag, port in (("--health-port", self.health_port), ("--prometheus-port", self.prometheus_port)):
            if not 0 <= port <= 65535:
                raise SettingsError(f"{flag}: must be between 0 and 65535, got {port}")
        if self.health_port and self.health_port == self.prometheus_port:
            raise SettingsError("--health-port and --prometheus-port: must differ")
        if self.interval_seconds <= 0:
            raise SettingsError(f"--interval-seconds: must be > 0, got {self.interval_seconds}")
        problems = self.limits().problems()
        if problems:
            raise SettingsError("; ".join(_as_flag(problem) for problem in problems))

    def limits(self) -> TunerLimits:
        return TunerLimits(**{f.name: getattr(self, f.name) for f in dataclasses.fields(TunerLimits)})


def _as_flag(problem: str) -> str:
    """'max_live_arms: must be ...' -> '--max-live-arms: must be ...'."""
    name, rule = problem.split(":", 1)
    return f"--{name.replace('_', '-')}:{rule}"
