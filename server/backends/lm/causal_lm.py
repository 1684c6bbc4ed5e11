"""The `CausalLm` port, the pinned InfoGain tokenization, and `LmEstimator` (InfoGain on any causal LM).

Pinned tokenization (every backend agrees on it): prefix ids = tokens of
c_i + " Answer:" with the tokenizer's leading special tokens (BOS) if it adds
any; answer ids = tokens of " " + A without special tokens (of A alone when
the tokenizer itself starts every text with a word boundary, SentencePiece's
dummy prefix, which would otherwise make that space a second one); the scored
sequence is their concatenation. Paper mode scores the jointly tokenized
string c_i + " Answer: " + A with the tokenizer's default special tokens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Protocol, Sequence, TypeVar, runtime_checkable

from ...pipeline.deadline import Deadline
from ...pipeline.errors import BackendResponseError
from ...pipeline.info_gain import NO_WINDOW_ADVICE, gather_or_cancel
from ...pipeline.runtime import Blocking
from ...pipeline.types import PrefixScores

T = TypeVar("T")

ANSWER_CUE = " Answer:"
PAPER_CUE = " Answer: "
ZERO_PROBABILITY = "the LM gives the answer zero probability after this prefix (log-probability -inf)"
_BOS_PROBE = "a"
_SPACE_PROBE = "a"
# Copies up to these sizes take well under a millisecond: done on the event loop, they cost less than a hop to the
# executor, which can wait behind a model call. Larger ones (at the request limits: millions) run there. Token ids
# are list items (a reference each), characters a memcpy: ~0.3 ms for 16K ids, ~0.1 ms for 256K characters.
INLINE_COPY_CHARS = 1 << 18
INLINE_COPY_TOKENS = 1 << 14


@dataclass(frozen=True)
class ScoringJob:
    """Token sequences that share most of their prefix; tokens seq[starts[k]:] of sequence k are scored."""

    sequences: tuple[tuple[int, ...], ...]
    starts: tuple[int, ...]
    # Every token after the first is scored (paper mode): no shared prefix to reuse, so a backend that could
    # score token by token from its prefix cache must score whole sequences instead.
    whole_sequences: bool = False


@dataclass(frozen=True)
class JobLogprobs:
    """log p(seq[t] | seq[:t]) for each scored t, per sequence; -inf = zero probability."""

    logprobs: tuple[tuple[float, ...], ...]
    prefill_tokens: int  # tokens the LM processed for this job
    calls: int = 0  # requests to a remote LM


@runtime_checkable
class CausalLm(Protocol):
    """A causal language model that scores token sequences exactly."""

    name: str  # e.g. "transformers:<model>", "vllm:<served name>"

    async def tokenize(self, texts: Sequence[str], add_special_tokens: bool, deadline: Deadline) -> list[list[int]]:
        """Token ids of each text with the model's own tokenizer."""

    async def context_tokens(self, deadline: Deadline) -> int | None:
        """Longest sequence it can score (tokens); None = unknown."""

    async def score(self, job: ScoringJob, deadline: Deadline) -> JobLogprobs: ...

    async def ready(self) -> bool: ...

    async def aclose(self) -> None: ...


def render_contexts(context0: str, steps: Sequence[str]) -> list[str]:
    """c_0..c_n with c_i = c_{i-1} + "\\n" + s_i."""
    contexts = [context0]
    for step in steps:
        contexts.append(contexts[-1] + "\n" + step)
    return contexts


def leading_specials(with_specials: Sequence[int], without: Sequence[int]) -> list[int]:
    """The special tokens a tokenizer puts before the text (BOS), from one text tokenized both ways."""
    n = len(without)
    for start in range(len(with_specials) - n + 1):
        if list(with_specials[start:start + n]) == list(without):
            return list(with_specials[:start])
    raise BackendResponseError("the tokenizer changes the text's tokens when it adds special tokens")


