"""The one client error: a gRPC code name, the ErrorInfo reason, the message and details."""

from __future__ import annotations

from dataclasses import dataclass, field

import grpc
from google.rpc import error_details_pb2, status_pb2

AUTH_CODES = ("UNAUTHENTICATED", "PERMISSION_DENIED")  # the server refuses the caller (its token), not the request


@dataclass(eq=False)  # an exception compares and hashes by identity (eq=True made it unhashable)
class VerifierError(Exception):
    code: str  # gRPC status code name, e.g. "INVALID_ARGUMENT"
    reason: str
    message: str
    metadata: dict[str, str] = field(default_factory=dict)
    field_violations: list[tuple[str, str]] = field(default_factory=list)
    retry_delay_s: float | None = None  # the server's google.rpc.RetryInfo: how long to wait before retrying

    def __post_init__(self) -> None:
        super().__init__(f"{self.code} [{self.reason}]: {self.message}")

    def __reduce__(self):
        # pickle and copy rebuild it from its fields (Exception's default passes the one message string to
        # __init__, which needs code, reason and message): a process pool's worker that raised it broke the pool
        return (type(self), (self.code, self.reason, self.message, dict(self.metadata), list(self.field_violations),
                             self.retry_delay_s))

    @property
    def retryable(self) -> bool:
        """UNAVAILABLE, and RESOURCE_EXHAUSTED with the server's RetryInfo (it shed the call, or a model ran out
        of memory for one batch); not a message over a size limit, which the same call gets again."""
        return self.code == "UNAVAILABLE" or (self.code == "RESOURCE_EXHAUSTED" and self.retry_delay_s is not None)

    def to_status(self) -> dict[str, str]:
        """The batch record form: {"code", "reason", "message"}."""
        return {"code": self.code, "reason": self.reason, "message": self.message}

    @classmethod
    def from_status(cls, status: status_pb2.Status) -> "VerifierError":
        reason, metadata, violations, retry_delay_s = "", {}, [], None
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                reason, metadata = info.reason, dict(info.metadata)
            elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                violations = [(v.field, v.description) for v in bad.field_violations]
            elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                retry = error_details_pb2.RetryInfo()
                detail.Unpack(retry)
                retry_delay_s = max(0.0, retry.retry_delay.seconds + retry.retry_delay.nanos / 1e9)
        code = next((c.name for c in grpc.StatusCode if c.value[0] == status.code), "UNKNOWN")
        return cls(code, reason or code, status.message, metadata, violations, retry_delay_s)

    @classmethod
    def from_rpc_error(cls, error: grpc.RpcError) -> "VerifierError":
        from grpc_status import rpc_status

        try:
            status = rpc_status.from_call(error)
        except ValueError:
            status = None
        if status is not None:
            return cls.from_status(status)
        code = error.code().name if error.code() else "UNKNOWN"
        return cls(code, code, error.details() or "")


def refusal_advice(error: VerifierError, token_given: bool) -> str:
    """What to do about a server that refuses the caller (AUTH_CODES): a token to pass, since running the same
    command again cannot help."""
    if error.code == "PERMISSION_DENIED":
        return ("the server does not allow this call with the token in --token-file: pass an admin token with "
                "--token-file")
    if token_given:
        return "the server does not accept the token in --token-file: pass a file holding a token it accepts"
    return "the server requires a bearer token: pass the file holding it with --token-file"


def refusal_note(exc: BaseException, token_given: bool) -> str:
    """"; " and refusal_advice for a VerifierError of a server that refused the caller; "" for any other error."""
    if isinstance(exc, VerifierError) and exc.code in AUTH_CODES:
        return "; " + refusal_advice(exc, token_given)
    return ""
