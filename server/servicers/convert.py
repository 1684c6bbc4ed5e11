"""Protobuf <-> domain conversion for the kgverify.v1 services."""

from __future__ import annotations

from google.protobuf.message import EncodeError
from kgverify.v1 import common_pb2 as pb
from kgverify.v1 import info_gain_service_pb2 as igpb
from kgverify.v1 import knowledge_base_service_pb2 as kbpb
from kgverify.v1 import knowledge_service_pb2 as kpb

from ..pipeline.errors import FieldViolation, InvalidArgumentError, ResponseTooLargeError
from ..pipeline import types as t
from ..pipeline.validation import empty_description, has_visible_content, setting

JUDGES = {pb.JUDGE_BACKEND_UNSPECIFIED: None, pb.JUDGE_BACKEND_BASELINE: "baseline", pb.JUDGE_BACKEND_NLI: "nli",
          pb.JUDGE_BACKEND_VLLM: "vllm", pb.JUDGE_BACKEND_CASCADE: "cascade"}
MODES = {pb.RETRIEVAL_MODE_UNSPECIFIED: None, pb.RETRIEVAL_MODE_DENSE: t.RetrievalMode.DENSE,
         pb.RETRIEVAL_MODE_BM25: t.RetrievalMode.BM25, pb.RETRIEVAL_MODE_HYBRID: t.RetrievalMode.HYBRID}
MODES_OUT = {v: k for k, v in MODES.items() if v is not None}
SPLITTERS = {pb.SPLITTER_UNSPECIFIED: None, pb.SPLITTER_RULES: "rules", pb.SPLITTER_LLM: "llm"}
ESTIMATORS = {igpb.ESTIMATOR_UNSPECIFIED: None, igpb.ESTIMATOR_LM: "lm", igpb.ESTIMATOR_NLI: "nli"}
ESTIMATORS_OUT = {"lm": igpb.ESTIMATOR_LM, "nli": igpb.ESTIMATOR_NLI}
PAPER = {igpb.INFO_GAIN_MODE_UNSPECIFIED: False, igpb.INFO_GAIN_MODE_ANSWER_TOKENS: False,
         igpb.INFO_GAIN_MODE_PAPER: True}
UNITS = {igpb.INFO_UNITS_UNSPECIFIED: "nats", igpb.INFO_UNITS_NATS: "nats", igpb.INFO_UNITS_BITS: "bits"}
UNITS_OUT = {"nats": igpb.INFO_UNITS_NATS, "bits": igpb.INFO_UNITS_BITS}
METRICS = {kpb.METRIC_KNOWLEDGE_INDEX: t.Metric.KNOWLEDGE_INDEX, kpb.METRIC_INFO_GAIN: t.Metric.INFO_GAIN}
VERDICTS = {t.Verdict.SUPPORTED: pb.VERDICT_SUPPORTED, t.Verdict.CONTRADICTED: pb.VERDICT_CONTRADICTED,
            t.Verdict.NOT_ENOUGH_INFO: pb.VERDICT_NOT_ENOUGH_INFO, t.Verdict.NO_KNOWLEDGE: pb.VERDICT_NO_KNOWLEDGE,
            t.Verdict.ERROR: pb.VERDICT_ERROR}
TIERS = {t.Tier.NONE: pb.JUDGE_TIER_NONE, t.Tier.EMBEDDED: pb.JUDGE_TIER_EMBEDDED, t.Tier.LLM: pb.JUDGE_TIER_LLM,
         t.Tier.DEGRADED: pb.JUDGE_TIER_DEGRADED}
ORIGINS = {t.EvidenceOrigin.KNOWLEDGE_BASE: pb.EVIDENCE_ORIGIN_KNOWLEDGE_BASE,
           t.EvidenceOrigin.CONTEXT: pb.EVIDENCE_ORIGIN_CONTEXT}
