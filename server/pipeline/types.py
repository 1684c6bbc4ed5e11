"""Domain types of the pipeline: requests, steps, claims, verdicts, results."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field


class Verdict(str, enum.Enum):
    SUPPORTED = "supported"
    CONTRADICTED = "contradicted"
    NOT_ENOUGH_INFO = "not_enough_info"
    NO_KNOWLEDGE = "no_knowledge"
    ERROR = "error"


JUDGED = (Verdict.SUPPORTED, Verdict.CONTRADICTED, Verdict.NOT_ENOUGH_INFO)


class Tier(str, enum.Enum):
    NONE = "none"
    EMBEDDED = "embedded"
    LLM = "llm"
    DEGRADED = "degraded"


class RetrievalMode(str, enum.Enum):
    DENSE = "dense"
    BM25 = "bm25"
    HYBRID = "hybrid"


class EvidenceOrigin(str, enum.Enum):
    KNOWLEDGE_BASE = "knowledge_base"
    CONTEXT = "context"


class Metric(str, enum.Enum):
    KNOWLEDGE_INDEX = "ki"
    INFO_GAIN = "infogain"


class ChainStatus(str, enum.Enum):
    OK = "ok"
    PARTIAL = "partial"


@dataclass(frozen=True)
class LabelProbs:
    """P(supported), P(contradicted), P(not_enough_info); they sum to 1."""

    supported: float
    contradicted: float
    not_enough_info: float

    @classmethod
    def from_row(cls, row) -> "LabelProbs":
        values = [float(x) for x in row]
        if not all(math.isfinite(x) for x in values):  # max(0.0, nan) is 0.0: a NaN would pass as a zero
            raise ValueError(f"probabilities must be finite, got {values}")
        s, c, n = (max(0.0, x) for x in values)
        total = s + c + n
        if not total > 0:
            raise ValueError("probabilities must have a positive sum")
        return cls(s / total, c / total, n / total)

    def verdict(self) -> Verdict:
        best = max(self.supported, self.contradicted, self.not_enough_info)
        if best == self.supported:
            return Verdict.SUPPORTED
        if best == self.contradicted:
            return Verdict.CONTRADICTED
        return Verdict.NOT_ENOUGH_INFO

    def confidence(self) -> float:
        return max(self.supported, self.contradicted, self.not_enough_info)


@dataclass(frozen=True)
class Passage:
    """Evidence supplied by the caller."""

    id: str
    text: str
    source: str = ""
    title: str = ""


@dataclass(frozen=True)
class Evidence:
    fact_id: str
    text: str
    source: str
    title: str
    score: float
    origin: EvidenceOrigin


@dataclass(frozen=True)
class Claim:
    text: str
    start: int
    end: int
    no_knowledge: bool = False
    # A claim split off a coordinated verb phrase ("... and is renally cleared") has no subject of its own: this
    # is the subject of the clause it continues ("Metformin"). Retrieval and the judge read it in front of the
    # text; the claim itself (text, offsets) stays the exact span of the chain.
    subject: str = ""

    @property
    def judged_text(self) -> str:
        """What retrieval and the judge read: the claim, after its borrowed subject if it has one."""
        return f"{self.subject} {self.text}" if self.subject else self.text


@dataclass(frozen=True)
class Step:
    index: int
    text: str
    start: int
    end: int
    claims: tuple[Claim, ...] = ()
    no_knowledge: bool = False
    planning: str = ""
    knowledge: str = ""


@dataclass(frozen=True)
class SplitResult:
    chain_text: str
    steps: tuple[Step, ...]
    splitter: str
    llm_calls: int = 0  # calls made to an LLM decomposer


@dataclass(frozen=True)
class ChainInput:
    """A chain as the caller sent it: free text or pre-split steps (exactly one)."""

    question: str = ""
    reasoning: str | None = None
    steps: tuple[str, ...] | None = None


@dataclass(frozen=True)
class KnowledgeOptions:
    top_k: int | None = None
    judge: str | None = None
    retrieval_mode: RetrievalMode | None = None
    use_knowledge_base: bool | None = None
    splitter: str | None = None


@dataclass(frozen=True)
class KnowledgeRequest:
    chain: ChainInput
    context: tuple[Passage, ...] = ()
    options: KnowledgeOptions = KnowledgeOptions()


@dataclass(frozen=True)
class InfoGainOptions:
    estimator: str | None = None  # "lm" | "nli"
    paper: bool = False
    units: str = "nats"  # "nats" | "bits"
    window: int = 0
    per_token: bool = False
    splitter: str | None = None  # "rules" | "llm"; None: the server's


@dataclass(frozen=True)
class InfoGainRequest:
    chain: ChainInput
    answer: str = ""
    gold_answer: str = ""
    choices: tuple[str, ...] = ()
    options: InfoGainOptions = InfoGainOptions()


@dataclass(frozen=True)
class ChainRequest:
    """Score KI and/or InfoGain of one chain (None = metric not requested)."""

    knowledge: KnowledgeRequest | None
    info_gain: InfoGainRequest | None


@dataclass(frozen=True)
class JudgeItem:
    """One claim to judge against its evidence."""

    claim: str
    evidence: tuple[Evidence, ...]


@dataclass(frozen=True)
class Judgement:
    verdict: Verdict
    probabilities: LabelProbs | None
    tier: Tier
    error: str = ""
    cached: bool = False
    llm_calls: int = 0
    evidence: tuple[Evidence, ...] | None = None  # evidence the judge relied on, best first


@dataclass(frozen=True)
class ClaimResult:
    claim: Claim
    verdict: Verdict
    probabilities: LabelProbs | None
    tier: Tier
    evidence: tuple[Evidence, ...] = ()
    error: str = ""
    cached: bool = False


@dataclass(frozen=True)
class StepResult:
    step: Step
    verdict: Verdict
    probabilities: LabelProbs | None
    tier: Tier
    evidence: tuple[Evidence, ...]
    claims: tuple[ClaimResult, ...]


@dataclass(frozen=True)
class VerdictCounts:
    supported: int = 0
    contradicted: int = 0
    not_enough_info: int = 0
    no_knowledge: int = 0
    error: int = 0


@dataclass(frozen=True)
class Provenance:
    kb_id: str = ""
    kb_checksum: str = ""
    judge: str = ""
    judge_prompt_version: str = ""
    splitter: str = ""
    estimator: str = ""
    embedder: str = ""
    server_version: str = ""
    judge_model: str = ""  # a vLLM judge's weights (/v1/models root), "" for embedded judges or when unknown
    estimator_model: str = ""  # the vLLM LM estimator's weights (/v1/models root), "" otherwise or when not read


@dataclass(frozen=True)
class KnowledgeResult:
    chain_text: str
    steps: tuple[StepResult, ...]
    knowledge_index: float | None
    knowledge_index_paper: float | None
    coverage: float | None
    counts: VerdictCounts
    error_steps: int
    first_error_step: int
    status: ChainStatus
    llm_calls: int
    provenance: Provenance


@dataclass(frozen=True)
class StepGain:
    step: Step
    nll: float | None
    nll_per_token: float | None
    gain: float | None
    perplexity_paper: float | None = None
    flags: tuple[str, ...] = ()  # "windowed" | "context_overflow" | "truncated"
    null_reason: str = ""


@dataclass(frozen=True)
class InfoGainResult:
    chain_text: str
    steps: tuple[StepGain, ...]
    nll_initial: float | None
    info_gain: float | None
    info_gain_total: float | None
    info_gain_paper: float | None
    info_gain_paper_reason: str
    perplexity_paper_initial: float | None
    target: str  # "gold_answer" | "answer"
    target_text: str
    answer_tokens: int
    units: str
    estimator: str  # "lm" | "nli"
    prefill_tokens: int
    status: ChainStatus
    llm_calls: int
    provenance: Provenance


@dataclass(frozen=True)
class ChainResult:
    knowledge: KnowledgeResult | None
    info_gain: InfoGainResult | None


@dataclass(frozen=True)
class PrefixScores:
    """What an InfoGain estimator returns for c_0..c_n.

    nll[i] is -log p(target | c_i) in nats summed over answer tokens, or None
    when c_i does not fit the model's context (then every later one is None).
    """

    nll: tuple[float | None, ...]
    answer_tokens: int
    prefill_tokens: int = 0
    truncated: tuple[bool, ...] = ()
    llm_calls: int = 0
    overflow_reason: str = ""
    null_reasons: tuple[str, ...] = ()  # per prefix: why nll[i] is None ("" where it is not)


@dataclass(frozen=True)
class KbHit:
    """A knowledge-base search result."""

    fact_id: str
    text: str
    source: str
    title: str
    score: float

    def as_evidence(self) -> Evidence:
        return Evidence(self.fact_id, self.text, self.source, self.title, self.score, EvidenceOrigin.KNOWLEDGE_BASE)


@dataclass(frozen=True)
class KbInfo:
    """The manifest of a loaded knowledge base."""

    kb_id: str
    path: str
    created_at: str
    embedder: str
    embedder_hash: str
    dim: int
    index_family: str
    metric: str
    index_params: dict[str, str] = field(default_factory=dict)
    num_facts: int = 0
    num_documents: int = 0
    checksum: str = ""
    file_checksums: dict[str, str] = field(default_factory=dict)
    modes: tuple[RetrievalMode, ...] = (RetrievalMode.DENSE,)
