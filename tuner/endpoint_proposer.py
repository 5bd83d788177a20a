"""The language-model proposer against an OpenAI-compatible chat endpoint (vLLM, Ollama,
TGI, ...), for production: the same prompt as the local model's, and the answer bound to
the configuration's JSON Schema by the server (``response_format`` of type ``json_schema``,
which these servers enforce with guided decoding). The answer is checked against the space
again here: a server that ignores the schema gets its answer refused, not registered.
"""

from __future__ import annotations

import json
import random
import urllib.error
import urllib.request
from collections.abc import Collection, Sequence
from typing import Any

import structlog

from rectune.domain.arms import ArmOrigin
from rectune.domain.space import SearchSpace, SpaceError
from tuner.errors import TunerError
from tuner.lm_proposer import SYSTEM, describe
from tuner.proposers import NO_BRIEFING, Briefing, Observation, Proposal, distinct_proposals

log = structlog.get_logger(__name__)

RATIONALE = {"rationale": {"type": "string", "description": "one sentence: why this configuration"}}


class EndpointError(TunerError):
    """The endpoint could not be reached or answered with an error; the message says which."""


class EndpointProposer:
    origin = ArmOrigin.TUNER_LM

    def __init__(
        self,
        url: str,
        model: str,
        api_key: str = "",
        seed: int | None = None,
        temperature: float = 1.0,
        timeout_seconds: float = 60.0,
        k: int = 10,
    ) -> None:
        self.k = k  # the k of the NDCG@k the screen measures (the tuner's evaluation_k)
        self.url = url.rstrip("/") + "/chat/completions"
        self.model = model
        self.api_key = api_key
        self.temperature = temperature
        self.timeout_seconds = timeout_seconds
        self._rng = random.Random(seed)

    def propose(
        self,
        space: SearchSpace,
        count: int,
        taken: Collection[str],
        history: Sequence[Observation] = (),
        briefing: Briefing = NO_BRIEFING,
    ) -> list[Proposal]:
        prompt = describe(space, history, self.k) + "\nAlso give one sentence of rationale."
        schema = space.json_schema(extra=RATIONALE)
        return distinct_proposals(lambda: self._draw(space, prompt, schema), count, taken)

    def _draw(self, space: SearchSpace, prompt: str, schema: dict[str, Any]) -> Proposal | None:
        """One answer of the endpoint as a proposal; None (logged) when it is outside the space."""
        answer = self._ask(prompt, schema)
        try:
            configuration = space.parse(answer)
        except SpaceError as exc:
            log.warning("endpoint_answer_refused", reason=str(exc))
            return None
        rationale = str(answer.get("rationale", "")).strip() or "(none given)"
        return Proposal(configuration, self.origin, f"{self.model}: {rationale}")

    def _ask(self, prompt: str, schema: dict[str, Any]) -> Any:
        body = {
            "model": self.model,
            "messages": [{"role": "system", "content": SYSTEM.format(k=self.k)}, {"role": "user", "content": prompt}],
            "temperature": self.temperature,
            "seed": self._rng.randrange(2**31),
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "configuration", "schema": schema, "strict": True},
            },
        }
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.url, json.dumps(body).encode(), headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_seconds) as response:
                reply = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:300]
            raise EndpointError(f"language model endpoint {self.url}: HTTP {exc.code}: {detail}") from None
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            raise EndpointError(f"language model endpoint {self.url}: {exc}") from None
        try:
            return json.loads(reply["choices"][0]["message"]["content"])
        except (KeyError, IndexError, TypeError, json.JSONDecodeError) as exc:
            return {"error": f"not a JSON configuration ({exc})"}  # refused by parse, logged
