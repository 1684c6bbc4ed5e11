"""`VllmCausalLm`: exact token log-probabilities from vLLM's /v1/completions on token-id prompts.

Two ways to score (KGV_LM__VLLM_SCORING):
- `prompt_logprobs` (default): one request with the n+1 token-id prompts as
  list[list[int]], `prompt_logprobs=0`, `max_tokens=1`; the answer positions
  are read exactly. vLLM skips *reading* the prefix cache for requests that
  ask for prompt logprobs, so the prefill is the sum of the prompt lengths.
- `cached`: one request per scored token t with prompt = seq[:t],
  `max_tokens=1`, `logprobs=1`, `logprob_token_ids=[seq[t]]` and
  `return_tokens_as_token_ids`; the value is read at the generated position.
  These requests read the prefix cache, so the shared chain is computed about
  once (needs a vLLM whose completions endpoint has `logprob_token_ids`).
vLLM clamps -inf to -9999.0: that value is read as zero probability.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import Any, Sequence

from ...pipeline.deadline import Deadline
from ...pipeline.errors import BackendResponseError, BackendUnavailableError, KgverifyError
from ...pipeline.info_gain import gather_or_cancel
from ...pipeline.runtime import Blocking
from ..vllm_client import VLLM_LOGPROB_FLOOR, VllmClient
from .causal_lm import JobLogprobs, ScoringJob

log = logging.getLogger(__name__)
SCORING_MODES = ("prompt_logprobs", "cached")
_NEG_INF = float("-inf")
# max_model_len is read again when older than this, and after a failed scoring request: vLLM restarted with another
# --max-model-len (the verifier running on) kept the first value for good. A shorter one had every prompt of a long
# chain's requests rejected (HTTP 400: each call's scores unusable), a longer one nulled prefixes that fit.
CONTEXT_TTL_S = 10.0
# Prompt tokens per prompt_logprobs request (a longer prompt goes alone). Its reply carries an entry per prompt token:
# ~80 bytes of JSON and ~700 bytes once parsed (measured), and each reply is parsed whole. 64 prompts of a long
# chain's prefixes (25k tokens each) come to a 130 MB reply and 1.1 GB parsed (computed), several of them in flight
# at once; 32k tokens bound a reply to ~25 MB parsed.
MAX_PROMPT_TOKENS_PER_REQUEST = 32768


class VllmCausalLm:
    """A causal LM served by vLLM, through the project's one vLLM client."""

    context_is_hard = True  # max_model_len: KGV_LM__MAX_CONTEXT_TOKENS can lower the context, never raise it

    def __init__(self, client: VllmClient, model: str, tokenizer=None, scoring: str = "prompt_logprobs",
                 max_prompts_per_request: int = 64, cached_max_scored_tokens: int = 32,
                 max_prompt_tokens_per_request: int = MAX_PROMPT_TOKENS_PER_REQUEST,
                 blocking: Blocking | None = None):
        if scoring not in SCORING_MODES:
            raise ValueError(f"unknown vLLM scoring mode {scoring!r}")
        self.client = client
        self.model = model
        self.name = f"vllm:{model}"
        self.scoring = scoring
        self.max_prompts = max_prompts_per_request
        self.max_prompt_tokens = max_prompt_tokens_per_request
        self.cached_max_scored = cached_max_scored_tokens
        self._tokenizer = tokenizer  # a local HF tokenizer of the same model, or None for /tokenize
        self._blocking = blocking or Blocking(None)  # local tokenization stays off the event loop
        self._context: int | None = None
        self._context_read_at: float | None = None  # time.monotonic() of the last /v1/models read; None = never
        self._context_lock = asyncio.Lock()
        # What /v1/models says the served name runs (its model path and length): the project's compose file serves
        # ${MODEL} as "judge", so another model can come up under the same name while this server runs on.
        # tokenizer_generation changes with it, and the estimator then probes the tokenizer again (BOS, space).
        self._served: tuple | None = None
        # The weights vLLM serves under the model name (/v1/models root), as last read with max_model_len ("" until
        # then; read with KGV_LM__MAX_CONTEXT_TOKENS set too, which can only lower vLLM's own limit): the
        # provenance's estimator_model.
        self.served_model = ""
        self.tokenizer_generation = 0

    # ---- the CausalLm port -------------------------------------------------------------------
    async def tokenize(self, texts: Sequence[str], add_special_tokens: bool, deadline: Deadline) -> list[list[int]]:
        if self._tokenizer is not None:
            from .transformers_lm import encode

            return await self._blocking.run(encode, self._tokenizer, texts, add_special_tokens)
        return list(await gather_or_cancel(
            *(self.client.tokenize(t, add_special_tokens, self.model, deadline) for t in texts)))

    async def context_tokens(self, deadline: Deadline) -> int | None:
        """vLLM's max_model_len less the one token every request generates; None when /v1/models lists the model
        without a max_model_len (a gateway's model list). Read again every CONTEXT_TTL_S seconds."""
        if not self._context_fresh():
            # One read at a time: the windows of a long chain start together, often after the interval passed.
            async with self._context_lock:
                if not self._context_fresh():
                    self._context = await self._read_context(deadline)
                    self._context_read_at = time.monotonic()
        return self._context

    def _context_fresh(self) -> bool:
        read_at = self._context_read_at
        return read_at is not None and time.monotonic() - read_at <= CONTEXT_TTL_S

    async def _read_context(self, deadline: Deadline) -> int | None:
        cards = await self.client.models(deadline)
        if not all(isinstance(card, dict) for card in cards):
            raise BackendResponseError("vLLM /v1/models returned a model list whose entries are not objects")
        mine = [card for card in cards if card.get("id") == self.model]
        if not mine:
            # as an HTTP 404 on the request itself: the backend is down for us, not a bad answer to this chain
            raise BackendUnavailableError(f"vLLM does not serve a model named {self.model!r} (/v1/models lists "
                                          f"{len(cards)} other model(s)): set the model setting to a served name, "
                                          "or start vLLM with --served-model-name " + self.model)
        length = mine[0].get("max_model_len")
        root = mine[0].get("root")
        self.served_model = root if isinstance(root, str) else ""
        served = (repr(root), repr(length))
        if self._served is not None and served != self._served:
            self.tokenizer_generation += 1
        self._served = served
        if isinstance(length, int) and not isinstance(length, bool) and length >= 2:
            return length - 1
        return None

    async def score(self, job: ScoringJob, deadline: Deadline) -> JobLogprobs:
        scored = [len(s) - st for s, st in zip(job.sequences, job.starts)]
        use_cache = self.scoring == "cached" and not job.whole_sequences and max(scored) <= self.cached_max_scored
        try:
            if use_cache:
                return await self._score_cached(job, deadline)
            return await self._score_prompt_logprobs(job, deadline)
        except KgverifyError:
            self._context_read_at = None  # vLLM may have restarted (another max_model_len): read it again next time
            raise

    async def ready(self) -> bool:
        return await self.client.serves(self.model)

    async def aclose(self) -> None:
        await self.client.aclose()

    # ---- prompt_logprobs -------------------------------------------------------------------
    def _body(self, prompt, **extra) -> dict[str, Any]:
        return {"model": self.model, "prompt": prompt, "max_tokens": 1, "temperature": 0.0, **extra}

    async def _score_prompt_logprobs(self, job: ScoringJob, deadline: Deadline) -> JobLogprobs:
        seqs = [list(s) for s in job.sequences]
        groups = _groups([len(s) for s in seqs], self.max_prompts, self.max_prompt_tokens)

        async def group(g: range) -> tuple[list[tuple[float, ...]], int]:
            # Read as soon as it arrives: a reply holds a dict per prompt token (~0.5 kB parsed), and the n+1
            # prompts of a long chain are millions of tokens; holding every group's reply until the last one came
            # kept them all at once.
            data = await self.client.completions(self._body([seqs[k] for k in g], prompt_logprobs=0), deadline)
            choices = _choices(data, len(g))
            values = [_read_prompt_logprobs(choice, seqs[k], job.starts[k]) for k, choice in zip(g, choices)]
            return values, _usage(data, "prompt_tokens", sum(len(seqs[k]) for k in g))

        replies = await gather_or_cancel(*(group(g) for g in groups))
        values = [v for group_values, _ in replies for v in group_values]
        prefill = sum(tokens for _, tokens in replies)
        return JobLogprobs(tuple(values), prefill_tokens=prefill, calls=len(groups))

    # ---- cached: one generated-position readout per scored token ----------------------------
    async def _score_cached(self, job: ScoringJob, deadline: Deadline) -> JobLogprobs:
        prompts = [(k, t) for k, (s, st) in enumerate(zip(job.sequences, job.starts)) for t in range(st, len(s))]
        # The longest prompt first and alone: it fills the prefix cache the other prompts read.
        first = max(range(len(prompts)), key=lambda p: (prompts[p][1], -p))
        order = [first] + [p for p in range(len(prompts)) if p != first]

        async def one(p: int) -> tuple[float, int]:
            k, t = prompts[p]
            seq = job.sequences[k]
            data = await self.client.completions(self._body(
                list(seq[:t]), logprobs=1, logprob_token_ids=[seq[t]], return_tokens_as_token_ids=True), deadline)
            (choice,) = _choices(data, 1)
            value = _read_generated(choice, seq[t])
            return value, _usage(data, "prompt_tokens", t) - _cached_tokens(data)

        head = await one(order[0])
        rest = await gather_or_cancel(*(one(p) for p in order[1:]))
        results = dict(zip(order, [head, *rest]))
        values: list[list[float]] = [[] for _ in job.sequences]
        for p, (k, _) in enumerate(prompts):
            values[k].append(results[p][0])
        prefill = sum(r[1] for r in results.values())
        return JobLogprobs(tuple(tuple(v) for v in values), prefill_tokens=prefill, calls=len(prompts))


