"""A chain with more distinct knowledge claims than KGV_LIMITS__MAX_CLAIMS is refused before any retrieval or judging
(each claim costs a search and top_k judge pairs: 96,000 characters of short sentences in pre-split steps are
3,220 claims, ~16,000 pairs at top_k 5, minutes of work held by one call); repeated claims count once, and splitting alone stays unlimited."""

from __future__ import annotations

import pytest

from client.aio import AsyncVerifierClient
from client.errors import VerifierError
from server.app import start_server
from server.backends import registry
from tests.conftest import make_settings
from tests.fakes.backends import FakeJudge

LIMIT = 4


def _chain(n: int) -> str:
    return " ".join(f"Compound {i} inhibits enzyme {i} in the liver." for i in range(n))


@pytest.fixture
async def served(cache_dir, monkeypatch):
    judge = FakeJudge()
    monkeypatch.setitem(registry.JUDGES, "nli", lambda ctx: judge)
    server = await start_server(make_settings(cache_dir, kb={"enabled": False}, limits={"max_claims": LIMIT}),
                                ["127.0.0.1:0"])
    await server.wait_ready(300)
    yield server, judge
    await server.stop(0)


CONTEXT = ["Compound 0 inhibits enzyme 0 in the liver."]


async def test_over_the_limit_is_refused_naming_the_setting_and_nothing_is_judged(served):
    server, judge = served
    async with AsyncVerifierClient(server.addresses[0]) as client:
        for kwargs in ({"reasoning": _chain(LIMIT + 1)},
                       {"steps": [f"Compound {i} inhibits enzyme {i} in the liver." for i in range(LIMIT + 1)]}):
            with pytest.raises(VerifierError) as info:
                await client.score_knowledge(context=CONTEXT, **kwargs)
            assert info.value.code == "INVALID_ARGUMENT"
            field = "steps" if "steps" in kwargs else "reasoning"
            assert (field, f"has {LIMIT + 1} distinct knowledge claims; the limit is {LIMIT} "
                    "(KGV_LIMITS__MAX_CLAIMS): score the chain in several requests") in info.value.field_violations
    assert judge.calls == 0


async def test_at_the_limit_and_repeated_claims_are_scored_and_splitting_is_not_limited(served):
    server, judge = served
    async with AsyncVerifierClient(server.addresses[0]) as client:
        at_limit = await client.score_knowledge(reasoning=_chain(LIMIT), context=CONTEXT)
        repeated = await client.score_knowledge(reasoning=" ".join([_chain(LIMIT)] * 3), context=CONTEXT)
        split = await client.split(reasoning=_chain(LIMIT * 3))
    assert sum(len(s.claims) for s in at_limit.steps) == LIMIT
    assert sum(len(s.claims) for s in repeated.steps) == 3 * LIMIT
    assert judge.claims == 2 * LIMIT  # distinct claims judged once per request
    assert sum(len(s.claims) for s in split.steps) == 3 * LIMIT


async def test_score_chain_over_the_limit_gets_invalid_argument(served):
    server, judge = served
    async with AsyncVerifierClient(server.addresses[0]) as client:
        with pytest.raises(VerifierError) as info:
            await client.score_chain(reasoning=_chain(LIMIT + 1), context=CONTEXT, metrics=["ki"])
    assert info.value.code == "INVALID_ARGUMENT" and "KGV_LIMITS__MAX_CLAIMS" in info.value.message
    assert judge.calls == 0
