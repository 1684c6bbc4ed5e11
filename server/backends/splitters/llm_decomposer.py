"""The LLM decomposer: a vLLM-served model splits a chain into planning / knowledge / step_text steps.

The model is constrained to the JSON schema below through `response_format`
(json_schema), which vLLM turns into structured outputs; the `guided_*` fields
are not used because vLLM >= 0.12 ignores them and returns unconstrained text.
Step texts are aligned back to offsets in the chain. Output that is not valid
JSON, does not follow the schema, or names text that is not in the chain
raises BackendResponseError: the request fails with a clear status and never
gets a silent score.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from typing import Any, Callable, Sequence

from ...pipeline.deadline import NO_DEADLINE, Deadline
from ...pipeline.errors import BackendNotConfiguredError, BackendResponseError
from ...pipeline.runtime import Blocking
from ...pipeline.splitter import RuleSplitter
from ...pipeline.types import SplitResult, Step
from ..judges.vllm_judge import vllm_configured
from ..vllm_client import VllmClient
from .alignment import StepAligner, StepNotFoundError, with_labels

PROMPT_VERSION = "llm/1"
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "steps": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "properties": {
                    "planning": {"type": "string"},
                    "knowledge": {"type": "string"},
                    "step_text": {"type": "string"},
                },
                "required": ["planning", "knowledge", "step_text"],
                "additionalProperties": False,
            },
        }
    },
    "required": ["steps"],
    "additionalProperties": False,
}
SYSTEM_PROMPT = (
    "You split a reasoning chain into its steps. Return JSON with a list `steps`, in the order of the chain. "
    "For every step give: `step_text`, the exact text of the step copied from the chain without changing, "
    "adding or leaving out words, so that the steps together are the whole chain; `planning`, what the step "
    "sets out to do, in a few words; `knowledge`, the domain knowledge the step relies on (facts, definitions, "
    "formulas, mechanisms) as one standalone sentence, or an empty string when the step uses no domain "
    "knowledge (restating the question, planning, checking, arithmetic, stating the answer)."
)


def _user_prompt(text: str, question: str) -> str:
    head = f"Question:\n{question.strip()}\n\n" if question.strip() else ""
    return f"{head}Reasoning chain:\n{text}"


def _parse(data: dict[str, Any]) -> list[dict[str, str]]:
    """The steps of a chat completion, or BackendResponseError saying what is wrong with it."""
    try:
        choice = data["choices"][0]
        content = choice["message"]["content"]
    except (KeyError, IndexError, TypeError) as exc:
        raise BackendResponseError("the LLM decomposer's response has no message content") from exc
    if choice.get("finish_reason") == "length":
        raise BackendResponseError("the LLM decomposer's output was cut off at its token limit "
                                   "(raise KGV_SPLITTER__MAX_OUTPUT_TOKENS or send shorter chains)")
    if not isinstance(content, str):
        raise BackendResponseError("the LLM decomposer returned no text")
    try:
        parsed = json.loads(content)
    except ValueError as exc:
        raise BackendResponseError(
            f"the LLM decomposer returned malformed JSON (is structured output enabled?): {content[:120]!r}"
        ) from exc
    steps = parsed.get("steps") if isinstance(parsed, dict) else None
    if not isinstance(steps, list) or not steps:
        raise BackendResponseError("the LLM decomposer's JSON has no `steps` list")
    for i, step in enumerate(steps):
        if not isinstance(step, dict) or not all(isinstance(step.get(k), str) for k in SCHEMA["properties"]
                                                 ["steps"]["items"]["required"]):
            raise BackendResponseError(f"the LLM decomposer's step {i} does not follow the schema "
                                       "(planning, knowledge and step_text strings)")
    return steps


class LlmDecomposer:
    """ClaimSplitter that asks an LLM for the steps and keeps offsets exact (claims come from the rules)."""

    def __init__(self, client: VllmClient, model: str, blocking: Blocking, rules: RuleSplitter | None = None,
                 max_output_tokens: int = 4096, client_factory: Callable[[], VllmClient] | None = None):
        self.client = client
        self.model = model
        self.blocking = blocking
        self.rules = rules or RuleSplitter()
        self.max_output_tokens = max_output_tokens
        self.name = f"{PROMPT_VERSION}:{model}"
        self._client_factory = client_factory

    def request_body(self, text: str, question: str) -> dict[str, Any]:
        return {
            "model": self.model,
            "messages": [{"role": "system", "content": SYSTEM_PROMPT},
                         {"role": "user", "content": _user_prompt(text, question)}],
            "temperature": 0,
            "max_tokens": self.max_output_tokens,
            "response_format": {"type": "json_schema",
                                "json_schema": {"name": "reasoning_steps", "schema": SCHEMA, "strict": True}},
        }

    async def asplit(self, text: str, question: str = "", deadline: Deadline = NO_DEADLINE,
                     client: VllmClient | None = None) -> SplitResult:
        """Steps of text from one LLM call; BackendResponseError when the output is unusable."""
        if not text.strip():
            return SplitResult(text, (), self.name, llm_calls=0)
        data = await (client or self.client).chat_completions(self.request_body(text, question), deadline)
        parsed = _parse(data)
        return await self.blocking.run(self._result, text, question, parsed)

    def _result(self, text: str, question: str, parsed: list[dict[str, str]]) -> SplitResult:
        # A step with a blank step_text holds no chain text: it is left out (it was reported as text "not in the
        # chain", failing the request). The chain's text is still all covered by the other steps.
        parsed = [p for p in parsed if p["step_text"].strip()]
        if not parsed:
            raise BackendResponseError("the LLM decomposer returned only steps with an empty step_text")
        try:
            starts = StepAligner(text).starts([p["step_text"] for p in parsed])
        except StepNotFoundError as exc:
            what = "repeated or reordered the chain's steps" if exc.earlier else "rewrote the chain"
            raise BackendResponseError(f"the LLM decomposer {what}: {exc}") from exc
        starts[0] = 0  # text before the first step the model copied belongs to that step
        starts = with_labels(text, starts)  # "2." left out of "2. It lowers glucose." starts that step, not ends one
        bounds = starts + [len(text)]
        spans = [_trim(text, a, b) for a, b in zip(bounds, bounds[1:])]
        steps = self.rules.steps(text, spans, question)
        return SplitResult(text, tuple(_with_fields(s, p) for s, p in zip(steps, parsed)), self.name, llm_calls=1)

    def split(self, text: str, question: str = "") -> SplitResult:
        """Blocking form for scripts and the CLI (not for use inside a running event loop)."""
        async def once() -> SplitResult:
            client = self._client_factory() if self._client_factory else self.client
            try:
                return await self.asplit(text, question, client=client)
            finally:
                if self._client_factory:
                    await client.aclose()

        return asyncio.run(once())

    def split_steps(self, steps: Sequence[str], question: str = "") -> SplitResult:
        """Steps the caller split are kept as given: no LLM call, claims from the rules."""
        return self.rules.split_steps(steps, question)

    async def ready(self) -> bool:
        """Whether vLLM answers and serves the decomposer's model (part of the knowledge service's health)."""
        return await self.client.serves(self.model)

    async def aclose(self) -> None:
        await self.client.aclose()


def _trim(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def _with_fields(step: Step, parsed: dict[str, str]) -> Step:
    """Adds planning / knowledge; the model's empty `knowledge` marks the step (and its claims) NO_KNOWLEDGE."""
    knowledge = parsed["knowledge"].strip()
    if not knowledge:
        claims = tuple(dataclasses.replace(c, no_knowledge=True) for c in step.claims)
    elif step.claims and all(c.no_knowledge for c in step.claims):
        # The model names knowledge the rules did not see: judge the claims rather than hide them (each keeps
        # the subject it borrowed: "has a potassium of 6.1" is judged as "The man has a potassium of 6.1").
        claims = tuple(dataclasses.replace(c, no_knowledge=False) for c in step.claims)
    else:
        claims = step.claims
    return Step(step.index, step.text, step.start, step.end, claims, all(c.no_knowledge for c in claims),
                planning=parsed["planning"].strip(), knowledge=knowledge)


