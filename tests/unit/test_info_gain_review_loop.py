"""InfoGain review: the LM estimator builds the n+1 contexts and token sequences off the event loop."""

from __future__ import annotations

import threading

from server.backends.lm import causal_lm
from server.backends.lm.causal_lm import LmEstimator
from server.pipeline.deadline import NO_DEADLINE
from tests.helpers.char_lm import CharLm


async def test_contexts_and_the_scoring_job_are_built_off_the_event_loop(monkeypatch):
    """At the request limits (256 steps, 100k characters) the n+1 contexts hold millions of characters and
    tokens; building them and the job on the event loop stalled every other request (0.7 s measured). (A short
    chain's copies stay on the loop: tests/unit/test_runtime_review.py.)"""
    loop_thread = threading.get_ident()
    threads = []

    def spy(name, real):
        def wrapper(*args, **kwargs):
            threads.append((name, threading.get_ident() != loop_thread))
            return real(*args, **kwargs)
        monkeypatch.setattr(causal_lm, name, wrapper)

    spy("render_contexts", causal_lm.render_contexts)
    spy("ScoringJob", causal_lm.ScoringJob)
    steps = [f"step {i} " + "x" * 400 for i in range(60)]  # ~750k characters of contexts, ~750k tokens
    assert causal_lm._context_chars("Q?", steps) > causal_lm.INLINE_COPY_CHARS
    scores = await LmEstimator(CharLm()).score_prefixes("Q?", steps, "ok", NO_DEADLINE)
    assert scores.nll == (3.0,) * (len(steps) + 1)
    assert threads == [("render_contexts", True), ("ScoringJob", True)]
    threads.clear()
    ppl = await LmEstimator(CharLm()).paper_perplexities("Q?", steps, "ok", NO_DEADLINE)
    assert all(p is not None for p in ppl)
    assert threads == [("render_contexts", True), ("ScoringJob", True)]  # paper mode too
