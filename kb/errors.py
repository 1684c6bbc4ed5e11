"""Knowledge-base errors (mapped to FAILED_PRECONDITION by the server)."""

from server.pipeline.errors import (  # noqa: F401  (re-exported for kb users)
    KnowledgeBaseCorruptError,
    KnowledgeBaseMismatchError,
    KnowledgeBaseNotFoundError,
    KnowledgeBaseUnavailableError,
)
