from kgverify.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Estimator(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ESTIMATOR_UNSPECIFIED: _ClassVar[Estimator]
    ESTIMATOR_LM: _ClassVar[Estimator]
    ESTIMATOR_NLI: _ClassVar[Estimator]

class InfoGainMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    INFO_GAIN_MODE_UNSPECIFIED: _ClassVar[InfoGainMode]
    INFO_GAIN_MODE_ANSWER_TOKENS: _ClassVar[InfoGainMode]
    INFO_GAIN_MODE_PAPER: _ClassVar[InfoGainMode]

class InfoUnits(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    INFO_UNITS_UNSPECIFIED: _ClassVar[InfoUnits]
    INFO_UNITS_NATS: _ClassVar[InfoUnits]
    INFO_UNITS_BITS: _ClassVar[InfoUnits]

class Target(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TARGET_UNSPECIFIED: _ClassVar[Target]
    TARGET_GOLD_ANSWER: _ClassVar[Target]
    TARGET_ANSWER: _ClassVar[Target]

class StepFlag(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STEP_FLAG_UNSPECIFIED: _ClassVar[StepFlag]
    STEP_FLAG_WINDOWED: _ClassVar[StepFlag]
    STEP_FLAG_CONTEXT_OVERFLOW: _ClassVar[StepFlag]
    STEP_FLAG_TRUNCATED: _ClassVar[StepFlag]
ESTIMATOR_UNSPECIFIED: Estimator
ESTIMATOR_LM: Estimator
ESTIMATOR_NLI: Estimator
INFO_GAIN_MODE_UNSPECIFIED: InfoGainMode
INFO_GAIN_MODE_ANSWER_TOKENS: InfoGainMode
INFO_GAIN_MODE_PAPER: InfoGainMode
INFO_UNITS_UNSPECIFIED: InfoUnits
INFO_UNITS_NATS: InfoUnits
INFO_UNITS_BITS: InfoUnits
TARGET_UNSPECIFIED: Target
TARGET_GOLD_ANSWER: Target
TARGET_ANSWER: Target
STEP_FLAG_UNSPECIFIED: StepFlag
STEP_FLAG_WINDOWED: StepFlag
STEP_FLAG_CONTEXT_OVERFLOW: StepFlag
STEP_FLAG_TRUNCATED: StepFlag

class InfoGainOptions(_message.Message):
    __slots__ = ("estimator", "mode", "units", "window", "per_token", "splitter")
    ESTIMATOR_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    UNITS_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    PER_TOKEN_FIELD_NUMBER: _ClassVar[int]
    SPLITTER_FIELD_NUMBER: _ClassVar[int]
    estimator: Estimator
    mode: InfoGainMode
    units: InfoUnits
    window: int
    per_token: bool
    splitter: _common_pb2.Splitter
    def __init__(self, estimator: _Optional[_Union[Estimator, str]] = ..., mode: _Optional[_Union[InfoGainMode, str]] = ..., units: _Optional[_Union[InfoUnits, str]] = ..., window: _Optional[int] = ..., per_token: _Optional[bool] = ..., splitter: _Optional[_Union[_common_pb2.Splitter, str]] = ...) -> None: ...

class ScoreInfoGainRequest(_message.Message):
    __slots__ = ("question", "reasoning", "steps", "answer", "gold_answer", "choices", "options")
    QUESTION_FIELD_NUMBER: _ClassVar[int]
    REASONING_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    ANSWER_FIELD_NUMBER: _ClassVar[int]
    GOLD_ANSWER_FIELD_NUMBER: _ClassVar[int]
    CHOICES_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    question: str
    reasoning: str
    steps: _containers.RepeatedScalarFieldContainer[str]
    answer: str
    gold_answer: str
    choices: _containers.RepeatedScalarFieldContainer[str]
    options: InfoGainOptions
    def __init__(self, question: _Optional[str] = ..., reasoning: _Optional[str] = ..., steps: _Optional[_Iterable[str]] = ..., answer: _Optional[str] = ..., gold_answer: _Optional[str] = ..., choices: _Optional[_Iterable[str]] = ..., options: _Optional[_Union[InfoGainOptions, _Mapping]] = ...) -> None: ...

class StepInfoGain(_message.Message):
    __slots__ = ("index", "text", "start", "end", "nll", "nll_per_token", "gain", "perplexity_paper", "flags", "null_reason")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    NLL_FIELD_NUMBER: _ClassVar[int]
    NLL_PER_TOKEN_FIELD_NUMBER: _ClassVar[int]
    GAIN_FIELD_NUMBER: _ClassVar[int]
    PERPLEXITY_PAPER_FIELD_NUMBER: _ClassVar[int]
    FLAGS_FIELD_NUMBER: _ClassVar[int]
    NULL_REASON_FIELD_NUMBER: _ClassVar[int]
    index: int
    text: str
    start: int
    end: int
    nll: float
    nll_per_token: float
    gain: float
    perplexity_paper: float
    flags: _containers.RepeatedScalarFieldContainer[StepFlag]
    null_reason: str
    def __init__(self, index: _Optional[int] = ..., text: _Optional[str] = ..., start: _Optional[int] = ..., end: _Optional[int] = ..., nll: _Optional[float] = ..., nll_per_token: _Optional[float] = ..., gain: _Optional[float] = ..., perplexity_paper: _Optional[float] = ..., flags: _Optional[_Iterable[_Union[StepFlag, str]]] = ..., null_reason: _Optional[str] = ...) -> None: ...

class ScoreInfoGainResponse(_message.Message):
    __slots__ = ("steps", "nll_initial", "info_gain", "info_gain_total", "info_gain_paper", "info_gain_paper_reason", "perplexity_paper_initial", "target", "target_text", "answer_tokens", "units", "estimator", "prefill_tokens", "status", "llm_calls", "chain_text", "provenance")
    STEPS_FIELD_NUMBER: _ClassVar[int]
    NLL_INITIAL_FIELD_NUMBER: _ClassVar[int]
    INFO_GAIN_FIELD_NUMBER: _ClassVar[int]
    INFO_GAIN_TOTAL_FIELD_NUMBER: _ClassVar[int]
    INFO_GAIN_PAPER_FIELD_NUMBER: _ClassVar[int]
    INFO_GAIN_PAPER_REASON_FIELD_NUMBER: _ClassVar[int]
    PERPLEXITY_PAPER_INITIAL_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    TARGET_TEXT_FIELD_NUMBER: _ClassVar[int]
    ANSWER_TOKENS_FIELD_NUMBER: _ClassVar[int]
    UNITS_FIELD_NUMBER: _ClassVar[int]
    ESTIMATOR_FIELD_NUMBER: _ClassVar[int]
    PREFILL_TOKENS_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    LLM_CALLS_FIELD_NUMBER: _ClassVar[int]
    CHAIN_TEXT_FIELD_NUMBER: _ClassVar[int]
    PROVENANCE_FIELD_NUMBER: _ClassVar[int]
    steps: _containers.RepeatedCompositeFieldContainer[StepInfoGain]
    nll_initial: float
    info_gain: float
    info_gain_total: float
    info_gain_paper: float
    info_gain_paper_reason: str
    perplexity_paper_initial: float
    target: Target
    target_text: str
    answer_tokens: int
    units: InfoUnits
    estimator: Estimator
    prefill_tokens: int
    status: _common_pb2.ChainStatus
    llm_calls: int
    chain_text: str
    provenance: _common_pb2.Provenance
    def __init__(self, steps: _Optional[_Iterable[_Union[StepInfoGain, _Mapping]]] = ..., nll_initial: _Optional[float] = ..., info_gain: _Optional[float] = ..., info_gain_total: _Optional[float] = ..., info_gain_paper: _Optional[float] = ..., info_gain_paper_reason: _Optional[str] = ..., perplexity_paper_initial: _Optional[float] = ..., target: _Optional[_Union[Target, str]] = ..., target_text: _Optional[str] = ..., answer_tokens: _Optional[int] = ..., units: _Optional[_Union[InfoUnits, str]] = ..., estimator: _Optional[_Union[Estimator, str]] = ..., prefill_tokens: _Optional[int] = ..., status: _Optional[_Union[_common_pb2.ChainStatus, str]] = ..., llm_calls: _Optional[int] = ..., chain_text: _Optional[str] = ..., provenance: _Optional[_Union[_common_pb2.Provenance, _Mapping]] = ...) -> None: ...
