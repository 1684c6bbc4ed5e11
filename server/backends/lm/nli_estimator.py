"""The `nli` InfoGain estimator: L_i = -log P(supported) of "The answer is A." given c_i.

A proxy for when no causal LM is configured: it uses the embedded judge's pair scorer and has no paper
mode. c_i must fit the scorer's input, which is cut from the right (the newest steps) when it is too long,
so the estimator fits it itself, in the scorer's tokens: the question is kept whole when everything fits,
else its end (where a vignette's question and options are) leaving the steps at least half of the room; the
newest steps that fit take the rest, and when not even the newest step fits, its end does. A step whose context lost text is flagged `truncated`.
"""

from __future__ import annotations

import math
import re
from typing import Callable, Sequence

from ...pipeline.deadline import Deadline
from ...pipeline.errors import InvalidArgumentError
from ...pipeline.runtime import Blocking
from ...pipeline.types import PrefixScores

_FLOOR = 1e-9
_HYPOTHESIS_HEAD = "The answer is"
_WORD = re.compile(r"\S+")

Counter = Callable[[Sequence[str]], list[int]]


def _chars(texts: Sequence[str]) -> list[int]:
    return [len(t) for t in texts]


def tail_that_fits(text: str, count: Counter, max_tokens: int, max_chars: int) -> str:
    """The longest end of `text` with at most max_tokens tokens and max_chars characters, cut at a word start
    (inside the last word only when that word alone is too long)."""
    if max_tokens <= 0 or max_chars <= 0 or not text.strip():
        return ""

    def fits(start: int) -> bool:
        return len(text) - start <= max_chars and count([text[start:]])[0] <= max_tokens

    cuts = [m.start() for m in _WORD.finditer(text)]
    if not fits(cuts[-1]):  # one word longer than the room: cut inside it
        cuts = list(range(cuts[-1], len(text)))
    lo, hi = 0, len(cuts)  # the first cut that fits: fits() is monotonic in the cut
    while lo < hi:
        mid = (lo + hi) // 2
        if fits(cuts[mid]):
            hi = mid
        else:
            lo = mid + 1
    return text[cuts[lo]:] if lo < len(cuts) else ""


