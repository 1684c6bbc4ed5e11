from google.rpc import status_pb2 as _status_pb2
from kgverify.v1 import common_pb2 as _common_pb2
from kgverify.v1 import info_gain_service_pb2 as _info_gain_service_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Metric(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    METRIC_UNSPECIFIED: _ClassVar[Metric]
    METRIC_KNOWLEDGE_INDEX: _ClassVar[Metric]
    METRIC_INFO_GAIN: _ClassVar[Metric]
METRIC_UNSPECIFIED: Metric
METRIC_KNOWLEDGE_INDEX: Metric
METRIC_INFO_GAIN: Metric

class Claim(_message.Message):
    __slots__ = ("text", "start", "end", "no_knowledge")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    NO_KNOWLEDGE_FIELD_NUMBER: _ClassVar[int]
    text: str
    start: int
    end: int
    no_knowledge: bool
    def __init__(self, text: _Optional[str] = ..., start: _Optional[int] = ..., end: _Optional[int] = ..., no_knowledge: _Optional[bool] = ...) -> None: ...

class Step(_message.Message):
    __slots__ = ("index", "text", "start", "end", "no_knowledge", "claims", "planning", "knowledge")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    NO_KNOWLEDGE_FIELD_NUMBER: _ClassVar[int]
    CLAIMS_FIELD_NUMBER: _ClassVar[int]
    PLANNING_FIELD_NUMBER: _ClassVar[int]
    KNOWLEDGE_FIELD_NUMBER: _ClassVar[int]
    index: int
    text: str
    start: int
    end: int
    no_knowledge: bool
    claims: _containers.RepeatedCompositeFieldContainer[Claim]
    planning: str
    knowledge: str
    def __init__(self, index: _Optional[int] = ..., text: _Optional[str] = ..., start: _Optional[int] = ..., end: _Optional[int] = ..., no_knowledge: _Optional[bool] = ..., claims: _Optional[_Iterable[_Union[Claim, _Mapping]]] = ..., planning: _Optional[str] = ..., knowledge: _Optional[str] = ...) -> None: ...

class SplitReasoningRequest(_message.Message):
    __slots__ = ("reasoning", "steps", "question", "splitter")
    REASONING_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    QUESTION_FIELD_NUMBER: _ClassVar[int]
    SPLITTER_FIELD_NUMBER: _ClassVar[int]
    reasoning: str
    steps: _containers.RepeatedScalarFieldContainer[str]
    question: str
    splitter: _common_pb2.Splitter
    def __init__(self, reasoning: _Optional[str] = ..., steps: _Optional[_Iterable[str]] = ..., question: _Optional[str] = ..., splitter: _Optional[_Union[_common_pb2.Splitter, str]] = ...) -> None: ...

class SplitReasoningResponse(_message.Message):
    __slots__ = ("steps", "chain_text", "splitter")
    STEPS_FIELD_NUMBER: _ClassVar[int]
    CHAIN_TEXT_FIELD_NUMBER: _ClassVar[int]
    SPLITTER_FIELD_NUMBER: _ClassVar[int]
    steps: _containers.RepeatedCompositeFieldContainer[Step]
    chain_text: str
    splitter: str
    def __init__(self, steps: _Optional[_Iterable[_Union[Step, _Mapping]]] = ..., chain_text: _Optional[str] = ..., splitter: _Optional[str] = ...) -> None: ...

class KnowledgeOptions(_message.Message):
    __slots__ = ("top_k", "judge", "retrieval_mode", "use_knowledge_base", "splitter")
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    JUDGE_FIELD_NUMBER: _ClassVar[int]
    RETRIEVAL_MODE_FIELD_NUMBER: _ClassVar[int]
    USE_KNOWLEDGE_BASE_FIELD_NUMBER: _ClassVar[int]
    SPLITTER_FIELD_NUMBER: _ClassVar[int]
    top_k: int
    judge: _common_pb2.JudgeBackend
    retrieval_mode: _common_pb2.RetrievalMode
    use_knowledge_base: bool
    splitter: _common_pb2.Splitter
    def __init__(self, top_k: _Optional[int] = ..., judge: _Optional[_Union[_common_pb2.JudgeBackend, str]] = ..., retrieval_mode: _Optional[_Union[_common_pb2.RetrievalMode, str]] = ..., use_knowledge_base: _Optional[bool] = ..., splitter: _Optional[_Union[_common_pb2.Splitter, str]] = ...) -> None: ...

class ScoreKnowledgeRequest(_message.Message):
    __slots__ = ("question", "reasoning", "steps", "context", "options")
    QUESTION_FIELD_NUMBER: _ClassVar[int]
    REASONING_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    question: str
    reasoning: str
    steps: _containers.RepeatedScalarFieldContainer[str]
    context: _containers.RepeatedCompositeFieldContainer[_common_pb2.Passage]
    options: KnowledgeOptions
    def __init__(self, question: _Optional[str] = ..., reasoning: _Optional[str] = ..., steps: _Optional[_Iterable[str]] = ..., context: _Optional[_Iterable[_Union[_common_pb2.Passage, _Mapping]]] = ..., options: _Optional[_Union[KnowledgeOptions, _Mapping]] = ...) -> None: ...

class ClaimVerdict(_message.Message):
    __slots__ = ("claim", "verdict", "probabilities", "tier", "evidence", "error", "cached")
    CLAIM_FIELD_NUMBER: _ClassVar[int]
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    EVIDENCE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CACHED_FIELD_NUMBER: _ClassVar[int]
    claim: Claim
    verdict: _common_pb2.Verdict
    probabilities: _common_pb2.LabelProbabilities
    tier: _common_pb2.JudgeTier
    evidence: _containers.RepeatedCompositeFieldContainer[_common_pb2.Evidence]
    error: str
    cached: bool
    def __init__(self, claim: _Optional[_Union[Claim, _Mapping]] = ..., verdict: _Optional[_Union[_common_pb2.Verdict, str]] = ..., probabilities: _Optional[_Union[_common_pb2.LabelProbabilities, _Mapping]] = ..., tier: _Optional[_Union[_common_pb2.JudgeTier, str]] = ..., evidence: _Optional[_Iterable[_Union[_common_pb2.Evidence, _Mapping]]] = ..., error: _Optional[str] = ..., cached: _Optional[bool] = ...) -> None: ...

class StepVerdict(_message.Message):
    __slots__ = ("step", "verdict", "probabilities", "tier", "evidence", "claims")
    STEP_FIELD_NUMBER: _ClassVar[int]
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    EVIDENCE_FIELD_NUMBER: _ClassVar[int]
    CLAIMS_FIELD_NUMBER: _ClassVar[int]
    step: Step
    verdict: _common_pb2.Verdict
    probabilities: _common_pb2.LabelProbabilities
    tier: _common_pb2.JudgeTier
    evidence: _containers.RepeatedCompositeFieldContainer[_common_pb2.Evidence]
    claims: _containers.RepeatedCompositeFieldContainer[ClaimVerdict]
    def __init__(self, step: _Optional[_Union[Step, _Mapping]] = ..., verdict: _Optional[_Union[_common_pb2.Verdict, str]] = ..., probabilities: _Optional[_Union[_common_pb2.LabelProbabilities, _Mapping]] = ..., tier: _Optional[_Union[_common_pb2.JudgeTier, str]] = ..., evidence: _Optional[_Iterable[_Union[_common_pb2.Evidence, _Mapping]]] = ..., claims: _Optional[_Iterable[_Union[ClaimVerdict, _Mapping]]] = ...) -> None: ...

class VerdictCounts(_message.Message):
    __slots__ = ("supported", "contradicted", "not_enough_info", "no_knowledge", "error")
    SUPPORTED_FIELD_NUMBER: _ClassVar[int]
    CONTRADICTED_FIELD_NUMBER: _ClassVar[int]
    NOT_ENOUGH_INFO_FIELD_NUMBER: _ClassVar[int]
    NO_KNOWLEDGE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    supported: int
    contradicted: int
    not_enough_info: int
    no_knowledge: int
    error: int
    def __init__(self, supported: _Optional[int] = ..., contradicted: _Optional[int] = ..., not_enough_info: _Optional[int] = ..., no_knowledge: _Optional[int] = ..., error: _Optional[int] = ...) -> None: ...

class ScoreKnowledgeResponse(_message.Message):
    __slots__ = ("steps", "knowledge_index", "knowledge_index_paper", "coverage", "counts", "error_steps", "first_error_step", "status", "llm_calls", "chain_text", "provenance")
    STEPS_FIELD_NUMBER: _ClassVar[int]
    KNOWLEDGE_INDEX_FIELD_NUMBER: _ClassVar[int]
    KNOWLEDGE_INDEX_PAPER_FIELD_NUMBER: _ClassVar[int]
    COVERAGE_FIELD_NUMBER: _ClassVar[int]
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    ERROR_STEPS_FIELD_NUMBER: _ClassVar[int]
    FIRST_ERROR_STEP_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    LLM_CALLS_FIELD_NUMBER: _ClassVar[int]
    CHAIN_TEXT_FIELD_NUMBER: _ClassVar[int]
    PROVENANCE_FIELD_NUMBER: _ClassVar[int]
    steps: _containers.RepeatedCompositeFieldContainer[StepVerdict]
    knowledge_index: float
    knowledge_index_paper: float
    coverage: float
    counts: VerdictCounts
    error_steps: int
    first_error_step: int
    status: _common_pb2.ChainStatus
    llm_calls: int
    chain_text: str
    provenance: _common_pb2.Provenance
    def __init__(self, steps: _Optional[_Iterable[_Union[StepVerdict, _Mapping]]] = ..., knowledge_index: _Optional[float] = ..., knowledge_index_paper: _Optional[float] = ..., coverage: _Optional[float] = ..., counts: _Optional[_Union[VerdictCounts, _Mapping]] = ..., error_steps: _Optional[int] = ..., first_error_step: _Optional[int] = ..., status: _Optional[_Union[_common_pb2.ChainStatus, str]] = ..., llm_calls: _Optional[int] = ..., chain_text: _Optional[str] = ..., provenance: _Optional[_Union[_common_pb2.Provenance, _Mapping]] = ...) -> None: ...

class ScoreChainRequest(_message.Message):
    __slots__ = ("question", "reasoning", "steps", "answer", "gold_answer", "choices", "context", "metrics", "knowledge_options", "info_gain_options")
    QUESTION_FIELD_NUMBER: _ClassVar[int]
    REASONING_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    ANSWER_FIELD_NUMBER: _ClassVar[int]
    GOLD_ANSWER_FIELD_NUMBER: _ClassVar[int]
    CHOICES_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    KNOWLEDGE_OPTIONS_FIELD_NUMBER: _ClassVar[int]
    INFO_GAIN_OPTIONS_FIELD_NUMBER: _ClassVar[int]
    question: str
    reasoning: str
    steps: _containers.RepeatedScalarFieldContainer[str]
    answer: str
    gold_answer: str
    choices: _containers.RepeatedScalarFieldContainer[str]
    context: _containers.RepeatedCompositeFieldContainer[_common_pb2.Passage]
    metrics: _containers.RepeatedScalarFieldContainer[Metric]
    knowledge_options: KnowledgeOptions
    info_gain_options: _info_gain_service_pb2.InfoGainOptions
    def __init__(self, question: _Optional[str] = ..., reasoning: _Optional[str] = ..., steps: _Optional[_Iterable[str]] = ..., answer: _Optional[str] = ..., gold_answer: _Optional[str] = ..., choices: _Optional[_Iterable[str]] = ..., context: _Optional[_Iterable[_Union[_common_pb2.Passage, _Mapping]]] = ..., metrics: _Optional[_Iterable[_Union[Metric, str]]] = ..., knowledge_options: _Optional[_Union[KnowledgeOptions, _Mapping]] = ..., info_gain_options: _Optional[_Union[_info_gain_service_pb2.InfoGainOptions, _Mapping]] = ...) -> None: ...

class ScoreChainResponse(_message.Message):
    __slots__ = ("knowledge", "info_gain")
    KNOWLEDGE_FIELD_NUMBER: _ClassVar[int]
    INFO_GAIN_FIELD_NUMBER: _ClassVar[int]
    knowledge: ScoreKnowledgeResponse
    info_gain: _info_gain_service_pb2.ScoreInfoGainResponse
    def __init__(self, knowledge: _Optional[_Union[ScoreKnowledgeResponse, _Mapping]] = ..., info_gain: _Optional[_Union[_info_gain_service_pb2.ScoreInfoGainResponse, _Mapping]] = ...) -> None: ...

class StreamScoreChainsRequest(_message.Message):
    __slots__ = ("id", "chain")
    ID_FIELD_NUMBER: _ClassVar[int]
    CHAIN_FIELD_NUMBER: _ClassVar[int]
    id: str
    chain: ScoreChainRequest
    def __init__(self, id: _Optional[str] = ..., chain: _Optional[_Union[ScoreChainRequest, _Mapping]] = ...) -> None: ...

class StreamScoreChainsResponse(_message.Message):
    __slots__ = ("id", "status", "result")
    ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    id: str
    status: _status_pb2.Status
    result: ScoreChainResponse
    def __init__(self, id: _Optional[str] = ..., status: _Optional[_Union[_status_pb2.Status, _Mapping]] = ..., result: _Optional[_Union[ScoreChainResponse, _Mapping]] = ...) -> None: ...