STATUSES = {t.ChainStatus.OK: pb.CHAIN_STATUS_OK, t.ChainStatus.PARTIAL: pb.CHAIN_STATUS_PARTIAL}
TARGETS = {"gold_answer": igpb.TARGET_GOLD_ANSWER, "answer": igpb.TARGET_ANSWER}
FLAGS = {"windowed": igpb.STEP_FLAG_WINDOWED, "context_overflow": igpb.STEP_FLAG_CONTEXT_OVERFLOW,
         "truncated": igpb.STEP_FLAG_TRUNCATED}


class _Violations:
    """Collects enum and shape violations found while converting a request."""

    def __init__(self) -> None:
        self.items: list[FieldViolation] = []

    def enum(self, value: int, table: dict, field: str):
        if value not in table:
            self.items.append(FieldViolation(field, f"unknown enum value {value}"))
            return None
        return table[value]

    def raise_if_any(self) -> None:
        if self.items:
            raise InvalidArgumentError(self.items)


# ---- requests -------------------------------------------------------------------------------

def chain_input(msg) -> t.ChainInput:
    steps = tuple(msg.steps) if len(msg.steps) else None
    return t.ChainInput(question=getattr(msg, "question", ""), reasoning=msg.reasoning or None, steps=steps)


def _passages(msgs) -> tuple[t.Passage, ...]:
    return tuple(t.Passage(m.id or f"context:{i}", m.text, m.source, m.title) for i, m in enumerate(msgs))


def _knowledge_options(msg: kpb.KnowledgeOptions, v: _Violations, field: str) -> t.KnowledgeOptions:
    if msg.top_k < 0:
        v.items.append(FieldViolation(f"{field}.top_k", "must not be negative (0 = server default)"))
    return t.KnowledgeOptions(
        top_k=msg.top_k or None,
        judge=v.enum(msg.judge, JUDGES, f"{field}.judge"),
        retrieval_mode=v.enum(msg.retrieval_mode, MODES, f"{field}.retrieval_mode"),
        use_knowledge_base=msg.use_knowledge_base if msg.HasField("use_knowledge_base") else None,
        splitter=v.enum(msg.splitter, SPLITTERS, f"{field}.splitter"),
    )


def _info_gain_options(msg: igpb.InfoGainOptions, v: _Violations, field: str) -> t.InfoGainOptions:
    if msg.window < 0:
        v.items.append(FieldViolation(f"{field}.window", "must not be negative (0 = off)"))
    return t.InfoGainOptions(
        estimator=v.enum(msg.estimator, ESTIMATORS, f"{field}.estimator"),
        paper=bool(v.enum(msg.mode, PAPER, f"{field}.mode")),
        units=v.enum(msg.units, UNITS, f"{field}.units") or "nats",
        window=msg.window,  # never clamped: a negative window is reported above (and by validation)
        per_token=msg.per_token,
        splitter=v.enum(msg.splitter, SPLITTERS, f"{field}.splitter"),
    )


def split_request(msg: kpb.SplitReasoningRequest) -> tuple[t.ChainInput, str | None]:
    v = _Violations()
    splitter = v.enum(msg.splitter, SPLITTERS, "splitter")
    v.raise_if_any()
    return chain_input(msg), splitter


def knowledge_request(msg: kpb.ScoreKnowledgeRequest) -> t.KnowledgeRequest:
    v = _Violations()
    options = _knowledge_options(msg.options, v, "options")
    v.raise_if_any()
    return t.KnowledgeRequest(chain_input(msg), _passages(msg.context), options)


def info_gain_request(msg: igpb.ScoreInfoGainRequest) -> t.InfoGainRequest:
    v = _Violations()
    options = _info_gain_options(msg.options, v, "options")
    v.raise_if_any()
    return t.InfoGainRequest(chain_input(msg), msg.answer, msg.gold_answer, _choices(msg), options)


def _choices(msg) -> tuple[str, ...]:
    """The options without the whitespace around them: an option read from a file often ends in a line break
    (38 of MedQA's 1,273 test questions), which c_0's one-option-per-line listing refused; one inside stays an
    error."""
    return tuple(choice.strip() for choice in msg.choices)