def _groups(lengths: Sequence[int], max_prompts: int, max_tokens: int) -> list[range]:
    """Consecutive prompts per request: at most max_prompts of them and max_tokens prompt tokens (a longer prompt
    alone)."""
    groups: list[range] = []
    start = tokens = 0
    for k, length in enumerate(lengths):
        if k > start and (k - start >= max_prompts or tokens + length > max_tokens):
            groups.append(range(start, k))
            start, tokens = k, 0
        tokens += length
    if start < len(lengths):
        groups.append(range(start, len(lengths)))
    return groups


def _choices(data: dict, expected: int) -> list[dict]:
    """The choices in prompt order; every part of the reply the readers use is checked for its shape, so that a
    reply of the wrong shape is an unusable answer, never a TypeError (INTERNAL)."""
    choices = data.get("choices")
    if not isinstance(choices, list) or len(choices) != expected or not all(isinstance(c, dict) for c in choices):
        raise BackendResponseError(f"vLLM returned {len(choices) if isinstance(choices, list) else 'no'} choices "
                                   f"for {expected} prompts")
    index = [c.get("index", k) for k, c in enumerate(choices)]
    if sorted(i if _is_int(i) else -1 for i in index) != list(range(expected)):
        raise BackendResponseError(f"vLLM's choices are not indexed 0 to {expected - 1}, one per prompt")
    return [c for _, c in sorted(zip(index, choices), key=lambda pair: pair[0])]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _usage(data: dict, key: str, default: int) -> int:
    usage = data.get("usage")
    value = usage.get(key) if isinstance(usage, dict) else None
    return value if _is_int(value) else default


