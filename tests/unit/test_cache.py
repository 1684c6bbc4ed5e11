"""The verdict cache: keys, LRU bound, what is never cached, counters, thread and task safety."""

from __future__ import annotations

import asyncio
import threading

import pytest

from server.backends.judges.cache import VerdictCache, cache_key, normalize_claim
from server.pipeline.deadline import Deadline
from server.pipeline.types import Evidence, EvidenceOrigin, JudgeItem, Judgement, LabelProbs, Tier, Verdict

SUPPORTED = Judgement(Verdict.SUPPORTED, LabelProbs(0.9, 0.05, 0.05), Tier.LLM, llm_calls=1)


def ev(fact_id: str, text: str, origin=EvidenceOrigin.KNOWLEDGE_BASE) -> Evidence:
    return Evidence(fact_id, text, "src", "title", 0.7, origin)


ITEM = JudgeItem("Metformin is first-line.", (ev("treat-0001", "Metformin is the first-line drug."),))


def key(item=ITEM, judge="nli", version="v1", kb="kb-1"):
    return cache_key(item, judge, version, kb)


def test_claims_equal_up_to_whitespace_and_unicode_form_share_a_key():
    assert normalize_claim("  Metformin\u00a0is\n first-line. ") == "Metformin is first-line."
    same = JudgeItem(" Metformin  is first-line.\n", ITEM.evidence)
    assert key(same) == key()
    assert key(JudgeItem("metformin is first-line.", ITEM.evidence)) != key()  # case can change meaning
    assert key(JudgeItem("Metformin is first-line.".replace("e", "e\u0301", 1), ITEM.evidence)) == \
        key(JudgeItem("Metformin is first-line.".replace("e", "\u00e9", 1), ITEM.evidence))  # é either way


@pytest.mark.parametrize("one, other", [("The dose is 10\u2075 units.", "The dose is 105 units."),
                                        ("Area grows with r\u00b2.", "Area grows with r2."),
                                        ("Give 1\u20442 tablet.", "Give 1/2 tablet.")])
def test_claims_that_differ_in_compatibility_characters_are_different_claims(one, other):
    """Superscripts and fractions change what a claim says (10^5 is not 105): never one key."""
    assert key(JudgeItem(one, ITEM.evidence)) != key(JudgeItem(other, ITEM.evidence))


@pytest.mark.parametrize("change", ["evidence_id", "evidence_text", "evidence_title", "judge", "version", "kb", "origin"])
def test_every_part_of_the_key_matters(change):
    e = ITEM.evidence[0]
    other = {
        "evidence_id": lambda: key(JudgeItem(ITEM.claim, (ev("treat-0002", e.text),))),
        # context passages are named by the caller ("context:0" in every request): the text must count
        "evidence_text": lambda: key(JudgeItem(ITEM.claim, (ev(e.fact_id, "Insulin is first-line."),))),
        "evidence_title": lambda: key(JudgeItem(ITEM.claim, (Evidence(e.fact_id, e.text, "src", "T2", 0.7,
                                                                       e.origin),))),
        "judge": lambda: key(judge="vllm:judge"),
        "version": lambda: key(version="v2"),
        "kb": lambda: key(kb="kb-2"),
        "origin": lambda: key(JudgeItem(ITEM.claim, (ev(e.fact_id, e.text, EvidenceOrigin.CONTEXT),))),
    }[change]()
    assert other != key()


def test_hits_are_marked_cached_and_cost_no_llm_calls():
    cache = VerdictCache(10)
    assert cache.get(key()) is None
    cache.put(key(), SUPPORTED)
    hit = cache.get(key())
    assert hit.cached and hit.llm_calls == 0 and hit.verdict is Verdict.SUPPORTED and hit.tier is Tier.LLM
    assert cache.stats() == {"hits": 1, "misses": 1, "evictions": 0, "size": 1, "max_entries": 10}


def test_errors_and_degraded_verdicts_are_never_cached():
    cache = VerdictCache(10)
    cache.put(key(), Judgement(Verdict.ERROR, None, Tier.LLM, error="bad output"))
    cache.put(key(kb="kb-2"), Judgement(Verdict.SUPPORTED, LabelProbs(0.7, 0.1, 0.2), Tier.DEGRADED))
    assert len(cache) == 0


