"""KI pipeline review: ScoreChain's two metrics fail together, the verdict cache key, validation of the KI options."""

from __future__ import annotations

import asyncio
import json

import pytest

from server.backends.judges.aggregation import AggregationPolicy, windows
from server.backends.judges.cache import VerdictCache, cache_key
from server.backends.judges.embedded import EmbeddedJudge
from server.backends.registry import SHIPPED_NLI_MODEL
from server.pipeline import scoring
from server.pipeline.deadline import Deadline
from server.pipeline.deps import PipelineDeps
from server.pipeline.errors import BackendUnavailableError
from server.pipeline.runtime import Blocking
from server.pipeline.splitter import RuleSplitter
from server.pipeline.types import (ChainInput, ChainRequest, Evidence, EvidenceOrigin, InfoGainRequest, JudgeItem,
                                   Judgement, KnowledgeOptions, KnowledgeRequest, LabelProbs, Passage, Tier, Verdict)
from server.pipeline.validation import Limits
from tests.conftest import REPO
from tests.fakes.backends import FakeEstimator, FakeJudge

import numpy as np

CHAIN = ChainInput(question="Which drug is first-line for type 2 diabetes?",
                   steps=("Metformin is the usual first-line drug for type 2 diabetes.", "So the answer is metformin."))


def _deps(judge, estimator) -> PipelineDeps:
    splitter = RuleSplitter()

    async def get_splitter(name):
        return splitter

    async def get_judge(name):
        return judge

    async def get_estimator(name):
        return estimator

    async def embed(texts, deadline):
        return np.ones((len(texts), 4), dtype=np.float32)

    return PipelineDeps(limits=Limits(), blocking=Blocking(None), splitter=get_splitter, judge=get_judge,
                        estimator=get_estimator, knowledge_base=lambda: None, embedder=lambda: None, embed=embed)


async def test_score_chain_fails_as_soon_as_one_metric_fails_and_stops_the_other():
    """InfoGain's LM down (UNAVAILABLE, the one code clients retry) while the judge is still busy: the call fails
    UNAVAILABLE at once and the judging stops, instead of waiting for it (a hung or slow judge turned the outage
    into DEADLINE_EXCEEDED, and every retry paid for a full KI that was thrown away)."""
    judge = FakeJudge(gate=asyncio.Event())  # never opened: the judge would wait forever
    deps = _deps(judge, FakeEstimator(down=True))
    req = ChainRequest(
        KnowledgeRequest(CHAIN, (Passage("p", "Metformin is first-line therapy for type 2 diabetes."),)),
        InfoGainRequest(CHAIN, answer="metformin"))
    call = asyncio.ensure_future(scoring.chain(req, deps, Deadline()))
    # a guard against hanging, not a timing assertion: the failure comes as soon as the estimator answers
    done, _ = await asyncio.wait([call], timeout=30)
    if not done:
        judge.gate.set()
        await asyncio.wait([call])
        pytest.fail("ScoreChain waited for the knowledge score after InfoGain had failed")
    with pytest.raises(BackendUnavailableError, match="fake estimator"):
        call.result()
    assert judge.waiting == 1
    await asyncio.sleep(0)
    judge.gate.set()  # a judging task still running would now go on and return
    await asyncio.sleep(0)
    assert not [t for t in asyncio.all_tasks() if t is not asyncio.current_task()
                and "score_knowledge" in repr(t.get_coro())]


async def test_score_chain_returns_both_metrics():
    deps = _deps(FakeJudge(), FakeEstimator())
    req = ChainRequest(
        KnowledgeRequest(CHAIN, (Passage("p", "Metformin is first-line therapy for type 2 diabetes."),),
                         KnowledgeOptions(top_k=1)),
        InfoGainRequest(CHAIN, answer="metformin"))
    result = await scoring.chain(req, deps, Deadline())
    assert result.knowledge.knowledge_index == 1.0 and result.info_gain.info_gain is not None


class _TitleReadingJudge:
    """Supports a claim only when an evidence title names it (the LLM judge reads titles); counts its calls."""

    name = "reads-titles"
    prompt_version = "v1"

    def __init__(self):
        self.calls = 0

    async def judge(self, items, deadline):
        self.calls += len(items)
        return [Judgement(Verdict.SUPPORTED, LabelProbs(0.9, 0.05, 0.05), Tier.LLM, llm_calls=1)
                if any(e.title.strip() for e in item.evidence)
                else Judgement(Verdict.NOT_ENOUGH_INFO, LabelProbs(0.1, 0.1, 0.8), Tier.LLM, llm_calls=1)
                for item in items]


