from kgverify.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SearchKnowledgeBaseRequest(_message.Message):
    __slots__ = ("query", "top_k", "mode")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    query: str
    top_k: int
    mode: _common_pb2.RetrievalMode
    def __init__(self, query: _Optional[str] = ..., top_k: _Optional[int] = ..., mode: _Optional[_Union[_common_pb2.RetrievalMode, str]] = ...) -> None: ...

class SearchKnowledgeBaseResponse(_message.Message):
    __slots__ = ("facts", "kb_id", "mode")
    FACTS_FIELD_NUMBER: _ClassVar[int]
    KB_ID_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    facts: _containers.RepeatedCompositeFieldContainer[_common_pb2.Evidence]
    kb_id: str
    mode: _common_pb2.RetrievalMode
    def __init__(self, facts: _Optional[_Iterable[_Union[_common_pb2.Evidence, _Mapping]]] = ..., kb_id: _Optional[str] = ..., mode: _Optional[_Union[_common_pb2.RetrievalMode, str]] = ...) -> None: ...

class GetKnowledgeBaseInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class IndexSpec(_message.Message):
    __slots__ = ("family", "metric", "params")
    class ParamsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    FAMILY_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    family: str
    metric: str
    params: _containers.ScalarMap[str, str]
    def __init__(self, family: _Optional[str] = ..., metric: _Optional[str] = ..., params: _Optional[_Mapping[str, str]] = ...) -> None: ...

class GetKnowledgeBaseInfoResponse(_message.Message):
    __slots__ = ("kb_id", "path", "created_at", "embedder", "embedder_hash", "dim", "index", "num_facts", "num_documents", "checksum", "file_checksums", "modes", "default_mode")
    class FileChecksumsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    KB_ID_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    EMBEDDER_FIELD_NUMBER: _ClassVar[int]
    EMBEDDER_HASH_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    NUM_FACTS_FIELD_NUMBER: _ClassVar[int]
    NUM_DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    CHECKSUM_FIELD_NUMBER: _ClassVar[int]
    FILE_CHECKSUMS_FIELD_NUMBER: _ClassVar[int]
    MODES_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_MODE_FIELD_NUMBER: _ClassVar[int]
    kb_id: str
    path: str
    created_at: str
    embedder: str
    embedder_hash: str
    dim: int
    index: IndexSpec
    num_facts: int
    num_documents: int
    checksum: str
    file_checksums: _containers.ScalarMap[str, str]
    modes: _containers.RepeatedScalarFieldContainer[_common_pb2.RetrievalMode]
    default_mode: _common_pb2.RetrievalMode
    def __init__(self, kb_id: _Optional[str] = ..., path: _Optional[str] = ..., created_at: _Optional[str] = ..., embedder: _Optional[str] = ..., embedder_hash: _Optional[str] = ..., dim: _Optional[int] = ..., index: _Optional[_Union[IndexSpec, _Mapping]] = ..., num_facts: _Optional[int] = ..., num_documents: _Optional[int] = ..., checksum: _Optional[str] = ..., file_checksums: _Optional[_Mapping[str, str]] = ..., modes: _Optional[_Iterable[_Union[_common_pb2.RetrievalMode, str]]] = ..., default_mode: _Optional[_Union[_common_pb2.RetrievalMode, str]] = ...) -> None: ...

class ReloadKnowledgeBaseRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ReloadKnowledgeBaseResponse(_message.Message):
    __slots__ = ("previous_kb_id", "kb_id")
    PREVIOUS_KB_ID_FIELD_NUMBER: _ClassVar[int]
    KB_ID_FIELD_NUMBER: _ClassVar[int]
    previous_kb_id: str
    kb_id: str
    def __init__(self, previous_kb_id: _Optional[str] = ..., kb_id: _Optional[str] = ...) -> None: ...
