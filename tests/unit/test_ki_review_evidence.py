"""KI review: evidence gathering (no repeated facts) and the request conversion (no silent clamps)."""

from __future__ import annotations

import numpy as np
import pytest

from kgverify.v1 import info_gain_service_pb2 as igpb
from kgverify.v1 import knowledge_service_pb2 as kpb
from server.pipeline.deadline import Deadline
from server.pipeline.deps import PipelineDeps
from server.pipeline.errors import InvalidArgumentError
from server.pipeline.knowledge_index import gather_evidence
from server.pipeline.runtime import Blocking
from server.pipeline.types import (ChainInput, EvidenceOrigin, KbHit, KnowledgeOptions, KnowledgeRequest, Passage,
                                   RetrievalMode)
from server.pipeline.validation import Limits
from server.servicers import convert

FACT = "Metformin is cleared by the kidneys."


class _Kb:
    """A KB whose search returns its facts in order (a copy of the context passage first), as many as asked."""

    class info:
        kb_id = "kb-test"
        checksum = "c"
        modes = (RetrievalMode.DENSE,)

    def __init__(self):
        self.facts = [KbHit("kb-1", " Metformin is cleared   by the kidneys. ", "src", "Metformin", 0.9)] + [
            KbHit(f"kb-{i}", f"distinct fact {i}", "", "", 0.9 - i / 100) for i in range(2, 12)]
        self.asked: list[int] = []

    def search(self, queries, top_k, mode, vectors=None):
        self.asked.append(top_k)
        return [self.facts[:top_k] for _ in queries]


def _deps(kb):
    async def embed(texts, deadline):
        # every passage scores 1.0 against the claim: the (stable) ranking keeps the order they were sent in
        return np.asarray([[1.0, 0.0]] + [[1.0, 0.01 * i] for i in range(1, len(texts))], dtype=np.float32)

    return PipelineDeps(limits=Limits(), blocking=Blocking(None), splitter=None, judge=None, estimator=None,
                        knowledge_base=lambda: kb, embedder=lambda: None, embed=embed)


async def test_a_kb_fact_repeating_a_context_passage_is_shown_once_and_top_k_stays_full():
    kb = _Kb()
    # the caller forwards a fact it retrieved, with its title (the source note may differ)
    req = KnowledgeRequest(ChainInput(steps=("x",)), (Passage("p1", FACT, title=" Metformin"),),
                           KnowledgeOptions(top_k=3, use_knowledge_base=True))
    evidence, _ = await gather_evidence(["claim"], req, _deps(kb), Deadline())
    ev = evidence[0]
    assert [e.fact_id for e in ev] == ["p1", "kb-2", "kb-3", "kb-4"]  # the context passage, then 3 other facts
    assert ev[0].origin is EvidenceOrigin.CONTEXT
    assert len({" ".join(e.text.split()) for e in ev}) == len(ev)


async def test_context_passages_are_kept_as_sent_and_a_kb_fact_repeating_one_is_skipped():
    """The caller's passages are the caller's (each id stays visible); only the KB's copy of one is dropped."""
    kb = _Kb()
    req = KnowledgeRequest(ChainInput(steps=("x",)),
                           (Passage("a", FACT, title="Metformin"), Passage("b", " " + FACT, title="Metformin"),
                            Passage("c", "another fact")),
                           KnowledgeOptions(top_k=2, use_knowledge_base=True))
    evidence, _ = await gather_evidence(["claim"], req, _deps(kb), Deadline())
    assert [e.fact_id for e in evidence[0]] == ["a", "b", "kb-2", "kb-3"]
    assert kb.asked == [4]  # top_k, and one more per context passage shown (at most top_k more)


async def test_a_kb_fact_that_adds_its_title_is_kept():
    """An untitled passage with the fact's text: the KB's copy names the topic (the LLM judge reads titles)."""
    kb = _Kb()
    req = KnowledgeRequest(ChainInput(steps=("x",)), (Passage("p1", FACT),),
                           KnowledgeOptions(top_k=2, use_knowledge_base=True))
    evidence, _ = await gather_evidence(["claim"], req, _deps(kb), Deadline())
    assert [e.fact_id for e in evidence[0]] == ["p1", "kb-1", "kb-2"]


async def test_an_untitled_kb_fact_repeating_a_passage_is_skipped():
    kb = _Kb()
    kb.facts[0] = KbHit("kb-1", FACT, "", "", 0.9)
    req = KnowledgeRequest(ChainInput(steps=("x",)), (Passage("p1", FACT, title="Metformin"),),
                           KnowledgeOptions(top_k=2, use_knowledge_base=True))
    evidence, _ = await gather_evidence(["claim"], req, _deps(kb), Deadline())
    assert [e.fact_id for e in evidence[0]] == ["p1", "kb-2", "kb-3"]


async def test_kb_alone_is_searched_for_exactly_top_k():
    kb = _Kb()
    req = KnowledgeRequest(ChainInput(steps=("x",)), (), KnowledgeOptions(top_k=4))
    evidence, _ = await gather_evidence(["claim"], req, _deps(kb), Deadline())
    assert kb.asked == [4] and [e.fact_id for e in evidence[0]] == ["kb-1", "kb-2", "kb-3", "kb-4"]


