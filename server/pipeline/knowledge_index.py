"""The Knowledge Index of one chain: split, retrieve evidence, judge claims, aggregate."""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from .aggregate import chain_scores, step_result
from .chains import split_chain
from .deadline import NO_DEADLINE, Deadline
from .deps import PipelineDeps
from .errors import InvalidArgumentError, KnowledgeBaseUnavailableError
from .types import (
    Claim,
    ClaimResult,
    Evidence,
    EvidenceOrigin,
    JudgeItem,
    KbHit,
    KnowledgeRequest,
    KnowledgeResult,
    Passage,
    RetrievalMode,
    SplitResult,
    Tier,
    Verdict,
)
from .validation import setting


def _norm(text: str) -> str:
    return " ".join(text.split())


def _repeats(hit: KbHit, shown: set[tuple[str, str]]) -> bool:
    """Whether a KB fact adds nothing to the evidence shown: its text (up to whitespace) is already there with the
    same title, or it has no title. The same sentence under another title is another fact (the KB keeps both:
    "It is contraindicated in pregnancy." of two drugs), and the LLM judge reads the title."""
    text, title = _norm(hit.text), _norm(hit.title)
    return (text, title) in shown or (not title and any(t == text for t, _ in shown))


RANK_PIECE_CHARS = 700  # a piece of a context passage the claim embedder reads whole (it reads 256 tokens of a text)


def _rank_pieces(text: str) -> list[str]:
    """A context passage as the embedder can read it: the passage when short, else consecutive pieces of at most
    RANK_PIECE_CHARS cut after a sentence (or at a space), to its end. The embedder reads only a text's first 256
    tokens: a long passage ranked by its opening alone dropped out of the top_k when its fact came later. (Two
    consecutive pieces hold more than RANK_PIECE_CHARS, else they would be one, so a passage of L characters, at
    most KGV_LIMITS__MAX_PASSAGE_CHARS, is at most 2L/RANK_PIECE_CHARS + 1 pieces; a cap of 16 left the last third
    of a 10,000-character passage of long sentences unranked.)"""
    if len(text) <= RANK_PIECE_CHARS:
        return [text]
    out: list[str] = []
    start = 0
    while start < len(text):
        end = start + RANK_PIECE_CHARS
        if end >= len(text):
            out.append(text[start:])
            break
        cut = max(text.rfind(". ", start, end), text.rfind("\n", start, end))
        if cut <= start:
            cut = text.rfind(" ", start, end)
        cut = end if cut <= start else cut + 1
        out.append(text[start:cut])
        start = cut
    return out


def _rank_context(claim_vecs: np.ndarray, piece_vecs: np.ndarray, firsts: Sequence[int], passages: Sequence[Passage],
                  top_k: int):
    """Passages per claim by their best piece's similarity (firsts: each passage's first row in piece_vecs)."""
    sims = np.maximum.reduceat(claim_vecs @ piece_vecs.T, np.asarray(firsts, dtype=np.intp), axis=1)
    out = []
    for row in sims:
        order = np.argsort(-row, kind="stable")[:top_k]
        out.append([
            Evidence(passages[j].id, passages[j].text, passages[j].source, passages[j].title, float(row[j]),
                     EvidenceOrigin.CONTEXT)
            for j in order
        ])
    return out


