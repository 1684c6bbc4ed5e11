"""The LLM judge on vLLM: one chat completion per claim, label by structured output, probabilities by logprobs."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import math
import re
from typing import Any, Sequence

from ...pipeline.deadline import Deadline
from ...pipeline.errors import (BackendNotConfiguredError, BackendRateLimitedError, BackendResponseError,
                               BackendTimeoutError, BackendUnavailableError)
from ...pipeline.types import JudgeItem, Judgement, LabelProbs, Tier, Verdict
from ..vllm_client import VLLM_LOGPROB_FLOOR, VllmClient
from .aggregation import NO_EVIDENCE
from .embedded import error_judgement
from .prompts import LABELS, MAX_PROMPT_EVIDENCE_CHARS, PROMPT_VERSION, TOP_LOGPROBS, VERBALIZERS, request_body

log = logging.getLogger(__name__)
_ORDER = (Verdict.SUPPORTED, Verdict.CONTRADICTED, Verdict.NOT_ENOUGH_INFO)
_BY_LABEL = {token: verdict for verdict, token in VERBALIZERS.items()}
# vLLM's HTTP 400 for a prompt over max_model_len, in the wordings of its versions: "This model's maximum context
# length is N tokens. However, you requested …", "… your request has N input tokens", "'max_tokens' or
# 'max_completion_tokens' is too large: …", "The decoder prompt (length N) is longer than the maximum model length".
_CONTEXT_TOO_LONG = re.compile(r"HTTP 400[ )].*maximum (context|model) length", re.IGNORECASE | re.DOTALL)
# How long the model found behind the served name is taken as known before /v1/models is read again. A judging
# call that finds vLLM down forgets it at once: vLLM may come back with other weights under that name.
SERVED_TTL_S = 10.0
SERVED_PROBE_S = 2.0  # the longest one read of /v1/models takes (and the first request waits for it)


class JudgeOutputError(ValueError):
    """The judge answered, but not with a label and its log-probabilities.

    `model_text`: the pieces of the message that quote what the model wrote (it may restate the claim, i.e. patient
    data): the claim's error carries them back to the caller, the server's log only their lengths (`loggable`)."""

    def __init__(self, message: str, model_text: tuple[str, ...] = ()):
        super().__init__(message)
        self.model_text = model_text

    def loggable(self) -> str:
        text = str(self)
        for piece in self.model_text:
            text = text.replace(piece, f"<{len(piece)} characters of model output>")
        return text


def _quoted(value: Any, limit: int = 80) -> str:
    """The model's text as quoted in an error message (its first `limit` characters)."""
    return repr(value[:limit] if isinstance(value, str) else value)


class PromptTooLongError(JudgeOutputError):
    """vLLM gave this claim's prompt no room to answer: it does not fit the judge model's context.

    Not an answer the model got wrong, nor an outage: the LLM tier cannot read this claim at all (in a cascade the
    embedded verdict stands, DEGRADED); the LLM judge alone gives the claim ERROR with this reason."""


def _logprob(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value) or value > 1e-6:
        raise JudgeOutputError(f"invalid logprob {value!r} in the response")
    return max(float(value), VLLM_LOGPROB_FLOOR)


def _label_logprobs(first: dict[str, Any]) -> dict[str, float]:
    """Log-probability of each label at the first generated position; a label not returned counts as -9999.

    A label may count as absent only when the full top list asked for came back: a missing, null or short
    top_logprobs list says nothing about the labels it lacks (taking them as -9999 would make up certainty).
    """
    top_list = first.get("top_logprobs")
    if not isinstance(top_list, list):
        raise JudgeOutputError("the response carries no top_logprobs list for the label token")
    for entry in [first, *top_list]:
        if not isinstance(entry, dict) or not isinstance(entry.get("token"), str):
            raise JudgeOutputError("a logprobs entry has no token")
    # Each top entry is a distinct token id, but vLLM keys them by decoded text: two ids may show the same string
    # (a SentencePiece byte-fallback token <0x41> decodes to "A" like the token "A", and constrained decoding
    # allows both). Every entry counts; the sampled token counts once, unless it lies outside the top list.
    entries = [(e["token"], _logprob(e.get("logprob"))) for e in top_list]
    sampled = _logprob(first.get("logprob"))
    if (first["token"], sampled) not in entries:
        entries.append((first["token"], sampled))
    out: dict[str, float] = {}
    for label in LABELS:
        # "A" and " A" are both the label; their probabilities add up.
        values = [lp for token, lp in entries if token.strip() == label and lp > VLLM_LOGPROB_FLOOR]
        if values:
            top = max(values)
            out[label] = top + math.log(sum(math.exp(v - top) for v in values))
        elif len(top_list) < TOP_LOGPROBS:
            raise JudgeOutputError(f"top_logprobs has {len(top_list)} of the {TOP_LOGPROBS} entries asked for and "
                                   f"lacks the label {label!r}: its probability is unknown")
        else:
            out[label] = VLLM_LOGPROB_FLOOR
    absent = [label for label, lp in out.items() if lp <= VLLM_LOGPROB_FLOOR]
    rivals = [lp for token, lp in entries[:len(top_list)] if token.strip() not in LABELS]
    if absent and rivals and VLLM_LOGPROB_FLOOR < sampled <= min(rivals):
        # The generated label ranks below every other token returned (constrained decoding chose it from outside
        # the model's top list, e.g. a model that wants to write prose): the labels not returned may be as likely
        # as it, so counting them as -9999 would make up certainty.
        raise JudgeOutputError(f"the generated label ranks below all {len(rivals)} other tokens returned: the "
                               f"probabilities of {', '.join(absent)} are unknown")
    return out


