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


def error_status(exc: BaseException, request_id: str = "") -> status_pb2.Status:
    """The google.rpc.Status for an exception (unknown ones become INTERNAL with a fixed message)."""
    if not isinstance(exc, KgverifyError):
        exc = KgverifyError(INTERNAL_MESSAGE)
    metadata = dict(exc.metadata)
    if request_id:
        metadata["request_id"] = request_id
    details = [_pack(error_details_pb2.ErrorInfo(reason=exc.reason, domain=ERROR_DOMAIN, metadata=metadata))]
    if isinstance(exc, InvalidArgumentError):
        details.append(_pack(error_details_pb2.BadRequest(field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
            for v in exc.violations
        ])))
    if isinstance(exc, OverloadedError):
        seconds = max(0.0, exc.retry_after_s)
        details.append(_pack(error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(
            seconds=int(seconds), nanos=int((seconds % 1) * 1e9)))))
    return status_pb2.Status(code=getattr(code_pb2, exc.code), message=exc.message, details=details)


def grpc_status(exc: BaseException, request_id: str = "") -> grpc.Status:
    return rpc_status.to_status(error_status(exc, request_id))


OK_STATUS = status_pb2.Status(code=code_pb2.OK, message="")
