"""Domain errors -> gRPC status with google.rpc ErrorInfo / BadRequest / RetryInfo details."""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from .pipeline.errors import InvalidArgumentError, KgverifyError, OverloadedError

ERROR_DOMAIN = "kgverify.v1"
INTERNAL_MESSAGE = "internal error; see the server log for the request id"


def _pack(message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


# The status travels in trailers, which clients cap at 8 KiB by default (beyond it they see RESOURCE_EXHAUSTED
# "received metadata size exceeds soft limit" instead of the error). Limits in UTF-8 bytes: the message is
# percent-encoded (up to 3x) and the details base64-encoded (4/3x); this keeps the worst case near 5 KiB.
MAX_VIOLATIONS = 8
MAX_FIELD_BYTES, MAX_DESCRIPTION_BYTES, MAX_MESSAGE_BYTES = 80, 160, 500


def _clip(text: str, limit: int) -> str:
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    return data[:limit - 3].decode("utf-8", errors="ignore") + "…"


def _violations(violations) -> list[error_details_pb2.BadRequest.FieldViolation]:
    out = [error_details_pb2.BadRequest.FieldViolation(field=_clip(v.field, MAX_FIELD_BYTES),
                                                        description=_clip(v.description, MAX_DESCRIPTION_BYTES))
           for v in violations[:MAX_VIOLATIONS]]
    if len(violations) > MAX_VIOLATIONS:
        out.append(error_details_pb2.BadRequest.FieldViolation(
            field="", description=f"and {len(violations) - MAX_VIOLATIONS} more violations"))
    return out


def error_status(exc: BaseException, request_id: str = "") -> status_pb2.Status:
    """The google.rpc.Status for an exception (unknown ones become INTERNAL with a fixed message)."""
    if not isinstance(exc, KgverifyError):
        exc = KgverifyError(INTERNAL_MESSAGE)
    metadata = dict(exc.metadata)
    if request_id:
        metadata["request_id"] = request_id
    details = [_pack(error_details_pb2.ErrorInfo(reason=exc.reason, domain=ERROR_DOMAIN, metadata=metadata))]
    if isinstance(exc, InvalidArgumentError):
        details.append(_pack(error_details_pb2.BadRequest(field_violations=_violations(exc.violations))))
    if isinstance(exc, OverloadedError):
        seconds = max(0.0, exc.retry_after_s)
        details.append(_pack(error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(
            seconds=int(seconds), nanos=int((seconds % 1) * 1e9)))))
    return status_pb2.Status(code=getattr(code_pb2, exc.code), message=_clip(exc.message, MAX_MESSAGE_BYTES),
                             details=details)


def grpc_status(exc: BaseException, request_id: str = "") -> grpc.Status:
    return rpc_status.to_status(error_status(exc, request_id))


OK_STATUS = status_pb2.Status(code=code_pb2.OK, message="")