def _metric(value: int, v: _Violations, field: str):
    if value == kpb.METRIC_UNSPECIFIED:  # a known value, but never a metric: "unknown enum value 0" misled
        v.items.append(FieldViolation(field, "METRIC_UNSPECIFIED is not a metric: name METRIC_KNOWLEDGE_INDEX "
                                             "or METRIC_INFO_GAIN, or send an empty list for all metrics"))
        return None
    return v.enum(value, METRICS, field)


def chain_request(msg: kpb.ScoreChainRequest) -> t.ChainRequest:
    v = _Violations()
    metrics = {_metric(m, v, f"metrics[{i}]") for i, m in enumerate(msg.metrics)} or set(METRICS.values())
    # The options of a metric not asked for are neither converted nor checked, like that metric's fields (context,
    # answers, choices): knowledge_options.top_k -1 failed an InfoGain-only chain while top_k 99 (over the limit,
    # checked by validation only when KI is asked for) passed it, and so did window -1 a KI-only one.
    asks_ki, asks_ig = t.Metric.KNOWLEDGE_INDEX in metrics, t.Metric.INFO_GAIN in metrics
    k_opts = _knowledge_options(msg.knowledge_options, v, "knowledge_options") if asks_ki else None
    ig_opts = _info_gain_options(msg.info_gain_options, v, "info_gain_options") if asks_ig else None
    v.raise_if_any()
    chain = chain_input(msg)
    knowledge = t.KnowledgeRequest(chain, _passages(msg.context), k_opts) if asks_ki else None
    info_gain = t.InfoGainRequest(chain, msg.answer, msg.gold_answer, _choices(msg), ig_opts) \
        if asks_ig else None
    return t.ChainRequest(knowledge, info_gain)


def search_request(msg: kbpb.SearchKnowledgeBaseRequest, max_chars: int, max_top_k: int):
    v = _Violations()
    mode = v.enum(msg.mode, MODES, "mode")
    if not has_visible_content(msg.query):
        v.items.append(FieldViolation("query", empty_description(msg.query)))
    elif len(msg.query) > max_chars:
        v.items.append(FieldViolation("query", f"is {len(msg.query)} characters long; the limit is {max_chars} "
                                               f"({setting('max_step_chars')})"))
    if not 0 <= msg.top_k <= max_top_k:
        v.items.append(FieldViolation("top_k", f"must be between 1 and {max_top_k} (0 = default; "
                                               f"{setting('max_top_k')})"))
    v.raise_if_any()
    return msg.query, msg.top_k or None, mode


# ---- responses ------------------------------------------------------------------------------

def _probs(p: t.LabelProbs | None, target) -> None:
    if p is not None:
        target.CopyFrom(pb.LabelProbabilities(supported=p.supported, contradicted=p.contradicted,
                                              not_enough_info=p.not_enough_info))


def _evidence(e: t.Evidence) -> pb.Evidence:
    return pb.Evidence(fact_id=e.fact_id, text=e.text, source=e.source, title=e.title, score=e.score,
                       origin=ORIGINS[e.origin])


def _provenance(p: t.Provenance) -> pb.Provenance:
    return pb.Provenance(kb_id=p.kb_id, kb_checksum=p.kb_checksum, judge=p.judge,
                         judge_prompt_version=p.judge_prompt_version, splitter=p.splitter, estimator=p.estimator,
                         embedder=p.embedder, server_version=p.server_version, judge_model=p.judge_model,
                         estimator_model=p.estimator_model)


def _claim(c: t.Claim) -> kpb.Claim:
    return kpb.Claim(text=c.text, start=c.start, end=c.end, no_knowledge=c.no_knowledge)


def step(s: t.Step) -> kpb.Step:
    return kpb.Step(index=s.index, text=s.text, start=s.start, end=s.end, no_knowledge=s.no_knowledge,
                    claims=[_claim(c) for c in s.claims], planning=s.planning, knowledge=s.knowledge)


