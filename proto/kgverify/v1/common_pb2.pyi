from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Verdict(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VERDICT_UNSPECIFIED: _ClassVar[Verdict]
    VERDICT_SUPPORTED: _ClassVar[Verdict]
    VERDICT_CONTRADICTED: _ClassVar[Verdict]
    VERDICT_NOT_ENOUGH_INFO: _ClassVar[Verdict]
    VERDICT_NO_KNOWLEDGE: _ClassVar[Verdict]
    VERDICT_ERROR: _ClassVar[Verdict]

class JudgeTier(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JUDGE_TIER_UNSPECIFIED: _ClassVar[JudgeTier]
    JUDGE_TIER_NONE: _ClassVar[JudgeTier]
    JUDGE_TIER_EMBEDDED: _ClassVar[JudgeTier]
    JUDGE_TIER_LLM: _ClassVar[JudgeTier]
    JUDGE_TIER_DEGRADED: _ClassVar[JudgeTier]

class JudgeBackend(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JUDGE_BACKEND_UNSPECIFIED: _ClassVar[JudgeBackend]
    JUDGE_BACKEND_BASELINE: _ClassVar[JudgeBackend]
    JUDGE_BACKEND_NLI: _ClassVar[JudgeBackend]
    JUDGE_BACKEND_VLLM: _ClassVar[JudgeBackend]
    JUDGE_BACKEND_CASCADE: _ClassVar[JudgeBackend]

class RetrievalMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RETRIEVAL_MODE_UNSPECIFIED: _ClassVar[RetrievalMode]
    RETRIEVAL_MODE_DENSE: _ClassVar[RetrievalMode]
    RETRIEVAL_MODE_BM25: _ClassVar[RetrievalMode]
    RETRIEVAL_MODE_HYBRID: _ClassVar[RetrievalMode]

class Splitter(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SPLITTER_UNSPECIFIED: _ClassVar[Splitter]
    SPLITTER_RULES: _ClassVar[Splitter]
    SPLITTER_LLM: _ClassVar[Splitter]

class EvidenceOrigin(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EVIDENCE_ORIGIN_UNSPECIFIED: _ClassVar[EvidenceOrigin]
    EVIDENCE_ORIGIN_KNOWLEDGE_BASE: _ClassVar[EvidenceOrigin]
    EVIDENCE_ORIGIN_CONTEXT: _ClassVar[EvidenceOrigin]

class ChainStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CHAIN_STATUS_UNSPECIFIED: _ClassVar[ChainStatus]
    CHAIN_STATUS_OK: _ClassVar[ChainStatus]
    CHAIN_STATUS_PARTIAL: _ClassVar[ChainStatus]
VERDICT_UNSPECIFIED: Verdict
VERDICT_SUPPORTED: Verdict
VERDICT_CONTRADICTED: Verdict
VERDICT_NOT_ENOUGH_INFO: Verdict
VERDICT_NO_KNOWLEDGE: Verdict
VERDICT_ERROR: Verdict
JUDGE_TIER_UNSPECIFIED: JudgeTier
JUDGE_TIER_NONE: JudgeTier
JUDGE_TIER_EMBEDDED: JudgeTier
JUDGE_TIER_LLM: JudgeTier
JUDGE_TIER_DEGRADED: JudgeTier
JUDGE_BACKEND_UNSPECIFIED: JudgeBackend
JUDGE_BACKEND_BASELINE: JudgeBackend
JUDGE_BACKEND_NLI: JudgeBackend
JUDGE_BACKEND_VLLM: JudgeBackend
JUDGE_BACKEND_CASCADE: JudgeBackend
RETRIEVAL_MODE_UNSPECIFIED: RetrievalMode
RETRIEVAL_MODE_DENSE: RetrievalMode
RETRIEVAL_MODE_BM25: RetrievalMode
RETRIEVAL_MODE_HYBRID: RetrievalMode
SPLITTER_UNSPECIFIED: Splitter
SPLITTER_RULES: Splitter
SPLITTER_LLM: Splitter
EVIDENCE_ORIGIN_UNSPECIFIED: EvidenceOrigin
EVIDENCE_ORIGIN_KNOWLEDGE_BASE: EvidenceOrigin
EVIDENCE_ORIGIN_CONTEXT: EvidenceOrigin
CHAIN_STATUS_UNSPECIFIED: ChainStatus
CHAIN_STATUS_OK: ChainStatus
CHAIN_STATUS_PARTIAL: ChainStatus

class LabelProbabilities(_message.Message):
    __slots__ = ("supported", "contradicted", "not_enough_info")
    SUPPORTED_FIELD_NUMBER: _ClassVar[int]
    CONTRADICTED_FIELD_NUMBER: _ClassVar[int]
    NOT_ENOUGH_INFO_FIELD_NUMBER: _ClassVar[int]
    supported: float
    contradicted: float
    not_enough_info: float
    def __init__(self, supported: _Optional[float] = ..., contradicted: _Optional[float] = ..., not_enough_info: _Optional[float] = ...) -> None: ...

class Passage(_message.Message):
    __slots__ = ("id", "text", "source", "title")
    ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    id: str
    text: str
    source: str
    title: str
    def __init__(self, id: _Optional[str] = ..., text: _Optional[str] = ..., source: _Optional[str] = ..., title: _Optional[str] = ...) -> None: ...

class Evidence(_message.Message):
    __slots__ = ("fact_id", "text", "source", "title", "score", "origin")
    FACT_ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    fact_id: str
    text: str
    source: str
    title: str
    score: float
    origin: EvidenceOrigin
    def __init__(self, fact_id: _Optional[str] = ..., text: _Optional[str] = ..., source: _Optional[str] = ..., title: _Optional[str] = ..., score: _Optional[float] = ..., origin: _Optional[_Union[EvidenceOrigin, str]] = ...) -> None: ...

class Span(_message.Message):
    __slots__ = ("start", "end")
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    start: int
    end: int
    def __init__(self, start: _Optional[int] = ..., end: _Optional[int] = ...) -> None: ...

class Provenance(_message.Message):
    __slots__ = ("kb_id", "kb_checksum", "judge", "judge_prompt_version", "splitter", "estimator", "embedder", "server_version", "judge_model", "estimator_model")
    KB_ID_FIELD_NUMBER: _ClassVar[int]
    KB_CHECKSUM_FIELD_NUMBER: _ClassVar[int]
    JUDGE_FIELD_NUMBER: _ClassVar[int]
    JUDGE_PROMPT_VERSION_FIELD_NUMBER: _ClassVar[int]
    SPLITTER_FIELD_NUMBER: _ClassVar[int]
    ESTIMATOR_FIELD_NUMBER: _ClassVar[int]
    EMBEDDER_FIELD_NUMBER: _ClassVar[int]
    SERVER_VERSION_FIELD_NUMBER: _ClassVar[int]
    JUDGE_MODEL_FIELD_NUMBER: _ClassVar[int]
    ESTIMATOR_MODEL_FIELD_NUMBER: _ClassVar[int]
    kb_id: str
    kb_checksum: str
    judge: str
    judge_prompt_version: str
    splitter: str
    estimator: str
    embedder: str
    server_version: str
    judge_model: str
    estimator_model: str
    def __init__(self, kb_id: _Optional[str] = ..., kb_checksum: _Optional[str] = ..., judge: _Optional[str] = ..., judge_prompt_version: _Optional[str] = ..., splitter: _Optional[str] = ..., estimator: _Optional[str] = ..., embedder: _Optional[str] = ..., server_version: _Optional[str] = ..., judge_model: _Optional[str] = ..., estimator_model: _Optional[str] = ...) -> None: ...
