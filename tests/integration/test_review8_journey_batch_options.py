"""A batch option the server refuses (one every row shares: --paper with the nli estimator, a --top-k over the
server's limit) stops the run at once with exit status 2 and journals no row: before, every row got an
INVALID_ARGUMENT record, the run exited 0, and the corrected command skipped every row as done."""

import asyncio
import json

import pytest

from client.cli import main
from tests.integration.test_batch_resume import fast_server  # noqa: F401  (a real server with instant models)


def _rows(n=6):
    return "".join(json.dumps({"id": f"r{i}", "question": "Which drug reverses heparin?",
                               "reasoning": "Protamine sulfate neutralizes heparin.", "answer": "Protamine"}) + "\n"
                   for i in range(n))


@pytest.mark.parametrize("option, flag", [(["--paper"], "--paper"), (["--top-k", "51"], "--top-k")])
async def test_a_refused_run_option_stops_the_run_and_journals_nothing(fast_server, tmp_path, capfd,  # noqa: F811
                                                                       option, flag):
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_text(_rows())
    args = ["batch", "--no-progress", "--input", source, "--output", out, "--server", fast_server.addresses[0]]
    assert await asyncio.to_thread(main, list(map(str, [*args, *option]))) == 2
    err = capfd.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"batch failed: stopped: the server refuses the run's {flag}, so every row would fail"), err
    assert "change the option and run the same command again" in err
    assert not out.exists() or not out.read_text().strip()
    # the corrected command scores every row (none was journaled as done)
    assert await asyncio.to_thread(main, list(map(str, args))) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["id"] for r in records) == [f"r{i}" for i in range(6)]
    assert all(r["status"] in ("ok", "partial") for r in records)


async def test_a_row_refused_for_its_own_fields_still_gets_its_record(fast_server, tmp_path):  # noqa: F811
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_text(_rows(2) + json.dumps({"id": "empty", "question": "q", "answer": "B"}) + "\n")
    args = ["batch", "--no-progress", "--input", source, "--output", out, "--server", fast_server.addresses[0]]
    assert await asyncio.to_thread(main, list(map(str, args))) == 0
    records = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert records["empty"]["status"]["code"] == "INVALID_ARGUMENT" and len(records) == 3