def split_response(r: t.SplitResult) -> kpb.SplitReasoningResponse:
    return kpb.SplitReasoningResponse(steps=[step(s) for s in r.steps], chain_text=r.chain_text,
                                      splitter=r.splitter)


def _claim_verdict(c: t.ClaimResult) -> kpb.ClaimVerdict:
    out = kpb.ClaimVerdict(claim=_claim(c.claim), verdict=VERDICTS[c.verdict], tier=TIERS[c.tier],
                           evidence=[_evidence(e) for e in c.evidence], error=c.error, cached=c.cached)
    _probs(c.probabilities, out.probabilities)
    return out


def _step_verdict(s: t.StepResult) -> kpb.StepVerdict:
    out = kpb.StepVerdict(step=step(s.step), verdict=VERDICTS[s.verdict], tier=TIERS[s.tier],
                          evidence=[_evidence(e) for e in s.evidence],
                          claims=[_claim_verdict(c) for c in s.claims])
    _probs(s.probabilities, out.probabilities)
    return out


def knowledge_response(r: t.KnowledgeResult) -> kpb.ScoreKnowledgeResponse:
    c = r.counts
    out = kpb.ScoreKnowledgeResponse(
        steps=[_step_verdict(s) for s in r.steps],
        counts=kpb.VerdictCounts(supported=c.supported, contradicted=c.contradicted,
                                 not_enough_info=c.not_enough_info, no_knowledge=c.no_knowledge, error=c.error),
        error_steps=r.error_steps, first_error_step=r.first_error_step, status=STATUSES[r.status],
        llm_calls=r.llm_calls, chain_text=r.chain_text, provenance=_provenance(r.provenance))
    for name in ("knowledge_index", "knowledge_index_paper", "coverage"):
        value = getattr(r, name)
        if value is not None:
            setattr(out, name, value)
    return out


def _set_optional(msg, **values) -> None:
    for name, value in values.items():
        if value is not None:
            setattr(msg, name, value)


def info_gain_response(r: t.InfoGainResult) -> igpb.ScoreInfoGainResponse:
    out = igpb.ScoreInfoGainResponse(
        info_gain_paper_reason=r.info_gain_paper_reason, target=TARGETS[r.target], target_text=r.target_text,
        answer_tokens=r.answer_tokens, units=UNITS_OUT[r.units], estimator=ESTIMATORS_OUT[r.estimator],
        prefill_tokens=r.prefill_tokens, status=STATUSES[r.status], llm_calls=r.llm_calls,
        chain_text=r.chain_text, provenance=_provenance(r.provenance))
    _set_optional(out, nll_initial=r.nll_initial, info_gain=r.info_gain, info_gain_total=r.info_gain_total,
                  info_gain_paper=r.info_gain_paper, perplexity_paper_initial=r.perplexity_paper_initial)
    for g in r.steps:
        s = out.steps.add(index=g.step.index, text=g.step.text, start=g.step.start, end=g.step.end,
                          flags=[FLAGS[f] for f in g.flags], null_reason=g.null_reason)
        _set_optional(s, nll=g.nll, nll_per_token=g.nll_per_token, gain=g.gain, perplexity_paper=g.perplexity_paper)
    return out


def chain_response(r: t.ChainResult) -> kpb.ScoreChainResponse:
    out = kpb.ScoreChainResponse()
    if r.knowledge is not None:
        out.knowledge.CopyFrom(knowledge_response(r.knowledge))
    if r.info_gain is not None:
        out.info_gain.CopyFrom(info_gain_response(r.info_gain))
    return out


def search_response(hits: list[t.KbHit], kb_id: str, mode: t.RetrievalMode) -> kbpb.SearchKnowledgeBaseResponse:
    return kbpb.SearchKnowledgeBaseResponse(
        facts=[_evidence(h.as_evidence()) for h in hits], kb_id=kb_id, mode=MODES_OUT[mode])


