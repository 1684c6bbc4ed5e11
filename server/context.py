"""Per-call context: request ids for logs, and the RPC deadline as a domain Deadline."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import uuid

from .pipeline.deadline import Deadline
from .pipeline.errors import BackendTimeoutError

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


def new_request_id(metadata) -> str:
    for key, value in metadata or ():
        if key == "x-request-id" and isinstance(value, str) and 0 < len(value) <= 64 and value.isprintable():
            return value
    return uuid.uuid4().hex[:16]


MAX_CALL_SETTING = "KGV_SERVER__MAX_CALL_S"


def deadline_of(context, max_call_s: float | None = None) -> Deadline:
    """The call's deadline: the client's, or `max_call_s` from now when the client set none or a later one (a call
    without a deadline would otherwise run as long as its work takes: a request at the limits holds hundreds of
    thousands of judge pairs)."""
    remaining = context.time_remaining()
    if max_call_s is not None and (remaining is None or remaining > max_call_s):
        return server_deadline(max_call_s)
    return Deadline.after(remaining)


def server_deadline(max_call_s: float) -> Deadline:
    return Deadline.after(max_call_s, f"{MAX_CALL_SETTING}={_seconds(max_call_s)}")


def _seconds(value: float) -> str:
    """The setting's value as it was given: 600.0 -> "600", 0.5 -> "0.5", 1234567.0 -> "1234567" (`:g` wrote
    "1.23457e+06", a value the setting does not have)."""
    if float(value).is_integer() and abs(value) < 1e16:
        return str(int(value))
    return repr(float(value))


@contextlib.asynccontextmanager
async def within(deadline: Deadline):
    """Runs the body under the server's own limit when that set the deadline: cancelled at it like gRPC cancels a
    call at the client's deadline (backends that check the deadline stop sooner), and DEADLINE_EXCEEDED naming
    the setting either way. A client's own deadline is left to gRPC."""
    if deadline.limit is None:
        yield
        return
    seconds = deadline.limit.split("=")[1]
    # Said to a client that set no deadline and to one whose deadline is later than the limit alike: a deadline of
    # the client's own cannot let the call run longer (one later than the limit is cut at it, as here), so the
    # remedies are a shorter request or a higher setting.
    why = (f"the server stops a call after {seconds} s ({deadline.limit}) when its client sets no deadline or a "
           "later one (a stream item that long after it starts): send a shorter request, or ask the operator to "
           "raise the setting")
    limit = asyncio.timeout(deadline.remaining())
    try:
        async with limit:
            yield
    except TimeoutError:
        if not limit.expired():  # a TimeoutError of the body's own
            raise
        raise BackendTimeoutError(f"not finished in time: {why}") from None
    except BackendTimeoutError as exc:
        if not deadline.expired():
            raise
        raise BackendTimeoutError(f"{exc.message}: {why}", reason=exc.reason, metadata=exc.metadata) from None


class RequestIdFilter(logging.Filter):
    """Adds %(request_id)s to every log record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler()
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Libraries' own noise: bm25s sets its logger to DEBUG whenever it is imported (so a level set here would
    # not last), faiss says at INFO that it fell back from its AVX512 build (expected; reads like an error), and
    # httpx logs every HTTP request at INFO (the vLLM health checks alone: 4 lines per interval, all day). Their
    # warnings and errors still show; at DEBUG everything does. kgverify logs vLLM trouble itself.
    handler.addFilter(lambda record: record.levelno >= logging.WARNING or root.level <= logging.DEBUG
                      or not record.name.startswith(("bm25s", "faiss.loader", "httpx", "httpcore")))