def test_least_recently_used_entries_are_evicted_first():
    cache = VerdictCache(2)
    cache.put(key(kb="a"), SUPPORTED)
    cache.put(key(kb="b"), SUPPORTED)
    assert cache.get(key(kb="a")) is not None  # a is now the most recent
    cache.put(key(kb="c"), SUPPORTED)
    assert cache.get(key(kb="b")) is None and cache.get(key(kb="a")) and cache.get(key(kb="c"))
    assert cache.evictions == 1 and len(cache) == 2


def test_the_bound_holds_under_concurrent_threads():
    cache = VerdictCache(50)
    barrier = threading.Barrier(8)

    def worker(n: int) -> None:
        barrier.wait()
        for i in range(2_000):
            k = key(kb=f"{(n * 7 + i) % 120}")
            if cache.get(k) is None:
                cache.put(k, SUPPORTED)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stats = cache.stats()
    assert stats["hits"] + stats["misses"] == 8 * 2_000
    assert stats["size"] == 50 and stats["evictions"] > 0


class CountingJudge:
    name = "counting"
    prompt_version = "p1"

    def __init__(self):
        self.seen: list[str] = []

    async def judge(self, items, deadline):
        self.seen.extend(item.claim for item in items)
        await asyncio.sleep(0)  # let concurrent requests interleave
        return [SUPPORTED if "error" not in item.claim else Judgement(Verdict.ERROR, None, Tier.LLM, error="x")
                for item in items]

    async def ready(self):
        return True


async def test_judge_through_judges_only_the_misses_and_keeps_order():
    cache, judge = VerdictCache(100), CountingJudge()
    lookups: list[tuple[int, int]] = []
    cache.on_lookups = lambda hits, misses: lookups.append((hits, misses))
    items = [JudgeItem(f"claim {i}", ITEM.evidence) for i in range(4)]
    first = await cache.judge_through(judge, items[:2], Deadline(), "kb-1")
    assert [j.cached for j in first] == [False, False]
    second = await cache.judge_through(judge, items, Deadline(), "kb-1")
    assert [j.cached for j in second] == [True, True, False, False]
    assert judge.seen == ["claim 0", "claim 1", "claim 2", "claim 3"]
    await cache.judge_through(judge, items[:1], Deadline(), "kb-other")
    assert judge.seen[-1] == "claim 0"  # another KB is another key
    assert lookups == [(0, 2), (2, 2), (0, 1)]


async def test_errors_are_judged_again_next_time():
    cache, judge = VerdictCache(100), CountingJudge()
    items = [JudgeItem("an error claim", ITEM.evidence)]
    await cache.judge_through(judge, items, Deadline())
    again = await cache.judge_through(judge, items, Deadline())
    assert again[0].verdict is Verdict.ERROR and not again[0].cached and judge.seen.count("an error claim") == 2


async def test_concurrent_tasks_share_the_cache_safely():
    cache, judge = VerdictCache(1_000), CountingJudge()
    items = [JudgeItem(f"claim {i % 10}", ITEM.evidence) for i in range(40)]
    results = await asyncio.gather(*(cache.judge_through(judge, [item], Deadline()) for item in items))
    assert all(r[0].verdict is Verdict.SUPPORTED for r in results)
    assert len(cache) == 10 and cache.hits + cache.misses == 40


def test_a_cache_needs_room_for_one_entry():
    with pytest.raises(ValueError):
        VerdictCache(0)


class GatedJudge:
    """Holds every call at a gate; fails or errs on demand; records what it judged."""

    name = "gated"
    prompt_version = "p1"

    def __init__(self, fail_first: Exception | None = None, error_first: bool = False):
        self.gate = asyncio.Event()
        self.calls: list[list[str]] = []
        self.fail_first, self.error_first = fail_first, error_first

    async def judge(self, items, deadline):
        self.calls.append([item.claim for item in items])
        first = len(self.calls) == 1
        await self.gate.wait()
        if first and self.fail_first is not None:
            raise self.fail_first
        if first and self.error_first:
            return [Judgement(Verdict.ERROR, None, Tier.LLM, error="malformed", llm_calls=1) for _ in items]
        return [SUPPORTED for _ in items]


async def _until_called(judge, times):
    while len(judge.calls) < times:
        await asyncio.sleep(0)


async def test_a_claim_being_judged_for_another_request_is_judged_once():
    cache, judge = VerdictCache(100), GatedJudge()
    first = asyncio.ensure_future(cache.judge_through(judge, [ITEM], Deadline()))
    await _until_called(judge, 1)
    other = JudgeItem("another claim", ITEM.evidence)
    second = asyncio.ensure_future(cache.judge_through(judge, [ITEM, other], Deadline()))
    await _until_called(judge, 2)
    judge.gate.set()
    (a,), (b, c) = await first, await second
    assert judge.calls == [[ITEM.claim], ["another claim"]]  # the shared claim went to the judge once
    assert a.verdict is b.verdict is Verdict.SUPPORTED and not a.cached and a.llm_calls == 1
    assert b.cached and b.llm_calls == 0 and not c.cached
    assert cache.hits == 1 and cache.misses == 2


