"""Per-call context: request ids for logs, and the RPC deadline as a domain Deadline."""

from __future__ import annotations

import contextvars
import logging
import uuid

from .pipeline.deadline import Deadline

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


def new_request_id(metadata) -> str:
    for key, value in metadata or ():
        if key == "x-request-id" and isinstance(value, str) and 0 < len(value) <= 64 and value.isprintable():
            return value
    return uuid.uuid4().hex[:16]


def deadline_of(context) -> Deadline:
    remaining = context.time_remaining()
    return Deadline.after(remaining)


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