def fitted_contexts(question: str, steps: Sequence[str], count: Counter, max_tokens: int,
                    max_chars: int, first: int = 0) -> list[tuple[str, bool]]:
    """(c_i, truncated) for i = first..n: c_i = the question and steps[:i], joined by newlines, within max_tokens
    (as `count` counts them) and max_chars. Each c_i costs tokenizer calls: an InfoGain window needs only two."""
    step_tokens = count(list(steps)) if steps else []
    # One question text for every c_i (a changing question would show up as gains): whole when everything
    # fits, else its end, leaving the steps at least half of the room.
    q_tokens = max(max_tokens // 2, max_tokens - sum(step_tokens))
    q_chars = max(max_chars // 2, max_chars - sum(len(s) + 1 for s in steps))
    head, q_cut = question, False
    if len(question) > q_chars or count([question])[0] > q_tokens:
        head, q_cut = tail_that_fits(question, count, q_tokens, q_chars), True
    room_tokens = max_tokens - (count([head])[0] if head else 0)
    room_chars = max_chars - len(head) - 1
    contexts = []
    for i in range(max(first, 0), len(steps) + 1):
        kept, tokens, chars = [], 0, 0
        for j in range(i - 1, -1, -1):  # newest first
            if tokens + step_tokens[j] > room_tokens or chars + len(steps[j]) + 1 > room_chars:
                break
            kept.append(steps[j])
            tokens, chars = tokens + step_tokens[j], chars + len(steps[j]) + 1
        cut = q_cut or len(kept) < i
        if i and not kept:  # not even the newest step fits: its end does
            kept = [tail_that_fits(steps[i - 1], count, room_tokens, room_chars - 1)]
        text = "\n".join([head, *reversed(kept)]) if head else "\n".join(reversed(kept))
        while len(kept) > 1 and count([text])[0] > max_tokens:  # joined text counts more: drop the oldest
            kept.pop()
            cut = True
            text = "\n".join([head, *reversed(kept)]) if head else "\n".join(reversed(kept))
        contexts.append((text, cut))
    return contexts


class NliEstimator:
    kind = "nli"

    def __init__(self, scorer, blocking: Blocking, max_chars: int = 1500, batcher=None):
        self.scorer = scorer
        self.name = f"nli:{scorer.name}"
        self._blocking = blocking
        self.max_chars = max_chars
        self._batcher = batcher  # server.batching.MicroBatcher of the scorer (shared with the judge); None = direct

    def _premise_room(self, hypothesis: str) -> int | None:
        """Tokens left for c_i next to the hypothesis; None for a scorer that counts characters only."""
        budget = getattr(self.scorer, "premise_budget", None)
        if budget is None or getattr(self.scorer, "count_tokens", None) is None:
            return None
        return budget(hypothesis)

    def fit_contexts(self, context0: str, steps: Sequence[str], hypothesis: str, room: int | None = None,
                     last: int | None = None) -> list[tuple[str, bool]]:
        """(c_i, truncated) for i = 0..n, or the last `last` of them; room: _premise_room(hypothesis) when the
        caller has it already."""
        first = 0 if not last else len(steps) + 1 - last
        count = getattr(self.scorer, "count_tokens", None)
        budget = getattr(self.scorer, "premise_budget", None)
        if count is None or budget is None:  # a scorer without a tokenizer: characters only
            return fitted_contexts(context0, steps, _chars, self.max_chars, self.max_chars, first)
        return fitted_contexts(context0, steps, count, budget(hypothesis) if room is None else room, self.max_chars,
                               first)

    def _room_and_contexts(self, context0: str, steps: Sequence[str], hypothesis: str,
                           last: int | None) -> tuple[int | None, list[tuple[str, bool]]]:
        """The premise room and the fitted c_i (none when there is no room), in one trip to the executor."""
        room = self._premise_room(hypothesis)
        if room is not None and room <= 0:
            return room, []
        return room, self.fit_contexts(context0, steps, hypothesis, room, last)

    async def score_prefixes(self, context0: str, steps: Sequence[str], target: str, deadline: Deadline,
                             last: int | None = None) -> PrefixScores:
        """L_0..L_n; with `last`, only the last that many of them (an InfoGain window needs two)."""
        hypothesis = f"{_HYPOTHESIS_HEAD} {target.strip()}."
        # tokenizer work, in one executor call: each call can wait behind a model batch on the shared workers
        room, contexts = await self._blocking.run(self._room_and_contexts, context0, list(steps), hypothesis, last)
        if room is not None and room <= 0:
            # Every c_i would be empty: equal L_i, gains of exactly 0 that no step earned. None, with why.
            count = len(steps) + 1 if last is None else min(last, len(steps) + 1)
            why = (f"the answer is too long for the nli estimator: \"{_HYPOTHESIS_HEAD}…\" fills the pair "
                   "scorer's whole input, leaving no room for the question and steps (use a causal LM estimator)")
            return PrefixScores(nll=(None,) * count, answer_tokens=0, null_reasons=(why,) * count)
        pairs = [(c, hypothesis) for c, _ in contexts]
        if self._batcher is not None:
            probs = await self._batcher.submit(pairs, deadline)
        else:
            probs = await self._blocking.run(self.scorer.predict_proba, pairs)
        nll = tuple(-math.log(max(float(p[0]), _FLOOR)) for p in probs)
        return PrefixScores(nll=nll, answer_tokens=0, truncated=tuple(t for _, t in contexts))

    async def paper_perplexities(self, context0, steps, target, deadline) -> list[float | None]:
        raise InvalidArgumentError.single("options.mode", "paper mode needs a causal LM; the nli estimator has none")

    async def ready(self) -> bool:
        return True
