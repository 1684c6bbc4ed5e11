"""Judges and the verdict cache: single flight under deadlines, and what the cache holds."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from server.backends.judges.cache import VerdictCache, cache_key
from server.backends.judges.embedded import EmbeddedJudge
from server.pipeline.deadline import Deadline
from server.pipeline.errors import BackendTimeoutError
from server.pipeline.runtime import Blocking
from server.pipeline.types import Evidence, EvidenceOrigin, JudgeItem, Judgement, LabelProbs, Tier, Verdict

SUPPORTED = Judgement(Verdict.SUPPORTED, LabelProbs(0.9, 0.05, 0.05), Tier.EMBEDDED)
ITEM = JudgeItem("Metformin is first-line.", (Evidence("treat-0001", "Metformin is the first-line drug.", "src",
                                                       "title", 0.7, EvidenceOrigin.KNOWLEDGE_BASE),))


class DeadlineJudge:
    """The first call never ends (a slow LLM tier); later calls answer at once, but, like the embedded judge's
    batcher, only while the deadline they are given has not passed."""

    name = "slow-first"
    prompt_version = "p1"

    def __init__(self):
        self.calls = 0

    async def judge(self, items, deadline):
        self.calls += 1
        if self.calls == 1:
            await asyncio.Event().wait()
        if deadline.expired():
            raise BackendTimeoutError("the deadline expired while waiting for the model")
        return [SUPPORTED for _ in items]


async def test_a_waiter_stops_waiting_with_time_left_to_judge_its_claims_itself():
    cache, judge = VerdictCache(100), DeadlineJudge()
    owner = asyncio.ensure_future(cache.judge_through(judge, [ITEM], Deadline.after(60)))
    while judge.calls < 1:
        await asyncio.sleep(0)
    (waiter,) = await cache.judge_through(judge, [ITEM], Deadline.after(1.0))
    assert judge.calls == 2 and waiter.verdict is Verdict.SUPPORTED and not waiter.cached
    owner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await owner


class EchoJudge:
    """Supports every claim, relying on its evidence in reverse order (the deciding evidence first)."""

    name = "echo"
    prompt_version = "p1"

    async def judge(self, items, deadline):
        return [Judgement(Verdict.SUPPORTED, LabelProbs(0.9, 0.05, 0.05), Tier.EMBEDDED,
                          evidence=tuple(reversed(item.evidence))) for item in items]


def _passages(n: int, tag: str, size: int = 10_000) -> tuple[Evidence, ...]:
    return tuple(Evidence(f"context:{i}", f"{tag} passage {i} " + "x" * size, "", "", 0.5, EvidenceOrigin.CONTEXT)
                 for i in range(n))


async def test_cached_verdicts_do_not_keep_the_evidence_texts_alive():
    """The cache is bounded in entries; an entry must not hold its evidence texts (up to top_k passages of
    max_passage_chars each), or 10,000 entries from long-context requests hold gigabytes."""
    import gc
    import tracemalloc

    cache, judge = VerdictCache(10_000), EchoJudge()
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for n in range(100):  # 100 requests, each one claim against 5 passages of 10,000 characters of its own
            await cache.judge_through(judge, [JudgeItem(f"claim {n}", _passages(5, f"request {n}"))], Deadline())
        gc.collect()
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(cache) == 100
    assert kept < 1_000_000  # the texts alone are 5 MB


async def test_a_hit_shows_this_request_s_evidence_in_the_stored_verdict_s_order():
    cache, judge = VerdictCache(100), EchoJudge()
    first = JudgeItem("claim", _passages(3, "same", size=10))
    (fresh,) = await cache.judge_through(judge, [first], Deadline())
    again = JudgeItem("claim", tuple(Evidence(e.fact_id, e.text, e.source, e.title, 0.9, e.origin)
                                      for e in first.evidence))
    (hit,) = await cache.judge_through(judge, [again], Deadline())
    assert hit.cached and [e.fact_id for e in hit.evidence] == [e.fact_id for e in fresh.evidence] == [
        "context:2", "context:1", "context:0"]
    assert all(e.score == 0.9 for e in hit.evidence)  # this request's evidence objects
    assert cache.get(cache_key(again, judge.name, judge.prompt_version, ""), again).evidence == hit.evidence


class UnsureScorer:
    name = "unsure"

    def predict_proba(self, pairs):
        return np.tile([0.2, 0.1, 0.7], (len(pairs), 1))


async def test_long_evidence_is_cut_into_windows_once_per_request_and_off_the_event_loop(monkeypatch):
    """Claims of one request share their context passages: cutting each into sentence windows for every claim
    (up to 50 passages of 10,000 characters per claim) held the event loop for seconds."""
    from server.backends.judges import aggregation

    cuts: list[threading.Thread] = []
    real = aggregation.windows

    def counting(text, policy):
        cuts.append(threading.current_thread())
        return real(text, policy)

    monkeypatch.setattr(aggregation, "windows", counting)
    passages = _passages(5, "shared", size=3000)
    judge = EmbeddedJudge(UnsureScorer(), Blocking(None))
    out = await judge.judge([JudgeItem(f"claim {n}", passages) for n in range(10)], Deadline())
    assert [j.verdict for j in out] == [Verdict.NOT_ENOUGH_INFO] * 10
    assert len(cuts) == 5 and threading.main_thread() not in cuts


def test_the_similarity_baseline_names_a_threshold_that_changes_its_verdicts():
    """KGV_JUDGE__SUPPORT_THRESHOLD changes the baseline's verdicts: provenance and the verdict cache must tell
    the two judges apart (the default keeps its name)."""
    from server.backends.judges.similarity import BASELINE_NAME, SimilarityPairScorer

    assert SimilarityPairScorer(object()).name == BASELINE_NAME
    assert SimilarityPairScorer(object(), threshold=0.5).name == f"{BASELINE_NAME}(threshold=0.5,slope=12)"
