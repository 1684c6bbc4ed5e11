"""The verdict cache and a model swapped under the LLM judge's served name.

The compose file serves ${MODEL} as "judge": a vLLM restarted with other weights keeps the name, and verdicts cached
for the first model were served as the second's (the key held the judge's name only)."""

from __future__ import annotations

import asyncio

import pytest

from server.backends.judges import vllm_judge
from server.backends.judges.cache import VerdictCache
from server.backends.judges.cascade import CascadeJudge
from server.backends.judges.vllm_judge import VllmJudge
from server.backends.vllm_client import VllmClient
from server.pipeline.deadline import Deadline
from server.pipeline.errors import BackendUnavailableError
from server.pipeline.types import Evidence, EvidenceOrigin, JudgeItem, LabelProbs, Judgement, Tier, Verdict
from tests.fakes.vllm_server import FakeVllmServer, label_choice_reply

EVIDENCE = (Evidence("pharm-0011", "Warfarin is a vitamin K antagonist.", "BNF", "Warfarin", 0.8,
                     EvidenceOrigin.KNOWLEDGE_BASE),)
ITEM = JudgeItem("Warfarin is a direct thrombin inhibitor.", EVIDENCE)
SUPPORTS = {"A": 0.9, "B": 0.05, "C": 0.05}
CONTRADICTS = {"A": 0.05, "B": 0.9, "C": 0.05}


class Weights:
    """What the fake's model answers; swapped with the root /v1/models lists."""

    def __init__(self, fake: FakeVllmServer):
        self.fake, self.labels = fake, SUPPORTS
        fake.chat = lambda body: label_choice_reply(self.labels)

    def load(self, root: str, labels: dict[str, float]) -> None:
        self.fake.root, self.labels = root, labels


def chats(fake: FakeVllmServer) -> int:
    return sum(1 for path, _ in fake.requests if path.endswith("chat/completions"))


async def serving(judge, root: str) -> None:
    """Until the judge's background read has seen `root` behind the name (it reads every SERVED_TTL_S)."""
    async with asyncio.timeout(10):
        while not (await judge.cache_identity(Deadline.after(5)) or "").endswith("@" + root):
            await asyncio.sleep(0.01)


async def judge_twice(cache, judge, deadline):
    return [(await cache.judge_through(judge, [ITEM], deadline))[0] for _ in range(2)]


async def test_a_model_swapped_under_the_served_name_gets_its_own_verdicts(monkeypatch):
    monkeypatch.setattr(vllm_judge, "SERVED_TTL_S", 0.05)  # vLLM's restart outlasts the re-read interval
    with FakeVllmServer(model="judge", root="/models/judge-a") as fake:
        weights = Weights(fake)
        judge = VllmJudge(VllmClient(fake.base_url, max_retries=0), "judge")
        cache = VerdictCache(16)
        try:
            first, again = await judge_twice(cache, judge, Deadline.after(10))
            assert first.verdict is Verdict.SUPPORTED and not first.cached
            assert again.cached and chats(fake) == 1  # the same model: the cache serves it
            weights.load("/models/judge-b", CONTRADICTS)
            await serving(judge, "/models/judge-b")
            swapped, swapped_again = await judge_twice(cache, judge, Deadline.after(10))
        finally:
            await judge.aclose()
    assert swapped.verdict is Verdict.CONTRADICTED and not swapped.cached  # judged by the model now served
    assert swapped_again.cached and chats(fake) == 2


async def test_a_judging_call_that_finds_vllm_down_reads_the_model_again_next_time():
    """Within the re-read interval: vLLM going down and coming back is what a swap looks like from here."""
    with FakeVllmServer(model="judge", root="/models/judge-a") as fake:
        weights = Weights(fake)
        judge = VllmJudge(VllmClient(fake.base_url, max_retries=0), "judge")
        cache = VerdictCache(16)
        try:
            await judge_twice(cache, judge, Deadline.after(10))
            fake.faults.http_status = 503  # vLLM restarting
            with pytest.raises(BackendUnavailableError):
                await cache.judge_through(judge, [JudgeItem("Heparin is a vitamin K antagonist.", EVIDENCE)],
                                          Deadline.after(10))
            fake.faults.http_status = None
            weights.load("/models/judge-b", CONTRADICTS)
            back = (await cache.judge_through(judge, [ITEM], Deadline.after(10)))[0]
        finally:
            await judge.aclose()
    assert back.verdict is Verdict.CONTRADICTED and not back.cached


