"""The language-model proposer against an OpenAI-compatible chat endpoint (vLLM, Ollama,
TGI, ...): the same prompt as the local model's, and the answer bound to the configuration's
JSON Schema by the server (``response_format`` of type ``json_schema``, which these servers
enforce with guided decoding). A server that knows only the older form (llama-cpp-python's
server: ``json_object`` with a ``schema``) refuses the first request naming
``response_format``; the proposer then asks in that form from then on. The answer is checked
against the space again here: a server that ignores the schema (or enforces only part of it,
as llama.cpp's grammar leaves out numeric bounds) gets its answer refused, not registered. The HTTP client, its
timeouts and retries are tuner.endpoint's.
"""

from __future__ import annotations

import json
import random
from collections.abc import Collection, Sequence
from typing import Any

import structlog

from rectune.domain.arms import ArmOrigin
from rectune.domain.space import SearchSpace, SpaceError
from tuner.endpoint import ChatEndpoint, EndpointError
from tuner.lm_proposer import SYSTEM, describe, lm_evidence
from tuner.proposers import NO_BRIEFING, Briefing, Observation, Proposal, distinct_proposals

log = structlog.get_logger(__name__)

RATIONALE = {"rationale": {"type": "string", "description": "one sentence: why this configuration"}}
# A configuration and one sentence fit in far fewer; bounded so that a model that rambles on in
# its rationale (a small one can, until the context is full) answers in seconds, cut short and
# refused, instead of holding the tuner for minutes.
MAX_ANSWER_TOKENS = 768


class EndpointProposer:
    origin = ArmOrigin.TUNER_LM

    def __init__(
        self,
        endpoint: ChatEndpoint,
        seed: int | None = None,
        temperature: float = 1.0,
        k: int = 10,
        keep_words: bool = False,
    ) -> None:
        self.keep_words = keep_words  # keep the model's one-sentence rationale, labelled as its words
        self.k = k  # the k of the NDCG@k the screen measures (the tuner's evaluation_k)
        self.endpoint = endpoint
        self.temperature = temperature
        self._rng = random.Random(seed)
        self._schema_form = "json_schema"  # or "json_object", once the server refused the first

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
        return distinct_proposals(lambda: self._draw(space, prompt, schema, history), count, taken)

    def _draw(
        self, space: SearchSpace, prompt: str, schema: dict[str, Any], history: Sequence[Observation]
    ) -> Proposal | None:
        """One answer of the endpoint as a proposal; None (logged) when it is outside the space."""
        answer = self._ask(prompt, schema)
        try:
            configuration = space.parse(answer)
        except SpaceError as exc:
            log.warning("endpoint_answer_refused", reason=str(exc))
            return None
        evidence = lm_evidence(self.endpoint.name, history)
        words = str(answer.get("rationale", "")).strip()
        if self.keep_words and words:
            evidence += f"; the model's words: {words}"
        return Proposal(configuration, self.origin, evidence)

    def _ask(self, prompt: str, schema: dict[str, Any]) -> Any:
        seed = self._rng.randrange(2**31)
        try:
            reply = self._complete(prompt, schema, seed)
        except EndpointError as exc:
            if self._schema_form != "json_schema" or "response_format" not in str(exc):
                raise
            log.warning("endpoint_schema_form", url=self.endpoint.url, now="json_object with a schema")
            self._schema_form = "json_object"
            reply = self._complete(prompt, schema, seed)
        try:
            return json.loads(reply["choices"][0]["message"]["content"])
        except (KeyError, IndexError, TypeError, json.JSONDecodeError) as exc:
            return {"error": f"not a JSON configuration ({exc})"}  # refused by parse, logged

    def _complete(self, prompt: str, schema: dict[str, Any], seed: int) -> dict[str, Any]:
        if self._schema_form == "json_schema":
            response_format = {
                "type": "json_schema",
                "json_schema": {"name": "configuration", "schema": schema, "strict": True},
            }
        else:
            response_format = {"type": "json_object", "schema": schema}
        return self.endpoint.complete(
            SYSTEM.format(k=self.k),
            prompt,
            temperature=self.temperature,
            seed=seed,
            max_tokens=MAX_ANSWER_TOKENS,
            response_format=response_format,
        )
