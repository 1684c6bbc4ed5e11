"""Batch runs that lost or refused work:

- with --keep-order, the records finished but held for an earlier row were dropped when the run was interrupted or
  failed (paid again on resume);
- a server without a KB: the note said the run goes on for the rows with context, then the first 20 rows' announced
  KB_NOT_LOADED stopped it before those rows were sent;
- rows with no question failed whole (KI included), with no word before the run;
- a journal whose last record lacks only its newline had that record cut off and scored again;
- `--output scores.jsonl.gz` wrote plain JSONL under a .gz name; a rerun did not say how many of the records it
  keeps are errors.
"""

import asyncio
import json
from pathlib import Path

from client import batch
from client.cli import main
from client.errors import VerifierError
from tests.integration.test_batch_errors import no_kb_server  # noqa: F401  (a real server without a KB)
from tests.integration.test_batch_resume import fast_server  # noqa: F401  (a real server with instant models)

FACT = "Protamine sulfate neutralizes heparin."


def _records(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


async def _batch(*args):
    return await asyncio.to_thread(main, ["batch", "--no-progress", *map(str, args)])


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# ---- 5. --keep-order keeps what finished ------------------------------------------------------------------------

class HoldsTheFirstRow:
    """A server that never answers row 0 and answers the others at once; then, if asked, breaks the stream."""

    target = "fake:1"

    def __init__(self, total, then_break=False):
        self.total, self.then_break, self.answered = total, then_break, asyncio.Event()

    async def stream_chains(self, items):
        from client.types import ChainScore

        score = ChainScore(steps=(), chain_text="", status="ok", knowledge_index=0.5)
        answered = 0
        async for send_id, position in items:
            if position == 0:
                continue  # held for ever
            answered += 1
            yield send_id, score
            if answered == self.total - 1:
                self.answered.set()
                if self.then_break:
                    raise VerifierError("UNAVAILABLE", "UNAVAILABLE", "the server went away")


def _keep_order_run(tmp_path, then_break):
    total = 6
    opts = batch.BatchOptions(input=Path("in.jsonl"), output=tmp_path / "out.jsonl", concurrency=4,
                              keep_order=True, progress=False, stream_failures=1)
    journal = batch.Journal(opts.output)
    summary = batch.BatchSummary()
    writer = batch._Writer(journal, summary, True)
    rows = ((i, batch.Item(position=i, id=f"c{i}", request=i, extra={})) for i in range(total))
    server = HoldsTheFirstRow(total, then_break)

    async def run():
        scheduler = batch._Scheduler(opts, batch._items_to_send(rows, writer, [server]), writer, total)
        task = asyncio.ensure_future(scheduler.run([server]))
        await asyncio.wait_for(server.answered.wait(), 20)
        if not then_break:
            await asyncio.sleep(0.05)
            task.cancel()
        try:
            await asyncio.wait_for(task, 20)
        except (asyncio.CancelledError, batch.BatchError) as exc:
            return exc
        return None

    try:
        ended = asyncio.run(run())
    finally:
        journal.close()
    return ended, summary, [r["id"] for r in _records(opts.output)]


def test_keep_order_writes_the_finished_records_it_holds_when_the_run_is_interrupted(tmp_path):
    ended, summary, ids = _keep_order_run(tmp_path, then_break=False)
    assert isinstance(ended, asyncio.CancelledError), ended
    assert ids == ["c1", "c2", "c3", "c4", "c5"] and summary.written == 5  # (in input order, c0 missing)


def test_keep_order_writes_the_finished_records_it_holds_when_the_run_fails(tmp_path):
    ended, summary, ids = _keep_order_run(tmp_path, then_break=True)
    assert isinstance(ended, batch.BatchError), ended
    assert "every server failed" in str(ended) and "5 rows written to" in str(ended), ended
    assert ids == ["c1", "c2", "c3", "c4", "c5"] and summary.written == 5


# ---- 6. a server without a KB, some rows with context ----------------------------------------------------------

def _rows(n, **fields):
    return [{"id": f"r{i:03d}", "question": f"Question {i}: which drug reverses heparin?",
             "steps": [f"Consider case {i}.", FACT], "answer": "Protamine", **fields} for i in range(n)]


async def test_announced_kb_not_loaded_does_not_stop_a_run_whose_later_rows_have_context(  # noqa: F811
        no_kb_server, tmp_path, capsys):
    rows = [*_rows(22), *[{**row, "id": f"c{i}", "context": [FACT]} for i, row in enumerate(_rows(8))]]
    source, out = _write(tmp_path / "in.jsonl", rows), tmp_path / "out.jsonl"
    code = await _batch("--input", source, "--output", out, "--server", no_kb_server.addresses[0],
                        "--concurrency", 1)
    err = capsys.readouterr().err
    assert code == 0, err
    assert "the 22 of 30 rows without context passages will get KB_NOT_LOADED" in err
    statuses = {r["id"]: r["status"] for r in _records(out)}
    assert len(statuses) == 30
    assert all(statuses[f"c{i}"] == "ok" for i in range(8)), statuses
    assert all(statuses[f"r{i:03d}"]["reason"] == "KB_NOT_LOADED" for i in range(22))


def test_the_tripwire_leaves_out_announced_reasons_and_still_fires_on_others():
    kb = VerifierError("FAILED_PRECONDITION", "KB_NOT_LOADED", "no KB")
    other = VerifierError("FAILED_PRECONDITION", "BACKEND_NOT_CONFIGURED", "no judge")
    wire = batch._Tripwire(3, frozenset({"KB_NOT_LOADED"}))
    assert [wire.observe(kb) for _ in range(10)] == [None] * 10
    assert [wire.observe(other) for _ in range(3)] == [None, None, other]
    plain = batch._Tripwire(3)
    assert [plain.observe(kb) for _ in range(3)] == [None, None, kb]


# ---- 3. rows without a question ---------------------------------------------------------------------------------

async def test_rows_without_a_question_get_ki_and_the_run_says_so_up_front(fast_server, tmp_path,  # noqa: F811
                                                                           capsys):
    rows = [{"id": f"p{i}", "problem": "Which drug reverses heparin?", "steps": [FACT], "answer": "Protamine"}
            for i in range(2)]
    source, out = _write(tmp_path / "in.jsonl", rows), tmp_path / "out.jsonl"
    code = await _batch("--input", source, "--output", out, "--server", fast_server.addresses[0])
    err = capsys.readouterr().err
    assert code == 0, err
    assert (f"note: none of the 2 rows to score in {source} has a 'question' (its first row's fields: id, problem, "
            "steps, answer): InfoGain needs it, so they get KI only") in err, err
    assert json.loads(err.strip().splitlines()[-1])["ki_only_no_question"] == 2  # the run's summary counts them
    for record in _records(out):
        assert record["status"] == "ok", record
        assert record["knowledge_index"] is not None and record["info_gain"] is None
        assert record["info_gain_null_reason"] == batch.NO_QUESTION


async def test_a_row_without_a_question_among_others_gets_ki_without_a_note(fast_server, tmp_path,  # noqa: F811
                                                                            capsys):
    rows = [{"id": "asked", "question": "Which drug reverses heparin?", "steps": [FACT], "answer": "A",
             "choices": ["Protamine", "Vitamin K\n"]},
            {"id": "blank", "question": " ", "steps": [FACT], "answer": "Protamine"}]
    source, out = _write(tmp_path / "in.jsonl", rows), tmp_path / "out.jsonl"
    assert await _batch("--input", source, "--output", out, "--server", fast_server.addresses[0]) == 0
    assert "has a 'question'" not in capsys.readouterr().err
    records = {r["id"]: r for r in _records(out)}
    assert records["asked"]["status"] == "ok" and records["asked"]["info_gain"] is not None, records["asked"]
    assert records["blank"]["status"] == "ok" and records["blank"]["info_gain_null_reason"] == batch.NO_QUESTION


def test_infogain_alone_on_rows_without_a_question_stops_before_sending(tmp_path, capsys):
    source = _write(tmp_path / "in.jsonl", [{"id": "p", "problem": "q", "reasoning": FACT, "answer": "A"}])
    out = tmp_path / "out.jsonl"
    assert main(["batch", "--no-progress", "--input", str(source), "--output", str(out), "--metrics",
                 "infogain", "--server", "127.0.0.1:1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"batch failed: none of the 1 rows to score in {source} has a 'question' (its first "
                          "row's fields: id, problem, reasoning, answer), and InfoGain needs it"), err
    assert not out.exists()


# ---- 7. a last record without its newline ----------------------------------------------------------------------

def test_a_last_record_without_its_newline_is_kept_and_ended_on_resume(tmp_path):
    path = tmp_path / "out.jsonl"
    first = json.dumps({"id": "a", "status": "ok"}) + "\n"
    last = json.dumps({"id": "b", "status": {"code": "INTERNAL", "reason": "X", "message": "m"}})
    path.write_text(first + last)
    journal = batch.Journal(path)
    try:
        assert journal.done == {"a"} and journal.failed == {"b"}
        journal.write({"id": "c", "status": "ok"})
    finally:
        journal.close()
    assert path.read_text() == first + last + "\n" + json.dumps({"id": "c", "status": "ok"}) + "\n"


def test_a_torn_last_line_is_still_cut_off(tmp_path):
    path = tmp_path / "out.jsonl"
    first = json.dumps({"id": "a", "status": "ok"}) + "\n"
    path.write_text(first + '{"id": "b", "status": "o')
    journal = batch.Journal(path)
    try:
        assert journal.done == {"a"} and journal.failed == set()
    finally:
        journal.close()
    assert path.read_text() == first


# ---- 9. a .gz --output; the errors a rerun keeps ----------------------------------------------------------------

def test_a_gz_output_is_refused_before_anything_is_written(tmp_path, capsys):
    source = _write(tmp_path / "in.jsonl", [{"id": "a", "question": "q", "reasoning": FACT, "answer": "A"}])
    out = tmp_path / "scores.jsonl.gz"
    assert main(["batch", "--no-progress", "--input", str(source), "--output", str(out),
                 "--server", "127.0.0.1:1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"batch failed: --output {out}: the journal is plain JSONL") and "scores.jsonl" in err
    assert not out.exists()


def test_a_rerun_counts_the_error_records_it_keeps_and_names_retry_errors(tmp_path, capsys):
    source = _write(tmp_path / "in.jsonl", [{"id": i, "question": "q", "reasoning": FACT, "answer": "A"}
                                            for i in "abc"])
    out = tmp_path / "out.jsonl"
    error = {"code": "UNAVAILABLE", "reason": "UNAVAILABLE", "message": "down"}
    out.write_text("".join(json.dumps(r) + "\n" for r in [{"id": "a", "status": "ok"}, {"id": "b", "status": error},
                                                           {"id": "c", "status": error}]))
    assert main(["batch", "--no-progress", "--input", str(source), "--output", str(out),
                 "--server", "127.0.0.1:1"]) == 0
    err = capsys.readouterr().err
    assert (f"resuming {out}: 3 rows already have a record there and keep it; they are not scored again, whatever "
            "the scoring options: give another --output to score them with other options; 2 of those records are "
            "errors: run again with --retry-errors to score those rows again") in err, err
