"""`kgverify demo` names its knowledge base once: its report (stdout) has the KB line, and the embedded verifier
printed its own note about the bundled KB on stderr as well."""

from __future__ import annotations

from contextlib import asynccontextmanager

from client import demo, embedded
from client.cli import main


def test_the_demo_does_not_ask_the_embedded_verifier_for_its_kb_note(monkeypatch):
    asked = {}

    @asynccontextmanager
    async def fake_embedded_server(settings=None, load_timeout_s=900.0, required=None, uses_kb=True):
        asked["uses_kb"] = uses_kb
        yield "unix:///nowhere"

    async def fake_run_demo(address, chains, **kwargs):
        asked["address"] = address
        return {"matched": 0, "total": 0}

    monkeypatch.setattr(embedded, "embedded_server", fake_embedded_server)
    monkeypatch.setattr(demo, "run_demo", fake_run_demo)
    assert main(["demo"]) == 0
    assert asked == {"uses_kb": False, "address": "unix:///nowhere"}