def decomposer_from_settings(settings, blocking: Blocking) -> LlmDecomposer:
    """The decomposer configured by KGV_SPLITTER__* (falling back to the judge's vLLM).

    A server with no vLLM in its settings (no decomposer URL, a local judge, rules by
    default) answers SPLITTER_LLM requests with FAILED_PRECONDITION, not a retryable UNAVAILABLE.
    """
    cfg, judge = settings.splitter, settings.judge
    if cfg.base_url is None and cfg.backend != "llm" and not vllm_configured(judge):
        raise BackendNotConfiguredError(
            "the LLM decomposer needs a vLLM server: set KGV_SPLITTER__BASE_URL (or KGV_SPLITTER__BACKEND=llm "
            "to use the judge's KGV_JUDGE__BASE_URL)")
    base_url = cfg.base_url or judge.base_url
    api_key = cfg.api_key if cfg.base_url else (cfg.api_key or judge.api_key)
    salt = cfg.cache_salt if cfg.base_url else (cfg.cache_salt or judge.cache_salt)

    def new_client() -> VllmClient:
        return VllmClient(base_url, api_key, timeout_s=cfg.timeout_s, max_concurrency=cfg.max_concurrency,
                          cache_salt=salt)

    return LlmDecomposer(new_client(), cfg.model or judge.model, blocking,
                         max_output_tokens=cfg.max_output_tokens, client_factory=new_client)