def kb_info_response(info: t.KbInfo, default_mode: t.RetrievalMode) -> kbpb.GetKnowledgeBaseInfoResponse:
    return kbpb.GetKnowledgeBaseInfoResponse(
        kb_id=info.kb_id, path=info.path, created_at=info.created_at, embedder=info.embedder,
        embedder_hash=info.embedder_hash, dim=info.dim,
        index=kbpb.IndexSpec(family=info.index_family, metric=info.metric, params=info.index_params),
        num_facts=info.num_facts, num_documents=info.num_documents, checksum=info.checksum,
        file_checksums=info.file_checksums, modes=[MODES_OUT[m] for m in info.modes],
        default_mode=MODES_OUT[default_mode])


EVIDENCE_TOO_LARGE = ("its evidence repeats the facts and passages for every claim; send fewer steps, shorter or "
                      "fewer context passages, or a smaller top_k")
SPLIT_TOO_LARGE = "each step and claim repeats its text (about 3 times the reasoning's size); send a shorter reasoning"
SEARCH_TOO_LARGE = "each hit carries its fact's text, source and title; ask for a smaller top_k"


PROTOBUF_LIMIT = 2 ** 31  # protobuf cannot serialize a message of 2 GiB or more (ByteSize raises EncodeError)


def fitting(message, limit_bytes: int, why: str = EVIDENCE_TOO_LARGE):
    """`message` when it fits the server's message limit, else ResponseTooLargeError saying what to send instead
    (`why`). gRPC would only fail it at send time, after the work, as an opaque RESOURCE_EXHAUSTED (and end a
    stream with it: a stream checks each whole item, its id and status included, in streaming.run_stream)."""
    try:
        size = message.ByteSize()
    except EncodeError:  # over protobuf's own 2 GiB
        size = PROTOBUF_LIMIT
    if size > limit_bytes:
        raise _too_large(size, limit_bytes, why)
    return message


def fitting_result(result, build, limit_bytes: int, why: str = EVIDENCE_TOO_LARGE):
    """build(result) when it fits the message limit, as `fitting`; a result whose text alone is over the limit is
    refused before its message is built. Repeated claims are judged once but each carries its top_k passages in
    the response: a 0.3 MB request made a 790 MB message, built on the event loop (every call, health checks
    included, waited seconds) only to be refused, and one over 2 GiB could not be measured at all."""
    floor = text_floor(result)
    if floor > limit_bytes:
        raise _too_large(floor, limit_bytes, why, at_least=True)
    return fitting(build(result), limit_bytes, why)


def _too_large(size: int, limit_bytes: int, why: str, at_least: bool = False) -> ResponseTooLargeError:
    over = "over " if at_least or size >= PROTOBUF_LIMIT else ""
    return ResponseTooLargeError(
        f"the response would be {over}{_megabytes(size)}, over this server's {_megabytes(limit_bytes)} message "
        f"limit (KGV_SERVER__MAX_MESSAGE_BYTES): {why}")


def _evidence_chars(evidence) -> int:
    return sum(len(e.fact_id) + len(e.text) + len(e.source) + len(e.title) for e in evidence)


def text_floor(result) -> int:
    """A lower bound of a result's serialized size in bytes, counted without building its message: the characters
    of its text fields (each at least one byte in UTF-8, and a string is written whole)."""
    if isinstance(result, t.ChainResult):
        return sum(text_floor(part) for part in (result.knowledge, result.info_gain) if part is not None)
    if isinstance(result, t.KnowledgeResult):
        n = len(result.chain_text)
        for s in result.steps:
            n += len(s.step.text) + _evidence_chars(s.evidence)
            for c in s.claims:
                n += len(c.claim.text) + len(c.error) + _evidence_chars(c.evidence)
        return n
    if isinstance(result, t.InfoGainResult):
        return len(result.chain_text) + len(result.target_text) + sum(
            len(g.step.text) + len(g.null_reason) for g in result.steps)
    return 0


def _megabytes(size: int) -> str:
    return f"{size / 1e6:.1f} MB" if size >= 1e6 else f"{size / 1e3:.1f} kB"  # not "0.1 MB, over ... 0.1 MB"
