"""The server's log: libraries' routine INFO lines are filtered, their warnings and kgverify's own lines kept."""

import logging

import pytest

from server.context import configure_logging


@pytest.fixture
def records(monkeypatch):
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    # Loggers' own levels are process-wide (the embedded server quiets "kgverify"): start from NOTSET here.
    named = {name: logging.getLogger(name).level for name in ("kgverify", "httpx", "httpcore", "bm25s", "faiss")}
    for name in named:
        logging.getLogger(name).setLevel(logging.NOTSET)
    configure_logging("INFO")
    handler = root.handlers[0]
    seen = []
    monkeypatch.setattr(handler, "emit", seen.append)
    yield seen
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, own in named.items():
        logging.getLogger(name).setLevel(own)


def test_routine_library_lines_are_dropped_and_everything_else_kept(records):
    logging.getLogger("httpx").info('HTTP Request: GET http://vllm:8000/health "HTTP/1.1 200 OK"')
    logging.getLogger("httpcore.connection").info("connect_tcp.started")
    logging.getLogger("faiss.loader").info("Could not load library with AVX512 support")
    logging.getLogger("bm25s").info("Building index")
    logging.getLogger("httpx").warning("a library warning")
    logging.getLogger("kgverify.server").info("kgverify listening")
    assert [r.getMessage() for r in records] == ["a library warning", "kgverify listening"]


def test_at_debug_the_library_lines_show(records):
    logging.getLogger().setLevel(logging.DEBUG)
    logging.getLogger("httpx").info("HTTP Request: GET /health")
    assert [r.getMessage() for r in records] == ["HTTP Request: GET /health"]