async def test_while_the_served_model_cannot_be_read_verdicts_are_neither_reused_nor_kept(monkeypatch):
    """E.g. /v1/models timing out under load while chat completions still answer."""
    with FakeVllmServer(model="judge") as fake:
        Weights(fake)
        client = VllmClient(fake.base_url, max_retries=0)

        async def unreadable(model, timeout_s=2.0):
            return False, None

        monkeypatch.setattr(client, "served_root", unreadable)
        judge = VllmJudge(client, "judge")
        cache = VerdictCache(16)
        try:
            first, again = await judge_twice(cache, judge, Deadline.after(10))
        finally:
            await judge.aclose()
    assert first.verdict is again.verdict is Verdict.SUPPORTED
    assert not again.cached and chats(fake) == 2 and len(cache) == 0
    assert cache.stats()["misses"] == 2  # a cache off for now shows 0% hits, not an idle cache


class Embedded:
    """An embedded tier that is never sure, so every claim is escalated."""

    name, prompt_version = "nli:test", "e1"

    async def judge(self, items, deadline):
        return [Judgement(Verdict.SUPPORTED, LabelProbs(0.4, 0.3, 0.3), Tier.EMBEDDED, evidence=i.evidence)
                for i in items]

    async def ready(self):
        return True


async def test_the_cascade_keys_its_verdicts_by_the_llm_tiers_model_too(monkeypatch):
    monkeypatch.setattr(vllm_judge, "SERVED_TTL_S", 0.05)
    with FakeVllmServer(model="judge", root="/models/judge-a") as fake:
        weights = Weights(fake)
        cascade = CascadeJudge(Embedded(), VllmJudge(VllmClient(fake.base_url, max_retries=0), "judge"), 0.9)
        cache = VerdictCache(16)
        try:
            first, again = await judge_twice(cache, cascade, Deadline.after(10))
            weights.load("/models/judge-b", CONTRADICTS)
            await serving(cascade.llm, "/models/judge-b")
            swapped = (await cache.judge_through(cascade, [ITEM], Deadline.after(10)))[0]
            identity = await cascade.cache_identity(Deadline.after(5))
        finally:
            await cascade.aclose()
    assert first.tier is Tier.LLM and again.cached
    assert swapped.verdict is Verdict.CONTRADICTED and not swapped.cached
    assert identity.endswith("vllm:judge@/models/judge-b]")


async def test_a_request_past_its_deadline_does_not_turn_the_cache_off_for_the_others():
    with FakeVllmServer(model="judge", root="/models/judge-a") as fake:
        Weights(fake)
        judge = VllmJudge(VllmClient(fake.base_url, max_retries=0), "judge")
        cache = VerdictCache(16)
        try:
            with pytest.raises(Exception):  # no time left to judge
                await cache.judge_through(judge, [ITEM], Deadline.after(0))
            await serving(judge, "/models/judge-a")  # (HEAD: unknown for 10 s after that request)
            before = chats(fake)
            results = [await cache.judge_through(judge, [ITEM, ITEM], Deadline.after(10)) for _ in range(3)]
        finally:
            await judge.aclose()
    assert chats(fake) - before == 1
    assert [j.cached for r in results for j in r] == [False, True, True, True, True, True]


class Confident(Embedded):
    async def judge(self, items, deadline):
        return [Judgement(Verdict.SUPPORTED, LabelProbs(0.97, 0.02, 0.01), Tier.EMBEDDED, evidence=i.evidence)
                for i in items]