def _completion_tokens(data: dict[str, Any]) -> int | None:
    """usage.completion_tokens, or None when the response has no usable usage block."""
    usage = data.get("usage")
    count = usage.get("completion_tokens") if isinstance(usage, dict) else None
    return count if isinstance(count, int) and not isinstance(count, bool) else None


def parse_judgement(data: dict[str, Any]) -> tuple[Verdict, LabelProbs]:
    """The label of one chat completion and its probabilities renormalized over the three labels.

    Raises JudgeOutputError when the answer is not a label with usable logprobs.
    """
    try:
        choice = data["choices"][0]
        content = choice["message"]["content"]
    except (KeyError, IndexError, TypeError) as exc:
        raise JudgeOutputError("the response has no message content") from exc
    if not isinstance(content, str) or content.strip() not in LABELS:
        shown = _quoted(content)
        finish = choice.get("finish_reason")
        if finish not in (None, "stop", "length", "tool_calls"):
            # vLLM ended the request before a label: "abort" (aborted on the server, e.g. POST /pause?mode=abort
            # during a weight update, or a shutdown), "error" (a request-level engine failure). Not a sign that
            # structured outputs were ignored.
            cause = {"abort": "the request was aborted on the server (vLLM paused generation or is shutting down)",
                     "error": "an internal error ended the generation"}.get(finish, "the generation ended early")
            raise JudgeOutputError(f"vLLM ended the generation before a label (finish_reason {finish!r}: {cause}; "
                                   f"content {shown})", (shown,))
        reasoning = choice["message"].get("reasoning_content") or choice["message"].get("reasoning")
        if isinstance(reasoning, str) and reasoning.strip():
            # vLLM started with --reasoning-parser applies structured outputs only once the reasoning has ended
            # (vLLM >= 0.8.5, V1); a model that reasons anyway fills the few tokens allowed with reasoning.
            thought = _quoted(reasoning)
            raise JudgeOutputError(
                f"the model answered with reasoning ({thought}) and content {shown}: vLLM's "
                "--reasoning-parser holds structured outputs back until the reasoning ends, and this model reasons "
                "despite enable_thinking=false (or the parser took its answer for reasoning); serve the judge model "
                "without --reasoning-parser, or use a model that answers at once", (thought, shown))
        produced = _completion_tokens(data)
        if finish == "length" and not (content or "").strip() and not produced:
            # Nothing generated although the output may take MAX_COMPLETION_TOKENS: vLLM gave the prompt no room to
            # answer (a V0 scheduler ignores a prompt over its token limit and finishes it with "length", no text).
            counted = "usage not reported" if produced is None else "0 completion tokens"
            raise PromptTooLongError(
                f"vLLM generated nothing (finish_reason 'length', {counted}): the prompt left no room to answer "
                "(it fills the judge model's max_model_len or the scheduler's token budget); serve the judge model "
                "with a larger --max-model-len")
        raise JudgeOutputError(
            f"unconstrained output {shown}: the server did not apply structured outputs "
            "(vLLM >= 0.10.2 reads `structured_outputs`; from 0.12 the old guided_* fields are ignored)", (shown,))
    label = content.strip()
    tokens = (choice.get("logprobs") or {}).get("content") if isinstance(choice.get("logprobs"), dict) else None
    if not isinstance(tokens, list) or not tokens or not isinstance(tokens[0], dict):
        raise JudgeOutputError("the response carries no logprobs for the label token")
    if not isinstance(tokens[0].get("token"), str) or tokens[0]["token"].strip() != label:
        first = _quoted(tokens[0].get("token"))
        raise JudgeOutputError(f"the label {label!r} is not a single token for this model (first token {first})",
                               (first,))
    logprobs = _label_logprobs(tokens[0])
    if all(v <= VLLM_LOGPROB_FLOOR for v in logprobs.values()):
        raise JudgeOutputError("no label token among the returned top logprobs")
    top = max(logprobs.values())
    weights = {k: (math.exp(v - top) if v > VLLM_LOGPROB_FLOOR else 0.0) for k, v in logprobs.items()}
    total = sum(weights.values())
    probs = LabelProbs(*(weights[VERBALIZERS[v]] / total for v in _ORDER))
    chosen = weights[label] / total
    if chosen < probs.confidence() - 1e-6:
        # Greedy constrained decoding emits the likeliest allowed label; anything else means a misread shape.
        raise JudgeOutputError(f"the generated label {label!r} disagrees with its logprobs")
    return _BY_LABEL[label], probs