def _cached_tokens(data: dict) -> int:
    """usage.prompt_tokens_details.cached_tokens (--enable-prompt-tokens-details), 0 when absent."""
    usage = data.get("usage")
    details = usage.get("prompt_tokens_details") if isinstance(usage, dict) else None
    value = details.get("cached_tokens") if isinstance(details, dict) else None
    return value if _is_int(value) and value >= 0 else 0


def _logprob(value: Any) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise BackendResponseError("vLLM returned a log-probability that is not a number")
    if math.isnan(value) or value > 1e-6:  # NaN, +inf or a positive log-probability: not a probability
        raise BackendResponseError(f"vLLM returned an impossible log-probability {value!r}")
    return _NEG_INF if value <= VLLM_LOGPROB_FLOOR else float(value)


def _read_prompt_logprobs(choice: dict, ids: list[int], start: int) -> tuple[float, ...]:
    entries = choice.get("prompt_logprobs")
    if not isinstance(entries, list) or len(entries) != len(ids):
        raise BackendResponseError("vLLM returned no prompt_logprobs, or not one entry per prompt token")
    out = []
    for t in range(start, len(ids)):
        entry = entries[t]
        found = entry.get(str(ids[t])) if isinstance(entry, dict) else None
        if not isinstance(found, dict):
            raise BackendResponseError(f"vLLM's prompt_logprobs lack the prompt token at position {t}")
        out.append(_logprob(found.get("logprob")))
    return tuple(out)


def _read_generated(choice: dict, token: int) -> float:
    logprobs = choice.get("logprobs")
    tops = logprobs.get("top_logprobs") if isinstance(logprobs, dict) else None
    top = tops[0] if isinstance(tops, list) and tops else None
    if not isinstance(top, dict) or f"token_id:{token}" not in top:
        raise BackendResponseError("vLLM ignored logprob_token_ids (it needs a vLLM whose completions endpoint "
                                   "has it); use KGV_LM__VLLM_SCORING=prompt_logprobs")
    return _logprob(top[f"token_id:{token}"])


def estimator_from_settings(lm, blocking: Blocking | None = None):
    """The `lm` estimator on vLLM (KGV_LM__BASE_URL, KGV_LM__MODEL = the served model name)."""
    from pathlib import Path

    from ...pipeline.errors import BackendNotConfiguredError
    from .causal_lm import LmEstimator

    if not lm.model:
        raise BackendNotConfiguredError("KGV_LM__BACKEND=vllm needs KGV_LM__MODEL (the served model name)")
    tokenizer_path = lm.tokenizer or (lm.model if Path(lm.model).is_dir() else None)
    tokenizer = None
    if tokenizer_path:
        from transformers import AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
        except (OSError, ValueError) as exc:
            raise BackendNotConfiguredError(f"cannot load the tokenizer {tokenizer_path!r}: {exc}") from exc
    client = VllmClient(lm.base_url, lm.api_key, timeout_s=lm.timeout_s, max_concurrency=lm.max_concurrency,
                        cache_salt=lm.vllm_cache_salt)  # the client salts every request
    causal = VllmCausalLm(client, lm.model, tokenizer, scoring=lm.vllm_scoring,
                          max_prompts_per_request=lm.vllm_max_prompts, blocking=blocking)
    return LmEstimator(causal, lm.max_context_tokens, blocking)