class LmEstimator:
    """The `lm` InfoGain estimator: exact answer log-probabilities from a CausalLm."""

    kind = "lm"

    def __init__(self, lm: CausalLm, max_context_tokens: int | None = None, blocking: Blocking | None = None):
        self.lm = lm
        self.name = f"lm:{lm.name}"
        self._max_context = max_context_tokens
        # The server's bounded executor for blocking work (the one its LM runs on), so that these copies are
        # counted and bounded like the rest, not run on asyncio's default executor beside it.
        self._blocking = blocking or Blocking(None)
        self._bos: list[int] | None = None
        self._space_supplied: bool | None = None
        self._probed_generation = 0  # the LM's tokenizer_generation the two probes above were made with

    @property
    def served_model(self) -> str:
        """The weights behind a vLLM LM's model name as last read ("" for a local LM): the provenance's
        estimator_model."""
        return getattr(self.lm, "served_model", "")

    async def _copy(self, size: int, inline_limit: int, make: Callable[[], T]) -> T:
        """make() on the event loop when what it copies is small, else on the server's executor."""
        if size <= inline_limit:
            return make()
        return await self._blocking.run(make)

    def _forget_stale_probes(self) -> None:
        """Drops the BOS and space probes when the LM says its tokenizer may have changed (vLLM serving another
        model under the same name): kept, they put the old model's BOS (or none) before every prompt and scored
        an extra space token or none, silently."""
        generation = getattr(self.lm, "tokenizer_generation", 0)
        if generation != self._probed_generation:
            self._bos = self._space_supplied = None
            self._probed_generation = generation

    async def _leading(self, deadline: Deadline) -> list[int]:
        if self._bos is None:
            both = await gather_or_cancel(self.lm.tokenize([_BOS_PROBE], True, deadline),
                                        self.lm.tokenize([_BOS_PROBE], False, deadline))
            self._bos = leading_specials(both[0][0], both[1][0])
        return self._bos

    async def _answer_text(self, target: str, deadline: Deadline) -> str:
        """The text whose tokens are the answer ids: " " + A, or A when the tokenizer supplies the space.

        A SentencePiece tokenizer with a dummy prefix (Llama-2, Mistral-7B) encodes "a" as "▁a", and " a" as
        "▁▁a": " " + A would score "Answer:  A", with a token for the extra space, not the answer as it
        follows the cue. Such a tokenizer encodes "a a" as the tokens of "a" twice."""
        if self._space_supplied is None:
            one, two = await gather_or_cancel(self.lm.tokenize([_SPACE_PROBE], False, deadline),
                                            self.lm.tokenize([f"{_SPACE_PROBE} {_SPACE_PROBE}"], False, deadline))
            self._space_supplied = list(two[0]) == list(one[0]) * 2
        return target if self._space_supplied else " " + target

    async def _limit(self, deadline: Deadline) -> int | None:
        if not getattr(self.lm, "context_is_hard", False):
            return await self.lm.context_tokens(deadline) if self._max_context is None else self._max_context
        # vLLM rejects a longer prompt (HTTP 400, the whole call failing), so the setting can only lower it.
        hard = await self.lm.context_tokens(deadline)
        if hard is None and self._max_context is None:
            # Unchecked prompts would be sent, and one over the context makes vLLM reject its whole request.
            raise BackendResponseError("vLLM's /v1/models gives no max_model_len for the model (a gateway in front "
                                       "of vLLM?): set KGV_LM__MAX_CONTEXT_TOKENS to its context length")
        if hard is None or self._max_context is None:
            return self._max_context if hard is None else hard
        return min(self._max_context, hard)

    async def answer_sequences(self, context0: str, steps: Sequence[str], target: str,
                               deadline: Deadline) -> tuple[list[list[int]], int]:
        """The pinned sequences (prefix ids + answer ids) of c_0..c_n, and the number of answer ids."""
        # Off the event loop: at the request limits the n+1 contexts hold millions of characters and tokens, and
        # copying them here stalled every other request on the server for a fraction of a second.
        texts = await self._copy(_context_chars(context0, steps), INLINE_COPY_CHARS,
                                 lambda: [c + ANSWER_CUE for c in render_contexts(context0, steps)])
        self._forget_stale_probes()
        answer_text = await self._answer_text(target, deadline)
        bos, (answer, *prefixes) = await gather_or_cancel(
            self._leading(deadline), self.lm.tokenize([answer_text, *texts], False, deadline))
        if not answer:
            raise BackendResponseError("the target tokenizes to no tokens")
        size = sum(map(len, prefixes)) + len(prefixes) * (len(bos) + len(answer))
        return await self._copy(size, INLINE_COPY_TOKENS, lambda: [bos + p + answer for p in prefixes]), len(answer)

    async def score_prefixes(self, context0: str, steps: Sequence[str], target: str,
                             deadline: Deadline) -> PrefixScores:
        limit = await self._limit(deadline)  # first: reading the LM's context also tells a change of its model
        sequences, n_answer = await self.answer_sequences(context0, steps, target, deadline)
        fit, reason = _fitting(sequences, limit)
        nll: list[float | None] = [None] * len(sequences)
        why = [""] * len(sequences)
        prefill = calls = 0
        if fit:
            job = await self._copy(sum(map(len, sequences[:fit])), INLINE_COPY_TOKENS, lambda: ScoringJob(
                tuple(tuple(s) for s in sequences[:fit]), tuple(len(s) - n_answer for s in sequences[:fit])))
            result = await self.lm.score(job, deadline)
            _check_shape(result, job)
            prefill, calls = result.prefill_tokens, result.calls
            for i, lps in enumerate(result.logprobs):
                total = -math.fsum(lps)
                if total == math.inf:  # a log-probability of -inf, and no NaN
                    why[i] = ZERO_PROBABILITY
                else:
                    nll[i] = total  # NaN (a numerical failure, e.g. fp16 overflow) is nulled as non-finite
        return PrefixScores(nll=tuple(nll), answer_tokens=n_answer, prefill_tokens=prefill, llm_calls=calls,
                              overflow_reason=reason, null_reasons=tuple(why))

    async def paper_perplexities(self, context0: str, steps: Sequence[str], target: str,
                                 deadline: Deadline) -> list[float | None]:
        """PPL_i of c_i + " Answer: " + A over every token after the first (default special tokens)."""
        texts = await self._copy(_context_chars(context0, steps) + (len(steps) + 1) * len(target), INLINE_COPY_CHARS,
                                 lambda: [c + PAPER_CUE + target for c in render_contexts(context0, steps)])
        sequences = await self.lm.tokenize(texts, True, deadline)
        fit, _ = _fitting(sequences, await self._limit(deadline))
        ppl: list[float | None] = [None] * len(sequences)
        scorable = [i for i in range(fit) if len(sequences[i]) >= 2]
        if scorable:
            job = await self._copy(sum(len(sequences[i]) for i in scorable), INLINE_COPY_TOKENS, lambda: ScoringJob(
                tuple(tuple(sequences[i]) for i in scorable), tuple(1 for _ in scorable), whole_sequences=True))
            result = await self.lm.score(job, deadline)
            _check_shape(result, job)
            for i, lps in zip(scorable, result.logprobs):
                mean_nll = -math.fsum(lps) / len(lps)
                # A zero-probability token or an overflowing exp leaves PPL_i undefined (null).
                ppl[i] = math.exp(mean_nll) if math.isfinite(mean_nll) and mean_nll < 700 else None
        return ppl

    async def ready(self) -> bool:
        return await self.lm.ready()

    async def aclose(self) -> None:
        await self.lm.aclose()


def _context_chars(context0: str, steps: Sequence[str]) -> int:
    """Characters in c_0..c_n together (c_i repeats c_0 and the first i steps)."""
    n = len(steps)
    return (n + 1) * len(context0) + sum((n - i) * (len(step) + 1) for i, step in enumerate(steps))


def _fitting(sequences: Sequence[Sequence[int]], limit: int | None) -> tuple[int, str]:
    """How many leading sequences fit the context (every later one is dropped too), and why the rest do not."""
    if limit is None:
        return len(sequences), ""
    for i, seq in enumerate(sequences):
        if len(seq) > limit:
            # (every later prefix holds this one: the reason is theirs too, so it names the first that overflows)
            return i, (f"the first prefix that does not fit is {len(seq)} tokens with the answer; the LM's context "
                       f"is {limit} tokens ({NO_WINDOW_ADVICE})")
    return len(sequences), ""


def _check_shape(result: JobLogprobs, job: ScoringJob) -> None:
    expected = [len(s) - st for s, st in zip(job.sequences, job.starts)]
    if [len(lp) for lp in result.logprobs] != expected:
        raise BackendResponseError("the LM returned log-probabilities for the wrong number of tokens")
