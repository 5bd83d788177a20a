"""An OpenAI-compatible chat endpoint (vLLM, Ollama, TGI, a hosted API): the one client the
tuner's language-model proposers use in production.

httpx with a timeout on every call; transient failures (a connection refused or reset, a
timeout, HTTP 408, 429, 500, 502, 503, 504) are retried with exponential backoff (tenacity), and
what is still failing after the last attempt is an EndpointError naming the URL and the cause.
Other HTTP errors are not retried: asking again would get the same answer.
"""

from __future__ import annotations

import math
from typing import Any

import httpx
import structlog
import tenacity

from tuner.errors import TunerError

log = structlog.get_logger(__name__)

RETRIED_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
DETAIL_CHARS = 300  # of an error body quoted in the message
TOP_LOGPROBS = 20  # alternatives asked for at the answer's first token


class EndpointError(TunerError):
    """The endpoint could not be reached or answered with an error; the message says which."""


class _Transient(EndpointError):
    """A failure worth another attempt."""


class ChatEndpoint:
    def __init__(
        self, url: str, model: str, api_key: str = "", timeout_seconds: float = 60.0, attempts: int = 3
    ) -> None:
        if attempts < 1:
            raise ValueError(f"attempts: must be at least 1, got {attempts}")
        self.url = url.rstrip("/") + "/chat/completions"
        self.name = model
        self.attempts = attempts
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(timeout=timeout_seconds, headers=headers)

    def close(self) -> None:
        self._client.close()

    def complete(self, system: str, user: str, **options: Any) -> dict[str, Any]:
        """The endpoint's reply to one system and one user message (``options``: temperature,
        response_format, logprobs, ... as the OpenAI chat API spells them)."""
        body = {
            "model": self.name,
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
            **options,
        }
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.attempts),
            wait=tenacity.wait_exponential(multiplier=0.5, max=8),
            retry=tenacity.retry_if_exception_type(_Transient),
            before_sleep=self._log_retry,
            reraise=True,
        )
        try:
            return retrying(self._post, body)
        except _Transient as exc:
            raise EndpointError(str(exc)) from None

    def _log_retry(self, state: tenacity.RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        log.warning("endpoint_retry", url=self.url, attempt=state.attempt_number, error=str(error))

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        try:
            response = self._client.post(self.url, json=body)
        except httpx.HTTPError as exc:  # connect, read and write errors, timeouts
            raise _Transient(f"language model endpoint {self.url}: {type(exc).__name__}: {exc}") from None
        if response.status_code >= 400:
            error = _Transient if response.status_code in RETRIED_STATUSES else EndpointError
            detail = response.text[:DETAIL_CHARS]
            raise error(f"language model endpoint {self.url}: HTTP {response.status_code}: {detail}")
        try:
            reply = response.json()
        except ValueError:
            raise EndpointError(f"language model endpoint {self.url}: the reply is not JSON") from None
        if not isinstance(reply, dict):
            raise EndpointError(f"language model endpoint {self.url}: the reply is not a JSON object")
        return reply


class EndpointModel:
    """The pool proposer's chooser on an endpoint: the probabilities of the options (single
    letters) at the answer's first token, read from the reply's ``top_logprobs``."""

    def __init__(self, endpoint: ChatEndpoint) -> None:
        self.endpoint = endpoint
        self.name = endpoint.name

    def probabilities_each(self, system: str, users: list[str], options: list[str]) -> list[list[float]]:
        return [self._probabilities(system, user, options) for user in users]

    def _probabilities(self, system: str, user: str, options: list[str]) -> list[float]:
        reply = self.endpoint.complete(
            system, user, max_tokens=1, temperature=0.0, logprobs=True, top_logprobs=TOP_LOGPROBS
        )
        weights = option_weights(reply, options)
        total = sum(weights)
        if total > 0:
            return [w / total for w in weights]
        # A server that returns no log-probabilities still answers: its letter gets all the weight.
        answered = _first_choice(reply).get("message", {}).get("content") or ""
        letter = answered.strip()[:1]
        if letter in options:
            return [1.0 if option == letter else 0.0 for option in options]
        log.warning("endpoint_answer_unusable", url=self.endpoint.url, answer=answered[:20])
        return [1.0 / len(options)] * len(options)


def option_weights(reply: dict[str, Any], options: list[str]) -> list[float]:
    """Each option's probability among the first answer token's alternatives (a token counts
    for an option when it is the option, give or take surrounding spaces); zeros when the
    reply carries no log-probabilities."""
    try:
        alternatives = _first_choice(reply)["logprobs"]["content"][0]["top_logprobs"]
    except (KeyError, IndexError, TypeError):
        return [0.0] * len(options)
    weights = [0.0] * len(options)
    for alternative in alternatives:
        if not isinstance(alternative, dict):
            continue
        token, logprob = str(alternative.get("token", "")).strip(), alternative.get("logprob")
        if token in options and isinstance(logprob, int | float) and math.isfinite(logprob):
            weights[options.index(token)] += math.exp(logprob)
    return weights


def _first_choice(reply: dict[str, Any]) -> dict[str, Any]:
    choices = reply.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        return choices[0]
    return {}