class VllmJudge:
    """Judge port over vLLM's OpenAI-compatible chat completions (through the shared VllmClient)."""

    def __init__(self, client: VllmClient, model: str):
        self.client = client
        self.model = model
        self.name = f"vllm:{model}"
        self.prompt_version = PROMPT_VERSION
        self._closed = False
        self._identity: str | None = None  # the name and the weights behind it, as last read (None: unknown)
        self._identity_read = asyncio.Event()  # set once a read has finished (the first one is waited for)
        self._identity_wake = asyncio.Event()  # set to read again at once (an outage was seen)
        self._root: str | None = None  # the weights' path /v1/models lists for the name, as last read
        self._identity_task: asyncio.Task | None = None
        self._first_read_waited = False

    async def cache_identity(self, deadline: Deadline) -> str | None:
        """The judge as the verdict cache keys it: its name and the model vLLM serves under that name (the `root`
        /v1/models lists: the weights' path).

        The name alone (`vllm:judge`) stays the same when vLLM restarts with other weights under the same
        --served-model-name, and cached verdicts of the first model would then be served as the second's. A
        background task reads the entry every SERVED_TTL_S seconds, and at once after a judging call found vLLM
        unreachable or failing (a restart looks like that from here; the identity is unknown until it is read again).
        A request never waits on that read, except until the first one finishes, and then at most SERVED_PROBE_S
        within its deadline (once, not again for every request while vLLM hangs). None while the entry is unknown
        (vLLM down, slow, or not serving the name): the request then neither reads nor fills the cache."""
        if (self._identity_task is None or self._identity_task.done()) and not self._closed:
            # (its own empty context: the reads are no request's, and log lines must not carry one's id)
            self._identity_task = asyncio.get_running_loop().create_task(
                self._read_identity_forever(), name=f"{self.name} identity", context=contextvars.Context())
        if not self._identity_read.is_set() and not self._first_read_waited:
            wait = deadline.timeout(SERVED_PROBE_S)
            if wait > 0:
                try:
                    async with asyncio.timeout(wait):
                        await self._identity_read.wait()
                except TimeoutError:
                    self._first_read_waited = True  # (vLLM hangs: the requests after this one do not wait)
        return self._identity

    async def read_served_model(self, deadline: Deadline) -> str:
        """The weights vLLM serves under this judge's model name, as last read ("" while unknown or not listed):
        the provenance's judge_model."""
        await self.cache_identity(deadline)  # (starts the reads when no verdict cache did)
        return self._root or ""

    async def _read_identity_forever(self) -> None:
        while not self._closed:
            self._identity_wake.clear()
            try:
                ok, root = await self.client.served_root(self.model, SERVED_PROBE_S)
            except Exception:  # (noqa: BLE001) never end the task: the identity would stay as it is for good
                log.exception("reading the model vLLM serves as %r failed", self.model)
                ok, root = False, None
            if self._identity_wake.is_set():  # an outage was seen while reading: what was read may be the old model
                self._identity, self._root = None, None
            elif ok is None:
                pass  # a rate limiter refused the read: the server is up, and what it serves is as last read
            else:
                self._identity = (f"{self.name}@{root}" if root and root != self.model else self.name) if ok else None
                self._root = root if ok else None
            self._identity_read.set()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(SERVED_TTL_S):
                    await self._identity_wake.wait()

    def _outage_seen(self) -> None:
        """vLLM was unreachable or failing for a call: it may come back with other weights, so the identity is
        unknown until the background task has read it again."""
        self._identity, self._root = None, None
        self._identity_wake.set()

    async def _one(self, item: JudgeItem, deadline: Deadline) -> Judgement:
        """The claim's LLM verdict; PromptTooLongError when its prompt does not fit the model's context."""
        if not item.evidence:  # nothing to read: not judged, no LLM call
            return Judgement(Verdict.NOT_ENOUGH_INFO, NO_EVIDENCE, Tier.NONE, evidence=())
        try:
            data = await self.client.chat_completions(request_body(self.model, item.claim, item.evidence), deadline)
        except BackendResponseError as exc:
            reason = exc.message
            if _CONTEXT_TOO_LONG.search(reason):
                # vLLM's own advice ("reduce the length of the messages") is for its API caller, here this server:
                # the prompt is the claim and its evidence, and the remedy is the judge model's context.
                raise PromptTooLongError(
                    "the judge prompt for this claim (instructions, evidence up to "
                    f"{MAX_PROMPT_EVIDENCE_CHARS:,} characters, claim) does not fit the judge model's context: "
                    f"serve it with a larger --max-model-len ({reason})") from None
            return error_judgement(f"LLM judge: {reason}", Tier.LLM, llm_calls=1)
        try:
            verdict, probs = parse_judgement(data)
        except PromptTooLongError:
            raise
        except JudgeOutputError as exc:
            log.warning("LLM judge output unusable: %s", exc.loggable())  # (the model's words stay out of the log)
            return error_judgement(f"LLM judge: {exc}", Tier.LLM, llm_calls=1)
        return Judgement(verdict, probs, Tier.LLM, llm_calls=1, evidence=item.evidence)

    async def judge_each(self, items: Sequence[JudgeItem], deadline: Deadline
                         ) -> list[Judgement | BackendUnavailableError | BackendTimeoutError | PromptTooLongError]:
        """One call per claim, concurrently; each claim's outcome on its own.

        A claim whose call found vLLM unreachable or too slow gets that error in its place, and so does one whose
        prompt does not fit the judge model's context (the cascade degrades only those claims); any other
        exception is raised.
        """
        results = await asyncio.gather(*(self._one(item, deadline) for item in items), return_exceptions=True)
        if any(isinstance(r, BackendUnavailableError) and not isinstance(r, BackendRateLimitedError)
               for r in results):
            # (unreachable or failing: vLLM down or restarting. A timeout is not counted: a caller's own short
            # deadline ends in one, and would turn the cache off for every other request; nor is rate limiting, a
            # server that is up: the cache off then served a cascade's cached LLM verdicts as degraded ones.)
            self._outage_seen()
        for result in results:
            if isinstance(result, BaseException) and not isinstance(
                    result, (BackendUnavailableError, BackendTimeoutError, PromptTooLongError)):
                raise result
        return list(results)

    async def judge(self, items: Sequence[JudgeItem], deadline: Deadline) -> list[Judgement]:
        """One call per claim, concurrently (the client bounds how many are in flight).

        Unreachable -> BackendUnavailableError, too slow -> BackendTimeoutError, for the
        whole batch (the request fails UNAVAILABLE / DEADLINE_EXCEEDED); unusable output, or a prompt that does
        not fit the model's context -> that claim's ERROR verdict.
        """
        results = await self.judge_each(items, deadline)
        for kind in (BackendUnavailableError, BackendTimeoutError):
            for result in results:
                if isinstance(result, kind):
                    raise result
        return [error_judgement(f"LLM judge: {r}", Tier.LLM, llm_calls=1) if isinstance(r, PromptTooLongError)
                else r for r in results]

    async def ready(self) -> bool:
        return await self.client.serves(self.model)

    async def aclose(self) -> None:
        if not self._closed:  # shared by the vllm and cascade judges
            self._closed = True
            task, self._identity_task = self._identity_task, None
            if task is not None:
                task.cancel()
                await asyncio.wait([task])  # (a cancel of this caller still reaches it)
            await self.client.aclose()


