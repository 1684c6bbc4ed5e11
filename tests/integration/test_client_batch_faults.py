"""Row-level faults in `kgverify batch` against a real server: each one becomes that row's record (or is retried
until scored) and never stops the rest of the run."""

import asyncio
import json

import pytest

from client.cli import main
from server.app import start_server
from server.backends import registry
from server.pipeline.errors import BackendUnavailableError
from tests.conftest import make_settings
from tests.fakes.backends import FakeEstimator, FakeJudge

FACT = "Protamine sulfate neutralizes heparin."
TRANSIENT = "TRANSIENT"  # a claim with this marker: the judge's first call for it fails (backend unavailable)


class FailsOnce(FakeJudge):
    def __init__(self):
        super().__init__()
        self.failed: set[str] = set()

    async def judge(self, items, deadline):
        for item in items:
            if TRANSIENT in item.claim and item.claim not in self.failed:
                self.failed.add(item.claim)
                raise BackendUnavailableError("injected transient failure")
        return await super().judge(items, deadline)


@pytest.fixture(scope="module")
async def server(cache_dir, demo_kb_path):
    patch = pytest.MonkeyPatch()
    judge = FailsOnce()
    patch.setitem(registry.JUDGES, "nli", lambda ctx: judge)
    patch.setitem(registry.ESTIMATORS, "nli", lambda ctx: FakeEstimator())
    started = await start_server(make_settings(cache_dir), ["127.0.0.1:0"])
    try:
        await started.wait_ready(300)
        yield started
    finally:
        await started.stop(0)
        patch.undo()


def _row(i, *steps, **fields):
    return {"id": f"r{i}", "question": "Which drug reverses heparin?", "steps": list(steps or [FACT]),
            "answer": "Protamine", **fields}


def _write(path, rows):
    path.write_bytes(b"".join(r if isinstance(r, bytes) else (json.dumps(r) + "\n").encode() for r in rows))


def _records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


async def _batch(server, source, out, *args):
    return await asyncio.to_thread(main, ["batch", "--no-progress", "--input", str(source), "--output", str(out),
                                          "--server", server.addresses[0], *map(str, args)])


async def test_a_row_that_fails_once_is_retried_and_scored(server, tmp_path):
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    _write(source, [_row(0), _row(1), _row(2, f"{TRANSIENT}: {FACT}"), _row(3)])
    assert await _batch(server, source, out, "--concurrency", "1") == 0
    statuses = {r["id"]: r["status"] for r in _records(out)}
    assert statuses == {f"r{i}": "ok" for i in range(4)}  # r2: UNAVAILABLE once, then scored on the same stream
