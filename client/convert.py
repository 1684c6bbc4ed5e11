"""kgverify.v1 responses -> the plain client types."""

from __future__ import annotations

from kgverify.v1 import common_pb2 as pb
from kgverify.v1 import info_gain_service_pb2 as igpb
from kgverify.v1 import knowledge_base_service_pb2 as kbpb
from kgverify.v1 import knowledge_service_pb2 as kpb

from .types import ChainScore, ClaimVerdict, Evidence, Probabilities, SearchHit, SplitClaim, SplitResult, SplitStep, StepScore


def _enum_name(enum, value: int, prefix: str) -> str:
    """The value's name without its prefix, lower case; a value this client does not know (a newer server's
    verdict, flag or tier) reads "unknown_<number>" rather than ending the conversion (and a batch stream)."""
    try:
        return enum.Name(value).removeprefix(prefix).lower()
    except ValueError:
        return f"unknown_{value}"


def _verdict(value: int) -> str:
    return _enum_name(pb.Verdict, value, "VERDICT_")


def _tier(value: int) -> str:
    return _enum_name(pb.JudgeTier, value, "JUDGE_TIER_")


def _probs(holder) -> Probabilities | None:
    if not holder.HasField("probabilities"):
        return None
    p = holder.probabilities
    return Probabilities(p.supported, p.contradicted, p.not_enough_info)


def _evidence(items) -> tuple[Evidence, ...]:
    return tuple(Evidence(e.fact_id, e.text, e.source, e.title, e.score,
                          _enum_name(pb.EvidenceOrigin, e.origin, "EVIDENCE_ORIGIN_")) for e in items)


def _claim(c: kpb.ClaimVerdict) -> ClaimVerdict:
    return ClaimVerdict(c.claim.text, c.claim.start, c.claim.end, _verdict(c.verdict),
                        _probs(c), _tier(c.tier), _evidence(c.evidence), c.error, c.cached)


def _opt(msg, name: str):
    return getattr(msg, name) if msg.HasField(name) else None


def _provenance(p: pb.Provenance) -> dict[str, str]:
    return {f.name: getattr(p, f.name) for f in p.DESCRIPTOR.fields if getattr(p, f.name)}


def chain_score(knowledge: kpb.ScoreKnowledgeResponse | None, info_gain: igpb.ScoreInfoGainResponse | None) -> ChainScore:
    """Merges KI and InfoGain responses of one chain (steps align by index)."""
    ki_steps = {s.step.index: s for s in knowledge.steps} if knowledge else {}
    ig_steps = {s.index: s for s in info_gain.steps} if info_gain else {}
    steps = []
    for index in sorted(set(ki_steps) | set(ig_steps)):
        k, g = ki_steps.get(index), ig_steps.get(index)
        base = k.step if k is not None else g
        steps.append(StepScore(
            index=index, text=base.text, start=base.start, end=base.end,
            no_knowledge=k.step.no_knowledge if k is not None else False,
            verdict=_verdict(k.verdict) if k is not None else None,
            probabilities=_probs(k) if k is not None else None,
            tier=_tier(k.tier) if k is not None else None,
            evidence=_evidence(k.evidence) if k is not None else (),
            claims=tuple(_claim(c) for c in k.claims) if k is not None else (),
            nll=_opt(g, "nll") if g is not None else None,
            nll_per_token=_opt(g, "nll_per_token") if g is not None else None,
            gain=_opt(g, "gain") if g is not None else None,
            perplexity_paper=_opt(g, "perplexity_paper") if g is not None else None,
            flags=tuple(_enum_name(igpb.StepFlag, f, "STEP_FLAG_") for f in g.flags) if g is not None else (),
            null_reason=g.null_reason if g is not None else "",
        ))
    partial = (knowledge is not None and knowledge.status == pb.CHAIN_STATUS_PARTIAL) or (
        info_gain is not None and info_gain.status == pb.CHAIN_STATUS_PARTIAL)
    provenance = {**(_provenance(info_gain.provenance) if info_gain else {}),
                  **(_provenance(knowledge.provenance) if knowledge else {})}
    fields = {}
    if knowledge is not None:
        c = knowledge.counts
        fields.update(
            knowledge_index=_opt(knowledge, "knowledge_index"),
            knowledge_index_paper=_opt(knowledge, "knowledge_index_paper"),
            coverage=_opt(knowledge, "coverage"),
            counts={"supported": c.supported, "contradicted": c.contradicted, "not_enough_info": c.not_enough_info,
                    "no_knowledge": c.no_knowledge, "error": c.error},
            error_steps=knowledge.error_steps, first_error_step=knowledge.first_error_step)
    if info_gain is not None:
        fields.update(
            info_gain=_opt(info_gain, "info_gain"), info_gain_total=_opt(info_gain, "info_gain_total"),
            info_gain_paper=_opt(info_gain, "info_gain_paper"),
            info_gain_paper_reason=info_gain.info_gain_paper_reason, nll_initial=_opt(info_gain, "nll_initial"),
            perplexity_paper_initial=_opt(info_gain, "perplexity_paper_initial"),
            target=_enum_name(igpb.Target, info_gain.target, "TARGET_"), target_text=info_gain.target_text,
            estimator=_enum_name(igpb.Estimator, info_gain.estimator, "ESTIMATOR_"),
            units=_enum_name(igpb.InfoUnits, info_gain.units, "INFO_UNITS_"),
            answer_tokens=info_gain.answer_tokens, prefill_tokens=info_gain.prefill_tokens)
    llm_calls = (knowledge.llm_calls if knowledge else 0) + (info_gain.llm_calls if info_gain else 0)
    chain_text = knowledge.chain_text if knowledge else info_gain.chain_text
    return ChainScore(steps=tuple(steps), chain_text=chain_text, status="partial" if partial else "ok",
                      llm_calls=llm_calls, provenance=provenance, **fields)


def chain_response(msg: kpb.ScoreChainResponse) -> ChainScore:
    return chain_score(msg.knowledge if msg.HasField("knowledge") else None,
                       msg.info_gain if msg.HasField("info_gain") else None)


def split_result(msg: kpb.SplitReasoningResponse) -> SplitResult:
    steps = tuple(
        SplitStep(s.index, s.text, s.start, s.end, s.no_knowledge,
                  tuple(SplitClaim(c.text, c.start, c.end, c.no_knowledge) for c in s.claims), s.planning, s.knowledge)
        for s in msg.steps)
    return SplitResult(steps, msg.chain_text, msg.splitter)


def search_hits(msg: kbpb.SearchKnowledgeBaseResponse) -> list[SearchHit]:
    return [SearchHit(f.fact_id, f.text, f.source, f.title, f.score) for f in msg.facts]


def kb_info(msg: kbpb.GetKnowledgeBaseInfoResponse) -> dict:
    """The KB manifest as plain JSON types (enum names lower case)."""
    mode = lambda value: _enum_name(pb.RetrievalMode, value, "RETRIEVAL_MODE_")  # noqa: E731
    return {
        "kb_id": msg.kb_id, "path": msg.path, "created_at": msg.created_at, "embedder": msg.embedder,
        "embedder_hash": msg.embedder_hash, "dim": msg.dim,
        "index": {"family": msg.index.family, "metric": msg.index.metric, "params": dict(msg.index.params)},
        "num_facts": msg.num_facts, "num_documents": msg.num_documents, "checksum": msg.checksum,
        "file_checksums": dict(msg.file_checksums), "modes": [mode(m) for m in msg.modes],
        "default_mode": mode(msg.default_mode),
    }