def _context(text: str, title: str = "", source: str = "") -> Evidence:
    return Evidence("context:0", text, source, title, 0.5, EvidenceOrigin.CONTEXT)


@pytest.mark.parametrize("one, other", [
    (_context("Warfarin\x1fWarfarin"), _context("Warfarin", title="Warfarin\x1f")),
    (_context("Warfarin", title="\x1f"), _context("Warfarin", source="\x1f")),
    (_context("Warfarin\x1f"), _context("Warfarin", title="\x1f")),
])
async def test_evidence_that_differs_never_shares_a_verdict(one, other):
    """Text, title and source are told apart in the key whatever characters they hold: a control character in a
    passage made two different passages one key, and the second request got the first one's verdict."""
    assert cache_key(JudgeItem("c", (one,)), "j", "v", "") != cache_key(JudgeItem("c", (other,)), "j", "v", "")
    judge, cache = _TitleReadingJudge(), VerdictCache(16)
    claim = "Warfarin is a vitamin K antagonist."
    first = await cache.judge_through(judge, [JudgeItem(claim, (one,))], Deadline())
    second = await cache.judge_through(judge, [JudgeItem(claim, (other,))], Deadline())
    assert judge.calls == 2 and not second[0].cached
    assert (first[0].verdict is Verdict.SUPPORTED) == bool(one.title.strip())
    assert (second[0].verdict is Verdict.SUPPORTED) == bool(other.title.strip())


def _demo_sentences() -> list[str]:
    """Physiology and mathematics facts of the demo KB, two to a sentence ("...; ..."): about 190 characters each."""
    facts = [json.loads(line)["text"] for line in (REPO / "kb" / "demo" / "facts.jsonl").read_text().splitlines()
             if line.strip() and json.loads(line)["id"].startswith(("math", "phys"))]
    facts = [f for f in facts if not any(w in f.lower() for w in ("warfarin", "vitamin k", "clott", "coagul"))]
    return [a.rstrip(".") + "; " + b[0].lower() + b[1:] for a, b in zip(facts[::2], facts[1::2])]


FILLER: list[str] = []
for _sentence in _demo_sentences():
    if sum(len(f) + 1 for f in FILLER) + len(_sentence) > 8_900:
        break
    FILLER.append(_sentence)
FACT = "Warfarin is a vitamin K antagonist."
LONG_PASSAGE = " ".join(FILLER) + " " + FACT  # about 9,000 characters, under the passage limit


def test_the_embedded_judge_s_windows_reach_the_end_of_a_passage_the_limits_allow():
    """Overlapping sentence windows were capped at 16 per passage: with sentences of 190 characters they read the
    first 6,800 characters of this 8,900-character passage, and a fact after that was never seen."""
    assert len(LONG_PASSAGE) <= Limits().max_passage_chars
    policy = AggregationPolicy()
    cut = windows(LONG_PASSAGE, policy)
    assert len(cut) <= policy.max_windows and all(len(w) <= policy.window_chars for w in cut)
    assert FACT in cut[-1]
    for sentence in FILLER:  # nothing before it is skipped either
        assert any(sentence in w for w in cut)
    # a passage the windows cover with their overlap keeps it
    short = " ".join(FILLER[:8])
    overlapping = windows(short, policy)
    assert all(a.split(". ")[-1].rstrip(".") in b for a, b in zip(overlapping, overlapping[1:]))


@pytest.mark.skipif(not (SHIPPED_NLI_MODEL / "config.json").exists(), reason="the trained NLI judge is not shipped")
async def test_the_nli_judge_supports_a_claim_stated_at_the_end_of_a_long_context_passage():
    from server.backends.judges.nli_model import NliModel

    judge = EmbeddedJudge(NliModel.load(str(SHIPPED_NLI_MODEL)), Blocking(None))
    evidence = (Evidence("p1", LONG_PASSAGE, "", "", 0.9, EvidenceOrigin.CONTEXT),)
    [judgement] = await judge.judge([JudgeItem(FACT, evidence)], Deadline())
    # (reading only the passage's first 6,800 characters it was contradicted: the model calls one of the unrelated
    # facts there a contradiction)
    assert judgement.verdict is Verdict.SUPPORTED
