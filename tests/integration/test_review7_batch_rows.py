"""A row refused for its content (a field of the wrong type, found by the client; an empty chain, found by the
server) names its line in the record's message, as every other error of a row's content does."""

import asyncio
import json

import pytest

from client.cli import main
from tests.integration.test_batch_resume import fast_server  # noqa: F401  (a real server with instant models)


@pytest.mark.parametrize("suffix", ["jsonl", "csv"])
async def test_a_row_refused_for_its_content_names_its_line_or_row(fast_server, tmp_path, suffix):  # noqa: F811
    rows = [{"id": "good", "question": "q", "reasoning": "Protamine sulfate neutralizes heparin.", "answer": "B"},
            {"id": "empty", "question": "q", "answer": "B"},  # refused by the server: no reasoning
            {"id": "typed", "question": "q", "reasoning": "x", "answer": "B", "choices": "A or B"}]  # by the client
    source, out = tmp_path / f"in.{suffix}", tmp_path / "out.jsonl"
    if suffix == "jsonl":
        source.write_text("".join(json.dumps(r) + "\n" for r in rows))
        where = {"empty": "line 2", "typed": "line 3"}
    else:  # (a CSV list cell holds JSON: a JSON string is not a list)
        source.write_text('id,question,reasoning,answer,choices\ngood,q,Protamine sulfate neutralizes heparin.,B,\n'
                          'empty,q,,B,\ntyped,q,x,B,"""A or B"""\n')
        where = {"empty": "row 2", "typed": "row 3"}
    args = ["batch", "--no-progress", "--input", source, "--output", out, "--server", fast_server.addresses[0]]
    assert await asyncio.to_thread(main, list(map(str, args))) == 0
    records = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert records["good"]["status"] == "ok"
    empty, typed = records["empty"]["status"], records["typed"]["status"]
    assert empty["message"].startswith(f"{where['empty']}: invalid request: reasoning: the chain is empty"), empty
    assert empty["code"] == "INVALID_ARGUMENT"
    if suffix == "jsonl":
        assert typed["message"] == (f"{where['typed']}: invalid request: choices: must be a list of strings or "
                                    "whole numbers"), typed
    else:
        assert typed["message"] == f"{where['typed']}: column 'choices' must hold a JSON list", typed
