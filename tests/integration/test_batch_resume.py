"""A `kgverify batch` process killed with SIGKILL midway resumes into exactly one well-formed record per row."""

import asyncio
import json
import os
import signal
import subprocess
import sys

import pytest

from server.app import start_server
from server.backends import registry
from tests.conftest import REPO, make_settings, takes_ctrl_c
from tests.fakes.backends import FakeEstimator, FakeJudge

ROWS = 200
FACTS = ["Protamine sulfate neutralizes heparin.", "Vitamin K reverses the effect of warfarin.",
         "Metformin is a first-line drug for type 2 diabetes.", "Aspirin irreversibly inhibits cyclooxygenase.",
         "Insulin lowers blood glucose.", "Naloxone reverses opioid overdose."]


@pytest.fixture
async def fast_server(cache_dir, demo_kb_path, monkeypatch):
    """A real server (demo KB, real retrieval) whose judge and InfoGain estimator answer at once."""
    monkeypatch.setitem(registry.JUDGES, "nli", lambda ctx: FakeJudge())
    monkeypatch.setitem(registry.ESTIMATORS, "nli", lambda ctx: FakeEstimator())
    server = await start_server(make_settings(cache_dir), ["127.0.0.1:0"])
    await server.wait_ready(300)
    yield server
    await server.stop(0)


def _rows():
    for i in range(ROWS):
        fact = FACTS[i % len(FACTS)]
        yield {"id": f"row-{i:03d}", "question": f"Question {i}: which statement holds?", "group": f"g{i % 2}",
               "question_id": f"q{i // 2}", "steps": [f"Consider case {i}.", fact, "So the answer is A."],
               "answer": "A"}


def _batch_process(args, env):
    return subprocess.Popen([sys.executable, "-m", "client.cli", "batch", "--no-progress", *map(str, args)],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=takes_ctrl_c)


def _complete_lines(path):
    if not path.exists():
        return 0
    return path.read_bytes().count(b"\n")


def _well_formed(record):
    assert set(record) >= {"id", "status", "knowledge_index", "info_gain", "steps", "provenance", "group"}
    assert record["status"] in ("ok", "partial"), record["status"]
    assert 0.0 <= record["knowledge_index_paper"] <= 1.0
    assert isinstance(record["info_gain"], float) and len(record["steps"]) == 3
    assert all(isinstance(s["gain"], float) and s["verdict"] for s in record["steps"])


async def test_batch_killed_midway_resumes_to_exactly_one_record_per_row(fast_server, tmp_path):
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in _rows()))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "proto")])}
    args = ("--input", source, "--output", out, "--server", fast_server.addresses[0], "--concurrency", "8")

    first = _batch_process(args, env)
    try:
        while _complete_lines(out) < 30 and first.poll() is None:
            await asyncio.sleep(0.01)  # the server under test runs on this event loop
        assert first.poll() is None, "the batch finished before it could be killed: " + first.stderr.read().decode()
        first.send_signal(signal.SIGKILL)
        assert await asyncio.to_thread(first.wait, 30) == -signal.SIGKILL
    finally:
        if first.poll() is None:
            first.kill()
    written_before = _complete_lines(out)
    assert 30 <= written_before < ROWS

    second = _batch_process(args, env)
    _, stderr = await asyncio.to_thread(second.communicate, timeout=300)
    assert second.returncode == 0, stderr.decode()
    summary = json.loads(stderr.decode().strip().splitlines()[-1])
    assert summary["skipped_already_done"] + summary["written"] == ROWS
    assert summary["skipped_already_done"] >= written_before

    data = out.read_bytes()
    assert data.endswith(b"\n")
    records = [json.loads(line) for line in data.decode().splitlines()]
    assert len(records) == ROWS
    assert sorted(r["id"] for r in records) == [f"row-{i:03d}" for i in range(ROWS)]
    for record in records:
        _well_formed(record)


async def test_retry_errors_rescores_failed_rows_and_their_new_record_replaces_the_error(fast_server, cache_dir,
                                                                                       tmp_path):
    from client.batch import BatchOptions, run_batch
    from client.batch_io import journal_records

    no_kb = await start_server(make_settings(cache_dir, kb={"enabled": False}), ["127.0.0.1:0"])
    try:
        await no_kb.wait_ready(300)
        source, out, export = tmp_path / "in.jsonl", tmp_path / "scores.jsonl", tmp_path / "scores.csv"
        rows = list(_rows())[:6]
        for row in rows[:2]:
            row["context"] = [FACTS[0]]  # judged on their own passages: no KB needed
        source.write_text("".join(json.dumps(r) + "\n" for r in rows))

        def options(server, **extra):
            return BatchOptions(input=source, output=out, servers=[server.addresses[0]], progress=False,
                                metrics=("ki",), export=[export], **extra)

        first = await run_batch(options(no_kb))
        assert first.statuses == {"ok": 2, "FAILED_PRECONDITION": 4}
        again = await run_batch(options(fast_server))  # a plain re-run resumes: errors count as done
        assert again.skipped == 6 and again.written == 0
        retried = await run_batch(options(fast_server, retry_errors=True))
        assert retried.skipped == 2 and retried.retried == 4 and retried.statuses == {"ok": 4}
    finally:
        await no_kb.stop(0)
    assert out.read_bytes().count(b"\n") == 10  # the journal keeps every record ...
    latest = list(journal_records(out))  # ... readers see one per row, the last
    assert sorted(r["id"] for r in latest) == [r["id"] for r in rows] and all(r["status"] == "ok" for r in latest)
    assert export.read_text().count("\n") == 1 + len(rows)
    assert (await run_batch(options(fast_server, retry_errors=True))).skipped == 6  # nothing left to retry
