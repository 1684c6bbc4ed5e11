"""Request-time embeddings: each distinct text is embedded once, and every text still gets its own row."""

from __future__ import annotations

import numpy as np

from server.pipeline.deadline import Deadline
from server.pipeline.deps import PipelineDeps
from server.pipeline.knowledge_index import gather_evidence
from server.pipeline.runtime import Blocking
from server.pipeline.types import ChainInput, KnowledgeOptions, KnowledgeRequest, Passage
from server.pipeline.validation import Limits

LONG = ("Aspirin irreversibly inhibits cyclooxygenase-1 in platelets, which lasts for the platelet's life. "
        "Warfarin inhibits vitamin K epoxide reductase. ") * 40  # ~5,800 characters: ranked in 9 pieces
SHORT = "Metformin is cleared unchanged by the kidneys."


class _Counting:
    """The real embedder, recording what it is asked to embed."""

    def __init__(self, embedder):
        self.embedder, self.seen = embedder, []

    def encode(self, texts):
        self.seen.extend(texts)
        return self.embedder.encode(texts)


def _deps(counting, batched: bool):
    async def embed(texts, deadline):
        return counting.encode(list(texts))

    return PipelineDeps(limits=Limits(), blocking=Blocking(None), splitter=None, judge=None, estimator=None,
                        knowledge_base=lambda: None, embedder=lambda: counting, embed=embed if batched else None)


async def test_repeated_passages_are_embedded_once_and_ranked_as_each_alone(embedder):
    """A retriever upstream that returns the same chunk under several ids: each copy cost a full embedder pass per
    piece (50 copies of a 10,000-character passage were 800 passes per request)."""
    claims = ["Aspirin inhibits COX-1 in platelets.", "Metformin is cleared by the kidneys."]
    passages = tuple(Passage(f"long-{i}", LONG) for i in range(5)) + (Passage("short-a", SHORT),
                                                                       Passage("short-b", SHORT))
    req = KnowledgeRequest(ChainInput(steps=("x",)), passages, KnowledgeOptions(top_k=7))
    for batched in (True, False):
        counting = _Counting(embedder)
        evidence, _ = await gather_evidence(claims, req, _deps(counting, batched), Deadline())
        assert len(counting.seen) == len(set(counting.seen))  # nothing embedded twice
        assert set(counting.seen) >= set(claims) | {SHORT}
        for claim, ev in zip(claims, evidence):
            scores = {e.fact_id: e.score for e in ev}
            assert len(scores) == 7
            alone = {}
            for passage in (passages[0], passages[-1]):
                single = KnowledgeRequest(ChainInput(steps=("x",)), (passage,), KnowledgeOptions(top_k=1))
                [[only]], _ = await gather_evidence([claim], single, _deps(_Counting(embedder), batched), Deadline())
                alone[passage.text] = only.score
            for e in ev:  # every copy has the score its text has alone
                assert np.isclose(e.score, alone[e.text], atol=1e-5), (claim, e.fact_id)
        top = [e.fact_id for e in evidence[0][:5]]
        assert top == [f"long-{i}" for i in range(5)]  # copies keep the order they were sent in
