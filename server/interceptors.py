"""The one interceptor of kgverify calls: request ids, readiness, load shedding, error mapping.

Health and reflection calls are never shed; they only get the same tolerant request parsing (undecodable bytes
are INVALID_ARGUMENT / UNDECODABLE_MESSAGE, not UNKNOWN with Python's exception text and a traceback in the log).
ClientGoneInterceptor, the outermost, writes stream responses itself so that a client that cancels while the server
waits to send is logged and counted as CANCELLED.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import itertools
import logging
import time

import grpc

from .admission import Admission
from .context import new_request_id, request_id_var
from .errors import grpc_status
from .health import INFO_GAIN
from .metrics import ended_code
from .pipeline.errors import InvalidArgumentError, KgverifyError

log = logging.getLogger("kgverify.rpc")
SERVICE_PREFIX = "/kgverify.v1."


def _service_of(method: str) -> str:
    return method.lstrip("/").split("/", 1)[0]


def _judge_free(method: str, request) -> str | None:
    """For a knowledge-service call that never reaches the judge, the service it needs instead ("" for none):
    SplitReasoning (the splitter only) and a ScoreChain that asks for InfoGain alone. None for every other call."""
    name = method.rsplit("/", 1)[-1]
    if name == "SplitReasoning":
        return ""
    if name == "ScoreChain":
        from kgverify.v1 import knowledge_service_pb2 as kpb

        if request.metrics and all(m == kpb.METRIC_INFO_GAIN for m in request.metrics):
            return INFO_GAIN
    return None


def _backends_asked(method: str, request) -> dict[str, str | None] | None:
    """The backends a scoring call names (kind -> name; None: the server's default), or None for other calls."""
    from .servicers.convert import ESTIMATORS, JUDGES, SPLITTERS

    name = method.rsplit("/", 1)[-1]
    if name in ("ScoreKnowledge", "ScoreChain"):
        options = request.options if name == "ScoreKnowledge" else request.knowledge_options
        asked = {"judge": JUDGES.get(options.judge)}
        if request.reasoning:  # pre-split steps make no splitter call (the LLM decomposer's backend may be down)
            asked["splitter"] = SPLITTERS.get(options.splitter)
        return asked
    if name == "ScoreInfoGain":
        return {"estimator": ESTIMATORS.get(request.options.estimator)}
    return None


SUMMARY_ENTRIES = 8  # entries of each repeated field formatted into a request summary


def _trimmed(source, target, chars: int) -> bool:
    """Fills `target` with `source` cut for a summary: every repeated field (nested ones too) to SUMMARY_ENTRIES
    entries, every string and bytes field to `chars` characters; True when a string was cut. Built field by field:
    formatting all of a request's million passages took seconds on the event loop to log its first 500 characters,
    and copying then formatting a whole 4 MB step (16 MB of escapes for control characters) took seconds too."""
    clipped = False

    def clip(value):
        nonlocal clipped
        if isinstance(value, (str, bytes)) and len(value) > chars:
            clipped = True
            return value[:chars]
        return value

    for field, value in source.ListFields():
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            entries = getattr(target, field.name)
            message_values = field.message_type.fields_by_name["value"].message_type is not None
            for key in itertools.islice(value, SUMMARY_ENTRIES):
                if message_values:
                    clipped |= _trimmed(value[key], entries[clip(key)], chars)
                else:
                    entries[clip(key)] = clip(value[key])
        elif field.is_repeated:
            entries = getattr(target, field.name)
            if field.message_type is not None:
                for entry in value[:SUMMARY_ENTRIES]:
                    clipped |= _trimmed(entry, entries.add(), chars)
            else:
                entries.extend(clip(entry) for entry in value[:SUMMARY_ENTRIES])
        elif field.message_type is not None:
            getattr(target, field.name).SetInParent()
            clipped |= _trimmed(value, getattr(target, field.name), chars)
        else:
            setattr(target, field.name, clip(value))
    return clipped


def request_summary(request, limit: int = 500) -> str:
    """The request as one line of protobuf text, truncated (logged only with log_request_text). Strings are cut to
    limit + 1 characters before formatting: their text is at least that long, so the first `limit` characters are
    those of the whole request's text; the length given is then a lower bound."""
    from google.protobuf import text_format

    summary = type(request)()
    clipped = _trimmed(request, summary, limit + 1)
    text = text_format.MessageToString(summary, as_one_line=True, as_utf8=True)
    if len(text) <= limit:
        return text
    return text[:limit] + (f"... (over {len(text)} chars)" if clipped else f"... ({len(text)} chars)")


async def _logged(requests, method: str):
    async for item in requests:
        if not isinstance(item, Undecodable) and log.isEnabledFor(logging.DEBUG):
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
        # No field: the violation is the whole message ("invalid request: the bytes are not a valid ...").
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


def size_check(limits):
    """The ServiceInterceptor's precheck: validation.check_sizes of a request message, for a ScoreChainRequest
    only on the parts (KI, InfoGain) it asks for."""
    from kgverify.v1 import knowledge_service_pb2 as kpb

    from .pipeline.validation import MAX_METRICS, check_sizes

    def check(message) -> None:
        parts = {}
        metrics = getattr(message, "metrics", None)
        if metrics and len(metrics) <= MAX_METRICS:  # no metrics named: both
            parts = {"knowledge": kpb.METRIC_KNOWLEDGE_INDEX in metrics, "info_gain": kpb.METRIC_INFO_GAIN in metrics}
        check_sizes(message, limits, **parts)

    return check


class Refused:
    """A stream item refused before conversion (fields over the limits: validation.check_sizes):
    the stream answers it with `error` under its own id, like any invalid item."""

    def __init__(self, item_id: str, error: KgverifyError):
        self.id = item_id
        self._error = error

    def error(self) -> KgverifyError:
        return self._error


async def _prechecked(requests, precheck):
    """Stream items whose chain fails `precheck` become Refused (the stream goes on)."""
    async for item in requests:
        if not isinstance(item, Undecodable):
            try:
                precheck(item.chain)
            except KgverifyError as exc:
                item = Refused(item.id, exc)
        yield item


async def _refused_unless(requests, refusal):
    """Stream items for which `refusal(chain)` gives an error become Refused with it (the stream goes on)."""
    async for item in requests:
        if not isinstance(item, (Undecodable, Refused)):
            error = refusal(item.chain)
            if error is not None:
                item = Refused(item.id, error)
        yield item


async def _checked(requests):
    """A request stream that ends the call with UNDECODABLE_MESSAGE at its first undecodable item (for streams
    without per-item statuses, such as reflection)."""
    async for item in requests:
        if isinstance(item, Undecodable):
            raise item.error()
        yield item


def _other_service(handler, method: str, metadata):
    """A health or reflection handler with the tolerant deserializer: an undecodable request ends the call with
    INVALID_ARGUMENT (UNDECODABLE_MESSAGE) and one log line. Health needs no token: without this, anyone could fill
    the log with gRPC's tracebacks. Handlers that are not async (none here) pass through as they are."""

    async def refuse(exc: KgverifyError, context) -> None:
        request_id_var.set(new_request_id(metadata))
        log.info("%s %s (%s)", method, exc.code, exc.reason)
        await context.abort_with_status(grpc_status(exc, request_id_var.get()))

    serializers = {"request_deserializer": tolerant(handler.request_deserializer),
                   "response_serializer": handler.response_serializer}

    def guarded(behavior):  # a coroutine handler: health Check, and Watch (gRPC's writer API)
        async def call(request, context):
            if isinstance(request, Undecodable):
                await refuse(request.error(), context)
            return await behavior(request, context)
        return call

    if handler.unary_unary is not None and inspect.iscoroutinefunction(handler.unary_unary):
        return grpc.unary_unary_rpc_method_handler(guarded(handler.unary_unary), **serializers)
    if handler.unary_stream is not None and inspect.iscoroutinefunction(handler.unary_stream):
        return grpc.unary_stream_rpc_method_handler(guarded(handler.unary_stream), **serializers)
    if handler.unary_stream is not None and inspect.isasyncgenfunction(handler.unary_stream):
        behavior = handler.unary_stream

        async def unary_stream(request, context):
            if isinstance(request, Undecodable):
                await refuse(request.error(), context)
            async for response in behavior(request, context):
                yield response

        return grpc.unary_stream_rpc_method_handler(unary_stream, **serializers)
    if handler.stream_stream is not None and inspect.isasyncgenfunction(handler.stream_stream):
        behavior = handler.stream_stream  # reflection

        async def stream(request_iterator, context):
            try:
                async for response in behavior(_checked(request_iterator), context):
                    yield response
            except InvalidArgumentError as exc:
                if exc.reason != "UNDECODABLE_MESSAGE":
                    raise
                await refuse(exc, context)

        return grpc.stream_stream_rpc_method_handler(stream, **serializers)
    return handler


def _write_failed(exc: Exception, context) -> bool:
    """Whether a failed write means the call is gone: gRPC could not send the message (ExecuteBatchError: the client
    cancelled, or the deadline passed, before the message left; the context may learn of it only later), or the
    context already knows the call ended. Other errors (a response that cannot be serialised) are real failures."""
    if type(exc).__name__ == "ExecuteBatchError":
        return True
    try:
        return bool(context.cancelled() or context.done())
    except Exception:
        return False


class ClientGoneInterceptor(grpc.aio.ServerInterceptor):
    """Outermost interceptor: writes the responses of bidi-streaming calls itself (gRPC's writer API).

    gRPC writes a response generator's items itself; when the client stops reading and then cancels, the pending
    write fails inside gRPC (ExecuteBatchError, logged as an ERROR traceback) and the generators are merely
    abandoned, so the interceptors below saw a stream that "ended OK". Here a failed write to a client that is
    gone is thrown into the generators as a cancellation instead: metrics count the call CANCELLED, the service
    interceptor logs it once as CANCELLED, and gRPC logs nothing above DEBUG."""

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        if handler is None or handler.stream_stream is None or not inspect.isasyncgenfunction(handler.stream_stream):
            return handler
        behavior = handler.stream_stream

        async def stream(request_iterator, context):
            responses = behavior(request_iterator, context)
            try:
                async for response in responses:
                    try:
                        await context.write(response)
                    except Exception as exc:
                        if not _write_failed(exc, context):
                            raise
                        try:
                            await responses.athrow(asyncio.CancelledError())
                        except (asyncio.CancelledError, StopAsyncIteration):
                            pass
                        raise asyncio.CancelledError() from None
            finally:
                await responses.aclose()

        return grpc.stream_stream_rpc_method_handler(stream, request_deserializer=handler.request_deserializer,
                                                     response_serializer=handler.response_serializer)


class ServiceInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, admission: Admission, ready, not_ready_error, log_request_text: bool = False,
                 stopping=lambda: False, waiting_for_backend=lambda service: False, precheck=None,
                 avoids_waited_backends=lambda service, asked: False):
        self._admission = admission
        # (service, {kind: name or None}) -> bool: the backends a call names are all up, although the service waits
        # for a default one (a ScoreKnowledge asking for the nli judge while the default vLLM judge is not up yet).
        self._avoids_waited_backends = avoids_waited_backends
        # request message -> None, or raises InvalidArgumentError: cheap checks (repeated fields' lengths) before the
        # servicer converts the message on the event loop (size_check)
        self._precheck = precheck
        # service name -> bool: loaded, only its backend (the judge) is not up yet. Calls that never reach the judge
        # (_judge_free) go through then: a vLLM judge down at startup does not stop SplitReasoning or InfoGain.
        self._waiting_for_backend = waiting_for_backend
        # () -> bool: is the server shutting down? Calls it cancels then end UNAVAILABLE for their clients.
        self._stopping = stopping
        self._ready = ready  # service name -> bool: has the service finished loading?
        self._not_ready_error = not_ready_error  # service name -> the error for a call it cannot take yet
        # Request texts may hold patient data: they reach the log only when the operator opts in.
        self._log_text = log_request_text

    def _refusal(self, service: str, method: str, request) -> KgverifyError | None:
        """The not-ready error for a call of a service that is not ready (None: it can take the call)."""
        if self._ready(service):
            return None
        if not self._waiting_for_backend(service):
            return self._not_ready_error(service)
        instead = _judge_free(method, request)
        if instead is not None:
            return self._not_ready_error(instead) if instead and not self._ready(instead) else None
        asked = _backends_asked(method, request)
        if asked is not None and self._avoids_waited_backends(service, asked):
            return None
        return self._not_ready_error(service)

    def _cancelled_code(self, context) -> str:
        code = ended_code(context, self._stopping())
        return "UNAVAILABLE (server shutdown)" if code == "UNAVAILABLE" else code

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        if handler is None:
            return handler
        method = details.method
        metadata = details.invocation_metadata
        if not method.startswith(SERVICE_PREFIX):
            return _other_service(handler, method, metadata)
        service = _service_of(method)
        if handler.unary_unary is not None:
            behavior = handler.unary_unary

            async def unary(request, context):
                request_id_var.set(new_request_id(metadata))
                started = time.perf_counter()
                if self._log_text and not isinstance(request, Undecodable) and log.isEnabledFor(logging.DEBUG):
                    log.debug("%s request: %s", method, request_summary(request))
                code = "OK"
                try:
                    if isinstance(request, Undecodable):
                        raise request.error()
                    refusal = self._refusal(service, method, request)
                    if refusal is not None:
                        raise refusal
                    if self._precheck is not None:
                        self._precheck(request)
                    with self._admission:
                        return await behavior(request, context)
                except KgverifyError as exc:
                    code = exc.code
                    await context.abort_with_status(grpc_status(exc, request_id_var.get()))
                except (asyncio.CancelledError, grpc.aio.AbortError):
                    code = self._cancelled_code(context)
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
                if self._precheck is not None:
                    request_iterator = _prechecked(request_iterator, self._precheck)
                items, code = 0, "OK"
                try:
                    if not self._ready(service):
                        if not (self._waiting_for_backend(service) and method.endswith("/StreamScoreChains")):
                            raise self._not_ready_error(service)
                        # loaded, only its backend (the judge) down: items that never reach it are scored as a
                        # ScoreChain of theirs would be, the others get the not-ready error as their own status
                        request_iterator = _refused_unless(request_iterator, functools.partial(
                            self._refusal, service, SERVICE_PREFIX + "KnowledgeService/ScoreChain"))
                    async for response in behavior(request_iterator, context):
                        items += 1
                        yield response
                except KgverifyError as exc:
                    code = exc.code
                    await context.abort_with_status(grpc_status(exc, request_id_var.get()))
                except (asyncio.CancelledError, grpc.aio.AbortError, GeneratorExit):
                    # GeneratorExit: the call ended while this stream still had results to give (a client that
                    # went away while a result waited to be sent): a cancellation, not a stream that ended OK.
                    code = self._cancelled_code(context)
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
