"""`kgverify report` and `--export` on journals as they are found: question ids 3 and 3.0 (a float column with a
gap) did not pair; a last record without its newline was dropped; a dataset whose ids are numbers, given instead
of the journal, got only "no records"."""

import json

from client import batch_io
from client.cli import main
from client.report import ReportOptions, build_report
from client.report_stats import chain_of


def _journal(path, records, end="\n"):
    path.write_text("\n".join(json.dumps(r) for r in records) + end)
    return path


def _record(i, qid, ki):
    return {"id": f"r{i}", "status": "ok", "question_id": qid, "knowledge_index": ki}


def test_question_ids_3_and_3_0_pair_across_files(tmp_path):
    base = _journal(tmp_path / "base.jsonl", [_record(i, float(i), 0.4 + i / 10) for i in range(4)])
    sft = _journal(tmp_path / "sft.jsonl", [_record(i, i, 0.5 + i / 10) for i in range(4)])
    report, _ = build_report(ReportOptions(inputs=[base, sft], by="file", samples=50))
    ki = next(c for c in report["comparisons"] if c["metric"] == "knowledge_index")
    assert ki["paired"] and ki["n"][0] == 4, ki


def test_a_whole_float_question_id_reads_as_its_integer_and_a_fraction_stays():
    assert chain_of({"id": "a", "status": "ok", "question_id": 3.0}, "group").question_id == "3"
    assert chain_of({"id": "a", "status": "ok", "question_id": 3.5}, "group").question_id == "3.5"
    assert chain_of({"id": "a", "status": "ok", "group": 2.0}, "group").group == "2"


def test_a_last_record_without_its_newline_is_reported_and_exported(tmp_path):
    path = _journal(tmp_path / "scores.jsonl", [_record(0, "q0", 0.5), _record(1, "q1", 0.7)], end="")
    assert [r["id"] for r in batch_io.journal_records(path)] == ["r0", "r1"]
    assert batch_io.export_journal(path, tmp_path / "scores.csv") == 2
    report, _ = build_report(ReportOptions(inputs=[path], samples=50))
    assert report["groups"]["(none)"]["n"] == 2


def test_a_torn_last_line_is_still_left_out(tmp_path):
    path = tmp_path / "scores.jsonl"
    path.write_text(json.dumps(_record(0, "q0", 0.5)) + '\n{"id": "r1", "status": "o')
    assert [r["id"] for r in batch_io.journal_records(path)] == ["r0"]


def test_report_on_a_dataset_with_number_ids_says_to_give_the_output_not_the_input(tmp_path, capsys):
    dataset = _journal(tmp_path / "rows.jsonl", [{"id": i, "question": "q", "reasoning": "x"} for i in range(3)])
    assert main(["report", str(dataset)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"report failed: {dataset} is not a kgverify batch journal") and (
        "give the --output file of kgverify batch, not its --input") in err, err


def test_report_on_an_empty_journal_still_says_no_records(tmp_path, capsys):
    empty = tmp_path / "scores.jsonl"
    empty.write_text("")
    assert main(["report", str(empty)]) == 1
    assert "no records in" in capsys.readouterr().err