def _violations(call):
    with pytest.raises(InvalidArgumentError) as caught:
        call()
    return {v.field: v.description for v in caught.value.violations}


def test_a_negative_window_is_a_field_violation_and_never_clamped():
    msg = igpb.ScoreInfoGainRequest(question="q", steps=["a"], answer="x", options=igpb.InfoGainOptions(window=-3))
    assert "options.window" in _violations(lambda: convert.info_gain_request(msg))
    v = convert._Violations()
    assert convert._info_gain_options(msg.options, v, "options").window == -3  # what validation sees, too
    chain = kpb.ScoreChainRequest(steps=["a"], metrics=[kpb.METRIC_INFO_GAIN],
                                  info_gain_options=igpb.InfoGainOptions(window=-1))
    assert "info_gain_options.window" in _violations(lambda: convert.chain_request(chain))


def test_metric_unspecified_in_the_list_says_what_to_send():
    msg = kpb.ScoreChainRequest(steps=["a"], metrics=[kpb.METRIC_UNSPECIFIED])
    description = _violations(lambda: convert.chain_request(msg))["metrics[0]"]
    assert "METRIC_UNSPECIFIED" in description and "empty list" in description
    assert _violations(lambda: convert.chain_request(kpb.ScoreChainRequest(steps=["a"], metrics=[7])))[
        "metrics[0]"] == "unknown enum value 7"


@pytest.mark.parametrize("options, field", [
    (kpb.KnowledgeOptions(top_k=-1), "options.top_k"),
    (kpb.KnowledgeOptions(judge=42), "options.judge"),
    (kpb.KnowledgeOptions(retrieval_mode=42), "options.retrieval_mode"),
    (kpb.KnowledgeOptions(splitter=42), "options.splitter"),
])
def test_knowledge_options_out_of_range_are_field_violations(options, field):
    msg = kpb.ScoreKnowledgeRequest(steps=["a"], options=options)
    assert field in _violations(lambda: convert.knowledge_request(msg))


def _result(verdicts):
    from server.pipeline.aggregate import chain_scores, step_result
    from server.pipeline.types import Claim, ClaimResult, KnowledgeResult, Provenance, Step, Tier, Verdict

    steps = []
    for i, verdict in enumerate(verdicts):
        claim = Claim("c", 0, 1, verdict is Verdict.NO_KNOWLEDGE)
        tier = Tier.NONE if verdict is Verdict.NO_KNOWLEDGE else Tier.LLM
        steps.append(step_result(Step(i, "c", 0, 1, (claim,), claim.no_knowledge),
                                 [ClaimResult(claim, verdict, None, tier, error="bad" if tier is Tier.LLM else "")]))
    return KnowledgeResult("c", tuple(steps), llm_calls=0, provenance=Provenance(), **chain_scores(steps))


def test_a_chain_of_only_error_or_only_no_knowledge_steps_leaves_undefined_scores_absent():
    from kgverify.v1 import common_pb2 as pb
    from server.pipeline.types import Verdict

    out = convert.knowledge_response(_result([Verdict.ERROR, Verdict.ERROR]))
    assert not any(out.HasField(f) for f in ("knowledge_index", "knowledge_index_paper", "coverage"))
    assert out.status == pb.CHAIN_STATUS_PARTIAL and out.error_steps == out.counts.error == 2
    assert out.first_error_step == -1
    assert all(s.verdict == pb.VERDICT_ERROR and not s.HasField("probabilities") for s in out.steps)
    assert all(c.error == "bad" and not c.HasField("probabilities") for s in out.steps for c in s.claims)
    out = convert.knowledge_response(_result([Verdict.NO_KNOWLEDGE]))
    assert not out.HasField("knowledge_index") and not out.HasField("coverage")
    assert out.HasField("knowledge_index_paper") and out.knowledge_index_paper == 1.0
    assert out.status == pb.CHAIN_STATUS_OK and out.steps[0].tier == pb.JUDGE_TIER_NONE


def test_a_long_passage_is_ranked_by_pieces_that_cover_it_to_its_end():
    """Sentences of ~360 characters make pieces of one sentence each: the cap of 16 pieces covered 6,597 of a
    9,963-character passage, and a fact in its last sentence never reached the judge."""
    from server.pipeline.knowledge_index import RANK_PIECE_CHARS, _rank_pieces

    filler = ("The committee reviewed the hospital's anticoagulation protocols, staffing ratios and audit records "
              "from the previous fiscal year in considerable detail, noting that documentation practices varied "
              "between wards and that several recommendations from earlier reviews had been only partly adopted, "
              "which the report attributes to turnover among senior nursing staff and pharmacists. ")
    fact = "Protamine sulfate neutralizes heparin by binding it ionically, forming a stable inactive complex."
    text = filler * 26 + fact
    assert len(text) <= Limits().max_passage_chars
    pieces = _rank_pieces(text)
    assert "".join(pieces) == text and fact in pieces[-1]
    assert all(len(p) <= RANK_PIECE_CHARS for p in pieces) and len(pieces) <= 2 * len(text) / RANK_PIECE_CHARS + 1
