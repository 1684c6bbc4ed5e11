"""Plain typed results returned by the clients (no protobuf), and their JSON record form."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Probabilities:
    supported: float
    contradicted: float
    not_enough_info: float

    def to_dict(self) -> dict[str, float]:
        return {"supported": self.supported, "contradicted": self.contradicted,
                "not_enough_info": self.not_enough_info}


@dataclass(frozen=True)
class Evidence:
    fact_id: str
    text: str
    source: str
    title: str
    score: float
    origin: str  # "knowledge_base" | "context"

    def to_dict(self, text: bool = True) -> dict[str, Any]:
        """Its record; text=False leaves the passage text out (the fact id, source and score say which it was)."""
        out = {"fact_id": self.fact_id, "text": self.text, "source": self.source, "score": self.score}
        if not text:
            del out["text"]
        return out


@dataclass(frozen=True)
class ClaimVerdict:
    text: str
    start: int
    end: int
    verdict: str  # supported | contradicted | not_enough_info | no_knowledge | error
    probabilities: Probabilities | None
    tier: str  # none | embedded | llm | degraded
    evidence: tuple[Evidence, ...] = ()
    error: str = ""
    cached: bool = False

    def to_dict(self, evidence_text: bool = True) -> dict[str, Any]:
        out = {"text": self.text, "start": self.start, "end": self.end, "verdict": self.verdict,
               "probabilities": self.probabilities.to_dict() if self.probabilities else None,
               "tier": self.tier, "evidence": [e.to_dict(evidence_text) for e in self.evidence]}
        if self.error:
            out["error"] = self.error
        return out


@dataclass(frozen=True)
class StepScore:
    """One step: its KI verdict (when KI was scored) and InfoGain values (when InfoGain was scored)."""

    index: int
    text: str
    start: int
    end: int
    no_knowledge: bool = False
    verdict: str | None = None
    probabilities: Probabilities | None = None
    tier: str | None = None
    evidence: tuple[Evidence, ...] = ()
    claims: tuple[ClaimVerdict, ...] = ()
    nll: float | None = None
    nll_per_token: float | None = None
    gain: float | None = None
    perplexity_paper: float | None = None
    flags: tuple[str, ...] = ()
    null_reason: str = ""

    def to_dict(self, evidence_text: bool = True) -> dict[str, Any]:
        out = {
            "text": self.text, "start": self.start, "end": self.end, "verdict": self.verdict,
            "probabilities": self.probabilities.to_dict() if self.probabilities else None,
            "tier": self.tier, "evidence": [e.to_dict(evidence_text) for e in self.evidence],
            "claims": [c.to_dict(evidence_text) for c in self.claims], "nll": self.nll, "gain": self.gain,
        }
        if self.perplexity_paper is not None:  # (paper mode only)
            out["perplexity_paper"] = self.perplexity_paper
        if self.flags:
            out["flags"] = list(self.flags)
        if self.null_reason:
            out["null_reason"] = self.null_reason
        return out


@dataclass(frozen=True)
class ChainScore:
    """KI and/or InfoGain of one chain. Scores are None when undefined or not requested."""

    steps: tuple[StepScore, ...]
    chain_text: str
    status: str  # ok | partial
    knowledge_index: float | None = None
    knowledge_index_paper: float | None = None
    coverage: float | None = None
    counts: dict[str, int] | None = None
    error_steps: int | None = None
    first_error_step: int | None = None
    info_gain: float | None = None
    info_gain_total: float | None = None
    info_gain_paper: float | None = None
    info_gain_paper_reason: str = ""
    perplexity_paper_initial: float | None = None  # PPL_0 of the paper's formula (paper mode)
    nll_initial: float | None = None
    target: str | None = None  # gold_answer | answer
    target_text: str | None = None
    estimator: str | None = None  # lm | nli
    units: str | None = None
    answer_tokens: int | None = None
    prefill_tokens: int | None = None
    llm_calls: int = 0
    provenance: dict[str, str] = field(default_factory=dict)

    def to_record(self, item_id: str, extra: dict[str, Any] | None = None,
                  evidence_text: bool = True) -> dict[str, Any]:
        """The batch output record (the contract of `kgverify batch` and `evaluate --json`); evidence_text=False
        leaves the evidence passages' text out (their fact ids, sources and scores stay)."""
        record = {
            "id": item_id, "status": self.status,
            "knowledge_index": self.knowledge_index, "knowledge_index_paper": self.knowledge_index_paper,
            "coverage": self.coverage, "counts": self.counts, "error_steps": self.error_steps,
            "first_error_step": self.first_error_step, "info_gain": self.info_gain,
            "info_gain_total": self.info_gain_total, "info_gain_paper": self.info_gain_paper,
            "target": self.target, "estimator": self.estimator, "units": self.units,
            "steps": [s.to_dict(evidence_text) for s in self.steps], "llm_calls": self.llm_calls,
            "provenance": dict(self.provenance),
        }
        if self.info_gain_paper_reason:  # paper mode asked for, its value null: why
            record["info_gain_paper_reason"] = self.info_gain_paper_reason
        if self.perplexity_paper_initial is not None:
            record["perplexity_paper_initial"] = self.perplexity_paper_initial
        if extra:
            record.update({k: v for k, v in extra.items() if k not in record})
        return record


@dataclass(frozen=True)
class SplitClaim:
    text: str
    start: int
    end: int
    no_knowledge: bool


@dataclass(frozen=True)
class SplitStep:
    index: int
    text: str
    start: int
    end: int
    no_knowledge: bool
    claims: tuple[SplitClaim, ...]
    planning: str = ""
    knowledge: str = ""

    def to_dict(self) -> dict[str, Any]:
        out = {"text": self.text, "start": self.start, "end": self.end, "no_knowledge": self.no_knowledge,
               "claims": [{"text": c.text, "start": c.start, "end": c.end, "no_knowledge": c.no_knowledge}
                          for c in self.claims]}
        if self.planning or self.knowledge:
            out.update(planning=self.planning, knowledge=self.knowledge)
        return out


@dataclass(frozen=True)
class SplitResult:
    steps: tuple[SplitStep, ...]
    chain_text: str
    splitter: str

    def to_dict(self) -> dict[str, Any]:
        """`kgverify split`'s JSON: the steps, the text their offsets index, and the splitter that drew them."""
        return {"steps": [s.to_dict() for s in self.steps], "chain_text": self.chain_text, "splitter": self.splitter}


@dataclass(frozen=True)
class SearchHit:
    fact_id: str
    text: str
    source: str
    title: str
    score: float

    def to_dict(self) -> dict[str, Any]:
        return {"fact_id": self.fact_id, "text": self.text, "source": self.source, "title": self.title,
                "score": self.score}
