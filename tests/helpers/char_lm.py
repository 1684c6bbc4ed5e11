"""A causal-LM port stand-in for estimator tests: one token per character, log-probability -1 per scored token."""

from __future__ import annotations

from server.backends.lm.causal_lm import JobLogprobs


class CharLm:
    name = "chars"

    async def tokenize(self, texts, add_special_tokens, deadline):
        return [[ord(c) for c in text] for text in texts]

    async def context_tokens(self, deadline):
        return None

    def logprobs(self, k: int, scored: int) -> tuple[float, ...]:
        """Log-probabilities of sequence k's `scored` tokens (override to inject values)."""
        return tuple([-1.0] * scored)

    async def score(self, job, deadline):
        return JobLogprobs(tuple(self.logprobs(k, len(seq) - start)
                                 for k, (seq, start) in enumerate(zip(job.sequences, job.starts))), 0)