VLLM_JUDGES = ("vllm", "cascade")  # judges that put a vLLM server in this server's settings


def vllm_configured(cfg) -> bool:
    """Whether the judge settings name a vLLM server: a vLLM judge by default, or KGV_JUDGE__BASE_URL set."""
    return cfg.backend in VLLM_JUDGES or "base_url" in cfg.model_fields_set


def judge_from_settings(cfg) -> VllmJudge:
    """The LLM judge configured by KGV_JUDGE__* (base_url, model, api_key, timeout_s, max_concurrency).

    A server with no vLLM in its judge settings (a local default judge, no KGV_JUDGE__BASE_URL)
    answers requests for the vllm or cascade judge with FAILED_PRECONDITION, not a retryable
    UNAVAILABLE from a connection to a server nobody started.
    """
    if not vllm_configured(cfg):
        raise BackendNotConfiguredError(
            f"this server has no LLM judge (default judge {cfg.backend!r} and KGV_JUDGE__BASE_URL not set; its "
            "default applies only when the judge is vllm or cascade): set KGV_JUDGE__BASE_URL and "
            "KGV_JUDGE__MODEL to a vLLM server")
    client = VllmClient(cfg.base_url, cfg.api_key, timeout_s=cfg.timeout_s, max_concurrency=cfg.max_concurrency,
                        cache_salt=cfg.cache_salt)
    return VllmJudge(client, cfg.model)
