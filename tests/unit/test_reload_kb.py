"""A KB reload keeps model work off the event loop: the embedder it needs may still be loading."""

import asyncio
import threading
import types

from server.app import Runtime
from server.config import Settings


def test_a_reload_gets_its_embedder_off_the_event_loop(monkeypatch):
    runtime = Runtime(Settings())
    threads = {}

    def embedder():  # the first use loads the model (seconds), or waits for the startup load building it
        threads["embedder"] = threading.current_thread()
        return "embedder"

    def load(embedder):
        threads["load"] = threading.current_thread()
        runtime.kb.current = types.SimpleNamespace(info=types.SimpleNamespace(kb_id="kb-2"))

    async def published():
        return None

    monkeypatch.setattr(runtime.ctx, "embedder", embedder)
    monkeypatch.setattr(runtime.kb, "load", load)
    monkeypatch.setattr(runtime, "_publish_kb_health", published)
    try:
        assert asyncio.run(runtime.reload_kb()) == ("", "kb-2")
    finally:
        runtime.executor.shutdown()
    main = threading.main_thread()
    assert threads["load"] is not main and threads["embedder"] is not main
