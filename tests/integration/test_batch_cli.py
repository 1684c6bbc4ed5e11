"""`kgverify batch` follows its contract: one record per row, per-row statuses, resumable journal."""

import asyncio
import json

import pytest

from client.batch_io import journal_records
from client.cli import main

ROWS = [
    {"id": "r1", "question": "Which drug reverses heparin?", "group": "base", "question_id": "q1",
     "steps": ["Let's think step by step.", "Protamine sulfate neutralizes heparin.", "So the answer is B."],
     "answer": "B", "gold_answer": "B", "choices": ["Vitamin K", "Protamine sulfate"]},
    {"id": "r2", "question": "What reverses warfarin?", "reasoning": "Vitamin K reverses warfarin.",
     "answer": "Vitamin K", "context": ["Vitamin K reverses the effect of warfarin over several hours."]},
    {"id": "r3", "question": "q", "reasoning": "both", "steps": ["given"], "answer": "a"},
    "not json",
    {"question": "no id", "reasoning": "Aspirin inhibits COX.", "answer": "x"},
    {"id": "r1", "question": "duplicate", "reasoning": "Aspirin inhibits COX.", "answer": "x"},
    {"id": "r4", "question": "", "reasoning": "Metformin is first-line for type 2 diabetes.", "answer": ""},
]


def _write_input(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))


def _read(path):
    def no_nan(value):
        raise AssertionError(f"{value} in output")

    return [json.loads(line, parse_constant=no_nan) for line in path.read_text().splitlines()]


async def _batch(*args):
    return await asyncio.to_thread(main, ["batch", "--no-progress", *map(str, args)])


async def test_batch_writes_one_record_per_row_with_its_status(verifier, tmp_path):
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    _write_input(source, ROWS)
    assert await _batch("--input", source, "--output", out, "--server", verifier.addresses[0], "--keep-order") == 0
    records = _read(out)
    assert len(records) == len(ROWS)
    by_id = {}
    for record in records:
        by_id.setdefault(record["id"], record)
    assert [r["id"] for r in records][:3] == ["r1", "r2", "r3"]  # --keep-order

    good = by_id["r1"]
    assert good["status"] == "ok" and good["group"] == "base" and good["question_id"] == "q1"
    assert set(good) >= {"knowledge_index", "knowledge_index_paper", "coverage", "counts", "error_steps",
                         "first_error_step", "info_gain", "info_gain_total", "info_gain_paper", "target",
                         "estimator", "steps", "llm_calls", "provenance"}
    assert good["target"] == "gold_answer" and good["estimator"] == "nli" and good["info_gain_paper"] is None
    step = good["steps"][1]
    assert step["verdict"] == "supported" and step["tier"] == "embedded"
    assert set(step["probabilities"]) == {"supported", "contradicted", "not_enough_info"}
    assert set(step["evidence"][0]) == {"fact_id", "text", "source", "score"}
    assert step["claims"][0]["verdict"] == "supported" and isinstance(step["gain"], float)
    assert good["steps"][0]["verdict"] == "no_knowledge" and good["steps"][0]["probabilities"] is None
    assert good["steps"][1]["text"] == ROWS[0]["steps"][1] and good["steps"][1]["start"] == len(ROWS[0]["steps"][0]) + 1

    assert by_id["r2"]["steps"][0]["evidence"][0]["fact_id"] == "context:0"
    assert by_id["r3"]["status"]["code"] == "INVALID_ARGUMENT" and by_id["r3"]["steps"] == []
    assert by_id["#line-4"]["status"]["reason"] == "INVALID_JSON"
    assert by_id["#line-5"]["status"]["reason"] == "MISSING_ID"
    # The repeated id's record has a key of its own: it never replaces the first row's result (written after
    # it here, with --keep-order), in the journal's readers or on resume.
    duplicate = by_id["r1#line-6"]["status"]
    assert duplicate["reason"] == "DUPLICATE_ID" and "line 6" in duplicate["message"]
    assert [r["status"] for r in records if r["id"] == "r1"] == ["ok"]
    assert {r["id"]: r for r in journal_records(out)}["r1"]["status"] == "ok"
    # InfoGain asked, no answer: KI is scored, InfoGain is null and says why
    r4 = by_id["r4"]
    assert r4["status"] == "ok" and r4["knowledge_index_paper"] is not None
    assert r4["info_gain"] is None and "no answer or gold_answer" in r4["info_gain_null_reason"]
    assert "info_gain_null_reason" not in good
    assert await _batch("--input", source, "--output", out, "--server", verifier.addresses[0], "--keep-order",
                        "--retry-errors") == 0
    assert [r["id"] for r in _read(out)].count("r1") == 1  # the duplicate's record is no error of r1 to retry


