"""Domain errors: each carries its gRPC status code name and an ErrorInfo reason.

This module imports neither grpc nor protobuf; server/errors.py maps these
errors to gRPC statuses.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FieldViolation:
    """One invalid request field (google.rpc.BadRequest.FieldViolation)."""

    field: str
    description: str


class KgverifyError(Exception):
    """Base of every error that reaches callers with a definite status."""

    code = "INTERNAL"
    reason = "INTERNAL"

    def __init__(self, message: str, *, reason: str | None = None, metadata: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason
        self.metadata = dict(metadata or {})


class InvalidArgumentError(KgverifyError):
    """The request is malformed or breaks an application limit."""

    code = "INVALID_ARGUMENT"
    reason = "INVALID_ARGUMENT"

    def __init__(self, violations: list[FieldViolation], *, reason: str | None = None):
        self.violations = list(violations)
        # A violation of the whole message (no field, e.g. undecodable bytes) reads as its description alone.
        summary = "; ".join(f"{v.field}: {v.description}" if v.field else v.description
                            for v in self.violations[:5])
        if len(self.violations) > 5:
            summary += f"; and {len(self.violations) - 5} more"
        super().__init__(f"invalid request: {summary}", reason=reason)

    @classmethod
    def single(cls, field: str, description: str, *, reason: str | None = None) -> "InvalidArgumentError":
        return cls([FieldViolation(field, description)], reason=reason)


class FailedPreconditionError(KgverifyError):
    """The server is not in a state to answer this request (e.g. no KB)."""

    code = "FAILED_PRECONDITION"
    reason = "FAILED_PRECONDITION"


class KnowledgeBaseUnavailableError(FailedPreconditionError):
    """The request needs the knowledge base but none is loaded."""

    reason = "KB_NOT_LOADED"


class KnowledgeBaseMismatchError(FailedPreconditionError):
    """The knowledge base was built with another embedder than the configured one."""

    reason = "KB_EMBEDDER_MISMATCH"


class KnowledgeBaseCorruptError(FailedPreconditionError):
    """A knowledge base file is missing, truncated or fails its checksum."""

    reason = "KB_CORRUPT"


class KnowledgeBaseNotFoundError(KnowledgeBaseCorruptError):
    """No knowledge base at the configured path (nothing there, or a directory that is not a KB)."""

    reason = "KB_NOT_FOUND"


class BackendNotConfiguredError(FailedPreconditionError):
    """The request asks for a backend this server was not configured with."""

    reason = "BACKEND_NOT_CONFIGURED"


class BackendUnavailableError(KgverifyError):
    """A judge or LM backend cannot be reached (the only retryable error)."""

    code = "UNAVAILABLE"
    reason = "BACKEND_UNAVAILABLE"


class BackendRateLimitedError(BackendUnavailableError):
    """The backend (or a gateway in front of it) answers, but throttles: HTTP 429 after the retries. Unavailable to
    the caller like an outage, but no sign that the backend restarted (with other weights)."""


class BackendTimeoutError(KgverifyError):
    """A backend did not answer within the RPC's remaining deadline."""

    code = "DEADLINE_EXCEEDED"
    reason = "BACKEND_TIMEOUT"


class BackendResponseError(KgverifyError):
    """A reachable backend returned unusable output (claims then get ERROR)."""

    code = "INTERNAL"
    reason = "BACKEND_BAD_RESPONSE"


class OverloadedError(KgverifyError):
    """The server is at its concurrency limit."""

    code = "RESOURCE_EXHAUSTED"
    reason = "OVERLOADED"

    def __init__(self, message: str = "server overloaded, retry later", *, retry_after_s: float = 0.2):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class DeviceOutOfMemoryError(OverloadedError):
    """A local model ran out of device memory (GPU or host) for one batch; the batch's requests may retry."""

    reason = "DEVICE_OUT_OF_MEMORY"


_OUT_OF_MEMORY_MARKERS = ("out of memory", "alloc_failed", "can't allocate memory")


def is_out_of_memory(exc: BaseException) -> bool:
    """torch.OutOfMemoryError, MemoryError, or a RuntimeError from CUDA/cuBLAS/the CPU allocator saying so.

    Checked by name and message so that this module needs no torch import: cuBLAS reports a failed workspace
    allocation as ``CUBLAS_STATUS_ALLOC_FAILED when calling cublasCreate(handle)``, a plain RuntimeError."""
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    if not isinstance(exc, RuntimeError):
        return False
    text = str(exc).lower()
    return any(marker in text for marker in _OUT_OF_MEMORY_MARKERS)


class ResponseTooLargeError(KgverifyError):
    """The scored result does not fit the server's message limit; the same request would fail again."""

    code = "RESOURCE_EXHAUSTED"
    reason = "RESPONSE_TOO_LARGE"


class NotReadyError(KgverifyError):
    """The service's dependencies are still loading."""

    code = "UNAVAILABLE"
    reason = "NOT_READY"


class ServiceLoadFailedError(FailedPreconditionError):
    """The service's model or device failed to load at startup (or the KB, for an unexpected reason); retrying will
    not help until the server is fixed."""

    reason = "SERVICE_LOAD_FAILED"