async def test_a_claim_repeated_within_one_request_is_judged_once():
    cache, judge = VerdictCache(100), GatedJudge()
    judge.gate.set()
    a, b = await cache.judge_through(judge, [ITEM, JudgeItem(" Metformin  is first-line.", ITEM.evidence)],
                                     Deadline())
    assert judge.calls == [[ITEM.claim]]
    assert not a.cached and a.llm_calls == 1 and b.cached and b.llm_calls == 0


@pytest.mark.parametrize("judge", [GatedJudge(fail_first=RuntimeError("vLLM down")), GatedJudge(error_first=True)],
                         ids=["owner-fails", "owner-gets-error"])
async def test_waiters_judge_on_their_own_when_the_shared_judging_gives_nothing_to_share(judge):
    cache = VerdictCache(100)
    first = asyncio.ensure_future(cache.judge_through(judge, [ITEM], Deadline()))
    await _until_called(judge, 1)
    second = asyncio.ensure_future(cache.judge_through(judge, [ITEM], Deadline()))
    for _ in range(20):
        await asyncio.sleep(0)
    assert len(judge.calls) == 1  # waiting on the first request's judging
    judge.gate.set()
    (b,) = await second
    assert judge.calls == [[ITEM.claim], [ITEM.claim]]
    assert b.verdict is Verdict.SUPPORTED and not b.cached and b.llm_calls == 1
    if judge.fail_first is not None:
        with pytest.raises(RuntimeError):
            await first
    else:
        assert (await first)[0].verdict is Verdict.ERROR


async def test_a_waiter_outlives_a_cancelled_owner():
    cache, judge = VerdictCache(100), GatedJudge()
    first = asyncio.ensure_future(cache.judge_through(judge, [ITEM], Deadline()))
    await _until_called(judge, 1)
    second = asyncio.ensure_future(cache.judge_through(judge, [ITEM], Deadline()))
    for _ in range(20):
        await asyncio.sleep(0)
    first.cancel()
    await _until_called(judge, 2)
    judge.gate.set()
    (b,) = await second
    assert b.verdict is Verdict.SUPPORTED and not b.cached
    assert first.cancelled() and not cache._inflight


async def test_lookups_are_counted_also_when_judging_fails():
    cache, judge = VerdictCache(100), GatedJudge(fail_first=RuntimeError("vLLM down"))
    judge.gate.set()
    cache.put(key(judge="gated", version="p1", kb=""), SUPPORTED)
    lookups: list[tuple[int, int]] = []
    cache.on_lookups = lambda hits, misses: lookups.append((hits, misses))
    with pytest.raises(RuntimeError):
        await cache.judge_through(judge, [ITEM, JudgeItem("another claim", ITEM.evidence)], Deadline())
    assert lookups == [(1, 1)] and cache.hits == 1 and cache.misses == 1


async def test_a_hit_shows_this_request_s_evidence_scores_in_the_verdict_s_order():
    """The key holds what the judge read, not retrieval scores: a hit from a hybrid search must not show a dense
    search its RRF scores."""
    import dataclasses

    a, b = ev("f-a", "Fact A."), ev("f-b", "Fact B.")

    class DecidingSecond(CountingJudge):
        async def judge(self, items, deadline):
            return [dataclasses.replace(SUPPORTED, evidence=(item.evidence[1], item.evidence[0])) for item in items]

    cache, judge = VerdictCache(100), DecidingSecond()
    hybrid = JudgeItem("claim", (dataclasses.replace(a, score=0.0221), dataclasses.replace(b, score=0.0216)))
    dense = JudgeItem("claim", (dataclasses.replace(a, score=0.831), dataclasses.replace(b, score=0.684)))
    first = (await cache.judge_through(judge, [hybrid], Deadline(), "kb-1"))[0]
    hit = (await cache.judge_through(judge, [dense], Deadline(), "kb-1"))[0]
    assert hit.cached and [e.score for e in first.evidence] == [0.0216, 0.0221]
    assert [(e.fact_id, e.score) for e in hit.evidence] == [("f-b", 0.684), ("f-a", 0.831)]