async def test_no_evidence_text_journals_evidence_by_id_only(verifier, tmp_path):
    rows = [{"id": "k", "question": "Which drug reverses heparin?",
             "reasoning": "Protamine sulfate neutralizes heparin. Vitamin K reverses warfarin.", "answer": "a"}]
    source, full, lean = tmp_path / "in.jsonl", tmp_path / "full.jsonl", tmp_path / "lean.jsonl"
    _write_input(source, rows)
    common = ("--input", source, "--server", verifier.addresses[0], "--metrics", "ki")
    assert await _batch(*common, "--output", full) == 0
    assert await _batch(*common, "--output", lean, "--no-evidence-text") == 0
    [with_text], [without] = _read(full), _read(lean)

    def evidence(record):
        return [e for step in record["steps"] for e in (*step["evidence"],
                                                         *(x for c in step["claims"] for x in c["evidence"]))]

    assert evidence(with_text) and all(set(e) == {"fact_id", "text", "source", "score"} for e in evidence(with_text))
    assert [{k: v for k, v in e.items() if k != "text"} for e in evidence(with_text)] == evidence(without)
    assert [s["verdict"] for s in with_text["steps"]] == [s["verdict"] for s in without["steps"]]
    removed = sum(len(e["text"]) for e in evidence(with_text))  # every passage text, as often as it was retrieved
    assert full.stat().st_size - lean.stat().st_size >= removed


async def test_batch_resumes_from_its_journal(verifier, tmp_path):
    rows = [{"id": f"c{i}", "question": "q", "reasoning": f"Aspirin inhibits cyclooxygenase {i}.", "answer": "a"}
            for i in range(6)]
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    _write_input(source, rows)
    args = ("--input", source, "--output", out, "--server", verifier.addresses[0], "--metrics", "ki")
    assert await _batch(*args) == 0
    lines = out.read_text().splitlines()
    # a crash mid-write: the journal lost c5 and ends in a torn line
    out.write_text("\n".join(lines[:4]) + "\n" + lines[4] + "\n" + lines[5][: len(lines[5]) // 2])
    missing = json.loads(lines[5])["id"]
    assert await _batch(*args) == 0
    records = _read(out)
    assert sorted(r["id"] for r in records) == sorted(r["id"] for r in rows)
    assert [r["id"] for r in records][-1] == missing
    assert all(r["info_gain"] is None and r["knowledge_index"] is not None for r in records)
    assert await _batch(*args) == 0 and len(_read(out)) == len(rows)


@pytest.mark.slow
async def test_batch_starts_an_embedded_server_without_server_flag(tmp_path, cache_dir, monkeypatch):
    monkeypatch.setenv("KGV_KB__CACHE_DIR", str(cache_dir))
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    _write_input(source, [ROWS[0], ROWS[1]])
    assert await _batch("--input", source, "--output", out, "--concurrency", "2") == 0
    assert [r["status"] for r in _read(out)] == ["ok", "ok"]


async def test_batch_fails_only_when_the_run_itself_fails(tmp_path):
    assert await _batch("--input", tmp_path / "missing.jsonl", "--output", tmp_path / "o.jsonl") == 2
    assert not (tmp_path / "o.jsonl").exists()
