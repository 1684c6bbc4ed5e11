"""The one interceptor of kgverify calls: request ids, readiness, load shedding, error mapping.

Health and reflection calls pass straight through: they are never shed.
"""

from __future__ import annotations

import asyncio
import logging
import time

import grpc

from .admission import Admission
from .context import new_request_id, request_id_var
from .errors import grpc_status
from .pipeline.errors import InvalidArgumentError, KgverifyError

log = logging.getLogger("kgverify.rpc")
SERVICE_PREFIX = "/kgverify.v1."


def _service_of(method: str) -> str:
    return method.lstrip("/").split("/", 1)[0]


def request_summary(request, limit: int = 500) -> str:
    """The request as one line of protobuf text, truncated (logged only with log_request_text)."""
    from google.protobuf import text_format

    text = text_format.MessageToString(request, as_one_line=True, as_utf8=True)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} chars)"


async def _logged(requests, method: str):
    async for item in requests:
        if not isinstance(item, Undecodable):
            log.debug("%s item: %s", method, request_summary(item))
        yield item


class Undecodable:
    """A request message (or stream item) that did not parse: invalid protobuf, or a string that is not UTF-8.

    gRPC would raise inside its own deserializer and answer UNKNOWN with the Python exception's text, and end a
    stream at the bad item; the servicers answer INVALID_ARGUMENT for it instead (a stream item's own status)."""

    def __init__(self, message_type: str, error: Exception):
        self.message_type = message_type
        self.error_type = type(error).__name__

    def error(self) -> InvalidArgumentError:
        return InvalidArgumentError.single(
            "", f"the bytes are not a valid {self.message_type} message ({self.error_type}: invalid protobuf "
                "encoding, or a string field that is not UTF-8)", reason="UNDECODABLE_MESSAGE")


def tolerant(deserializer):
    """The handler's request deserializer, returning Undecodable instead of raising."""
    if deserializer is None:
        return None
    message_type = getattr(getattr(deserializer, "__self__", None), "DESCRIPTOR", None)
    name = message_type.full_name if message_type is not None else "request"

    def parse(data: bytes):
        try:
            return deserializer(data)
        except Exception as exc:  # google.protobuf.message.DecodeError, UnicodeDecodeError, ...
            return Undecodable(name, exc)

    return parse


class ServiceInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, admission: Admission, ready, not_ready_error, log_request_text: bool = False,
                 stopping=lambda: False):
        self._admission = admission
        # () -> bool: is the server shutting down? Calls it cancels then end UNAVAILABLE for their clients.
        self._cancelled_code = lambda: "UNAVAILABLE (server shutdown)" if stopping() else "CANCELLED"
        self._ready = ready  # service name -> bool: has the service finished loading?
        self._not_ready_error = not_ready_error  # service name -> the error for a call it cannot take yet
        # Request texts may hold patient data: they reach the log only when the operator opts in.
        self._log_text = log_request_text

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        if handler is None or not details.method.startswith(SERVICE_PREFIX):
            return handler
        method = details.method
        service = _service_of(method)
        metadata = details.invocation_metadata
        if handler.unary_unary is not None:
            behavior = handler.unary_unary

            async def unary(request, context):
                request_id_var.set(new_request_id(metadata))
                started = time.perf_counter()
                if self._log_text and not isinstance(request, Undecodable):
                    log.debug("%s request: %s", method, request_summary(request))
                code = "OK"
                try:
                    if isinstance(request, Undecodable):
                        raise request.error()
                    if not self._ready(service):
                        raise self._not_ready_error(service)
                    with self._admission:
                        return await behavior(request, context)
                except KgverifyError as exc:
                    code = exc.code
                    await context.abort_with_status(grpc_status(exc, request_id_var.get()))
                except (asyncio.CancelledError, grpc.aio.AbortError):
                    code = self._cancelled_code()
                    raise
                except Exception as exc:
                    code = "INTERNAL"
                    log.exception("unexpected error in %s", method)
                    await context.abort_with_status(grpc_status(exc, request_id_var.get()))
                finally:
                    log.info("%s %s %.1f ms", method, code, (time.perf_counter() - started) * 1e3)

            return grpc.unary_unary_rpc_method_handler(
                unary, request_deserializer=tolerant(handler.request_deserializer),
                response_serializer=handler.response_serializer)
        if handler.stream_stream is not None:
            behavior = handler.stream_stream

            async def stream(request_iterator, context):
                request_id_var.set(new_request_id(metadata))
                started = time.perf_counter()
                if self._log_text:
                    request_iterator = _logged(request_iterator, method)
                items, code = 0, "OK"
                try:
                    if not self._ready(service):
                        raise self._not_ready_error(service)
                    async for response in behavior(request_iterator, context):
                        items += 1
                        yield response
                except KgverifyError as exc:
                    code = exc.code
                    await context.abort_with_status(grpc_status(exc, request_id_var.get()))
                except (asyncio.CancelledError, grpc.aio.AbortError):
                    code = self._cancelled_code()
                    raise
                except Exception as exc:
                    code = "INTERNAL"
                    log.exception("unexpected error in %s", method)
                    await context.abort_with_status(grpc_status(exc, request_id_var.get()))
                finally:
                    log.info("%s %s: stream ended after %d items, %.1f s", method, code, items,
                             time.perf_counter() - started)

            return grpc.stream_stream_rpc_method_handler(
                stream, request_deserializer=tolerant(handler.request_deserializer),
                response_serializer=handler.response_serializer)
        return handler