async def gather_evidence(claims: Sequence[str], req: KnowledgeRequest, deps: PipelineDeps,
                          deadline: Deadline = NO_DEADLINE):
    """Evidence per claim (context passages first, then KB facts) and the KB searched (or None)."""
    opts = req.options
    top_k = opts.top_k or deps.default_top_k
    use_kb = opts.use_knowledge_base if opts.use_knowledge_base is not None else not req.context
    evidence: list[list[Evidence]] = [[] for _ in claims]
    kb = None
    if use_kb:
        kb = deps.knowledge_base()
        if kb is None:
            raise KnowledgeBaseUnavailableError(
                "this server has no knowledge base loaded; send context passages with "
                "use_knowledge_base unset or false, or start the server with a KB"
            )
    if not claims:
        return evidence, kb
    mode = opts.retrieval_mode or deps.default_retrieval_mode
    dense_kb = kb is not None and mode is not RetrievalMode.BM25
    vecs = None
    pieces = [_rank_pieces(p.text) for p in req.context]
    if req.context or dense_kb:  # claims (and passages) embedded once, batched with other requests' texts
        vecs = await deps.embed_texts([*claims, *(t for texts in pieces for t in texts)], deadline)
    if req.context:
        firsts = np.cumsum([0] + [len(texts) for texts in pieces[:-1]])
        ranked = _rank_context(vecs[: len(claims)], vecs[len(claims):], firsts, req.context, top_k)
        for i, items in enumerate(ranked):
            evidence[i].extend(items)
    if kb is not None:
        vectors = {"vectors": vecs[: len(claims)]} if dense_kb else {}
        # A KB fact repeating a context passage already shown (same text and title) is skipped, so enough facts
        # are fetched to still give top_k others. With an exact dense index the best of the longer list are the same
        # facts in the same order; hybrid fusion over more candidates than KGV_KB__CANDIDATES, or an approximate
        # index, may rank the tail differently.
        fetch = top_k + (min(top_k, len(req.context)) if req.context else 0)
        hits = await deps.blocking.run(kb.search, list(claims), fetch, mode, **vectors)
        for i, row in enumerate(hits):
            shown = {(_norm(e.text), _norm(e.title)) for e in evidence[i]}
            added = 0
            for h in row:
                if added >= top_k:
                    break
                if not _repeats(h, shown):
                    shown.add((_norm(h.text), _norm(h.title)))
                    evidence[i].append(h.as_evidence())
                    added += 1
    return evidence, kb


async def score_knowledge(
    req: KnowledgeRequest, deps: PipelineDeps, deadline: Deadline, split: SplitResult | None = None
) -> KnowledgeResult:
    if split is None:
        split = await split_chain(req.chain, deps, req.options.splitter, deadline)
    judge = await deps.judge(req.options.judge)
    to_judge: list[Claim] = [c for s in split.steps for c in s.claims if not c.no_knowledge]
    unique_texts = list(dict.fromkeys(c.judged_text for c in to_judge))
    if len(unique_texts) > deps.limits.max_claims:  # before any retrieval or judging: the cost grows with each
        raise InvalidArgumentError.single(
            "steps" if req.chain.steps else "reasoning",
            f"has {len(unique_texts)} distinct knowledge claims; the limit is {deps.limits.max_claims} "
            f"({setting('max_claims')}): score the chain in several requests")
    evidence, kb = await gather_evidence(unique_texts, req, deps, deadline)
    items = [JudgeItem(t, tuple(ev)) for t, ev in zip(unique_texts, evidence)]
    cache = getattr(judge, "verdict_cache", None)  # the server's verdict cache, when configured
    if cache is not None:
        judgements = await cache.judge_through(judge, items, deadline, kb.info.kb_id if kb else "")
    else:
        judgements = await judge.judge(items, deadline)
    by_text = dict(zip(unique_texts, zip(judgements, evidence)))

    steps = []
    llm_calls = split.llm_calls + sum(j.llm_calls for j in judgements)
    for step in split.steps:
        claims = []
        for claim in step.claims:
            if claim.no_knowledge:
                claims.append(ClaimResult(claim, Verdict.NO_KNOWLEDGE, None, Tier.NONE))
                continue
            judgement, ev = by_text[claim.judged_text]
            shown = judgement.evidence if judgement.evidence is not None else tuple(ev)
            probs = judgement.probabilities if judgement.verdict is not Verdict.ERROR else None
            claims.append(ClaimResult(claim, judgement.verdict, probs, judgement.tier, shown,
                                      judgement.error, judgement.cached))
        steps.append(step_result(step, claims))

    served_model = getattr(judge, "read_served_model", None)  # (a judge on vLLM: the weights behind its name)
    provenance = dataclasses.replace(
        deps.provenance,
        kb_id=kb.info.kb_id if kb else "",
        kb_checksum=kb.info.checksum if kb else "",
        judge=judge.name,
        judge_prompt_version=judge.prompt_version,
        splitter=split.splitter,
        judge_model=await served_model(deadline) if served_model is not None else "",
    )
    return KnowledgeResult(chain_text=split.chain_text, steps=tuple(steps), llm_calls=llm_calls,
                           provenance=provenance, **chain_scores(steps))
