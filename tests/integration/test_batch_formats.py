"""`kgverify batch` reads CSV and Parquet datasets and exports its journal as CSV and Parquet."""

import asyncio
import csv
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from client.batch import BatchError, Journal
from client.batch_io import export_journal, read_rows
from client.cli import main

STEPS = ["Let's think.", "Protamine sulfate neutralizes heparin."]


def _write_csv(path):
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "question", "steps", "reasoning", "answer", "group", "question_id", "context"])
        writer.writerow(["a1", "Which drug reverses heparin?", json.dumps(STEPS), "", "Protamine", "base", "q1", ""])
        writer.writerow(["a2", "What reverses warfarin?", "", "Vitamin K reverses warfarin.", "Vitamin K", "sft",
                         "q2", json.dumps(["Vitamin K reverses the effect of warfarin."])])
        writer.writerow(["a3", "Broken steps cell", "not a list", "", "x", "base", "q3", ""])
        writer.writerow(["", "No id", "", "Aspirin inhibits COX.", "x", "base", "q4", ""])


def _write_parquet(path):
    table = pa.table({
        "id": [1, 2],
        "question": ["Which drug reverses heparin?", "What reverses warfarin?"],
        "steps": [STEPS, None],
        "reasoning": [None, "Vitamin K reverses warfarin."],
        "answer": ["Protamine", "Vitamin K"],
        "group": ["rl", "rl"],
    })
    pq.write_table(table, path)


def test_csv_rows_parse_list_cells_and_report_broken_ones(tmp_path):
    source = tmp_path / "in.csv"
    _write_csv(source)
    rows = dict(read_rows(source))
    assert rows["row-1"]["steps"] == STEPS and "reasoning" not in rows["row-1"]  # empty cell = absent field
    assert rows["row-2"]["context"] == ["Vitamin K reverses the effect of warfarin."]
    assert isinstance(rows["row-3"], ValueError) and "JSON list" in str(rows["row-3"])


async def _batch(*args):
    return await asyncio.to_thread(main, ["batch", "--no-progress", "--metrics", "ki", *map(str, args)])


async def test_csv_in_csv_and_parquet_out(verifier, tmp_path):
    source, out = tmp_path / "in.csv", tmp_path / "out.jsonl"
    _write_csv(source)
    exports = tmp_path / "out.csv", tmp_path / "out.parquet"
    assert await _batch("--input", source, "--output", out, "--server", verifier.addresses[0], "--keep-order",
                        "--export", exports[0], "--export", exports[1]) == 0
    journal = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in journal] == ["a1", "a2", "a3", "#row-4"]
    assert journal[2]["status"]["reason"] == "INVALID_ROW" and journal[3]["status"]["reason"] == "MISSING_ID"

    with open(exports[0], newline="", encoding="utf-8") as fh:
        as_csv = list(csv.DictReader(fh))
    as_parquet = pq.read_table(exports[1]).to_pylist()
    for rows in (as_csv, as_parquet):
        assert [r["id"] for r in rows] == ["a1", "a2", "a3", "#row-4"]
        assert [r["status_code"] for r in rows] == ["OK", "OK", "INVALID_ARGUMENT", "INVALID_ARGUMENT"]
        assert rows[0]["group"] == "base" and rows[1]["question_id"] == "q2"
        assert json.loads(rows[0]["steps"]) == journal[0]["steps"]  # nested fields as JSON strings
        assert json.loads(rows[0]["counts"]) == journal[0]["counts"]
        assert float(rows[0]["knowledge_index_paper"]) == pytest.approx(journal[0]["knowledge_index_paper"])
    assert as_parquet[2]["knowledge_index"] is None and as_csv[2]["knowledge_index"] == ""  # null, never NaN
    assert as_parquet[0]["info_gain"] is None  # KI only was asked
    schema = pq.read_schema(exports[1])
    assert schema.field("knowledge_index").type == pa.float64() and schema.field("error_steps").type == pa.int64()


async def test_parquet_in_with_list_columns_and_integer_ids(verifier, tmp_path):
    source, out = tmp_path / "in.parquet", tmp_path / "out.jsonl"
    _write_parquet(source)
    assert await _batch("--input", source, "--output", out, "--server", verifier.addresses[0]) == 0
    records = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert set(records) == {"1", "2"} and all(r["status"] == "ok" for r in records.values())
    assert [s["text"] for s in records["1"]["steps"]] == STEPS and records["2"]["group"] == "rl"


def test_a_journal_is_written_by_one_run_at_a_time(tmp_path):
    first = Journal(tmp_path / "out.jsonl")
    try:
        with pytest.raises(BatchError, match="another batch run"):
            Journal(tmp_path / "out.jsonl")
    finally:
        first.close()
    Journal(tmp_path / "out.jsonl").close()  # free again once the first run ended


def test_export_skips_a_torn_last_line(tmp_path):
    journal = tmp_path / "out.jsonl"
    journal.write_text(json.dumps({"id": "x", "status": "ok", "knowledge_index": 0.5, "steps": []}) + "\n"
                       + '{"id": "torn", "sta')
    assert export_journal(journal, tmp_path / "out.csv") == 1
    with pytest.raises(ValueError):
        export_journal(journal, tmp_path / "out.txt")


def test_resume_reads_the_journal_line_by_line_and_cuts_a_torn_tail_across_chunks(tmp_path):
    from client.batch import Journal, _end_of_last_line

    path = tmp_path / "scores.jsonl"
    lines = [json.dumps({"id": f"r{i}", "status": "ok" if i % 3 else {"code": "UNAVAILABLE"}}) + "\n"
             for i in range(50)]
    torn = '{"id": "r50", "status": "o' + "x" * 300  # longer than the small chunks below
    path.write_text("".join(lines) + torn)
    size = path.stat().st_size
    full = len("".join(lines).encode())
    for chunk in (7, 64, 1 << 16):
        assert _end_of_last_line(path, size, chunk) == full
    assert _end_of_last_line(path, 0) == 0
    journal = Journal(path)
    try:
        assert path.stat().st_size == full  # the torn tail is gone
        assert journal.done == {f"r{i}" for i in range(50) if i % 3}
        assert journal.failed == {f"r{i}" for i in range(50) if not i % 3}
    finally:
        journal.close()