async def test_a_vllm_that_never_answers_its_model_list_delays_one_request_not_every_one(monkeypatch):
    """A vLLM that accepts connections and answers nothing: the read of /v1/models hangs. The first request waits
    for it within SERVED_PROBE_S; the ones after it do not wait at all (the cascade answers from its embedded
    tier, degraded or not, in time)."""
    hung = asyncio.Event()
    with FakeVllmServer(model="judge") as fake:
        client = VllmClient(fake.base_url, max_retries=0)

        async def hangs(model, timeout_s=2.0):
            await hung.wait()
            return False, None

        monkeypatch.setattr(client, "served_root", hangs)
        cascade = CascadeJudge(Confident(), VllmJudge(client, "judge"), 0.9)
        cache = VerdictCache(16)
        try:
            monkeypatch.setattr(vllm_judge, "SERVED_PROBE_S", 0.05)
            first = await cache.judge_through(cascade, [ITEM], Deadline.after(10))
            monkeypatch.setattr(vllm_judge, "SERVED_PROBE_S", 120.0)  # a request waiting again would wait this long
            later = await asyncio.wait_for(cache.judge_through(cascade, [ITEM], Deadline.after(10)), 30)
        finally:
            hung.set()
            await cascade.aclose()
    assert first[0].verdict is later[0].verdict is Verdict.SUPPORTED and first[0].tier is Tier.EMBEDDED


async def test_callers_whose_deadlines_run_out_do_not_turn_the_cache_off_for_the_others():
    """A client sending requests with no time left (its own deadline: the LLM call times out at once) while others
    are served: every timeout was taken for an outage and the model for unknown, so nobody got a cached verdict."""
    with FakeVllmServer(model="judge", root="/models/judge-a") as fake:
        Weights(fake)
        judge = VllmJudge(VllmClient(fake.base_url, max_retries=0), "judge")
        cache = VerdictCache(64)
        try:
            await serving(judge, "/models/judge-a")
            await cache.judge_through(judge, [ITEM], Deadline.after(10))
            served = []
            for n in range(10):
                with pytest.raises(Exception):
                    await cache.judge_through(judge, [JudgeItem(f"Claim {n} is late.", EVIDENCE)], Deadline.after(0))
                served += await cache.judge_through(judge, [ITEM], Deadline.after(10))
        finally:
            await judge.aclose()
    assert all(j.cached for j in served)


async def test_a_reader_task_that_ended_is_started_again():
    with FakeVllmServer(model="judge", root="/models/judge-a") as fake:
        weights = Weights(fake)
        judge = VllmJudge(VllmClient(fake.base_url, max_retries=0), "judge")
        try:
            await serving(judge, "/models/judge-a")
            judge._identity_task.cancel()  # (a stray cancel)
            await asyncio.sleep(0)
            weights.load("/models/judge-b", CONTRADICTS)
            judge._outage_seen()  # as after a call that found vLLM restarting
            await serving(judge, "/models/judge-b")
        finally:
            await judge.aclose()


async def test_a_rate_limiter_leaves_the_cascades_cached_llm_verdicts_served(monkeypatch):
    """A gateway throttling the judge (HTTP 429 on chat completions and on /v1/models): a 429 was taken for an outage,
    the model for unknown while /v1/models kept answering 429, and a claim whose LLM verdict was cached came back as
    the embedded tier's, degraded (contradicted -> supported), at the cost of one more call to a throttled LLM."""
    monkeypatch.setattr(vllm_judge, "SERVED_TTL_S", 0.05)  # the background read runs into the 429s as well
    with FakeVllmServer(model="judge", root="/models/judge-a") as fake:
        weights = Weights(fake)
        weights.load("/models/judge-a", CONTRADICTS)
        client = VllmClient(fake.base_url, max_retries=0)
        cascade = CascadeJudge(Embedded(), VllmJudge(client, "judge"), 0.9)
        cache = VerdictCache(16)
        try:
            first = (await cache.judge_through(cascade, [ITEM], Deadline.after(10)))[0]
            fake.faults.http_status = fake.faults.models_status = 429
            assert await client.served_root("judge") == (None, None)  # up, and says nothing of what it serves
            other = JudgeItem("Heparin is a vitamin K antagonist.", EVIDENCE)
            throttled = (await cache.judge_through(cascade, [other], Deadline.after(10)))[0]
            await asyncio.sleep(0.2)  # (several background reads, each answered 429)
            calls = chats(fake)
            again = (await cache.judge_through(cascade, [ITEM], Deadline.after(10)))[0]
            identity = await cascade.cache_identity(Deadline.after(5))
        finally:
            await cascade.aclose()
    assert first.verdict is Verdict.CONTRADICTED and first.tier is Tier.LLM
    assert throttled.tier is Tier.DEGRADED and "429" in throttled.error
    assert again.cached and again.verdict is Verdict.CONTRADICTED and again.tier is Tier.LLM
    assert chats(fake) == calls and identity.endswith("vllm:judge@/models/judge-a]")
