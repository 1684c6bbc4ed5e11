"""CSV exports of a batch journal open in a spreadsheet as text: no cell from the data runs as a formula."""

import csv
import json

from client.batch_io import export_journal


def test_csv_cells_that_start_like_a_formula_are_kept_as_text(tmp_path):
    journal, out = tmp_path / "scores.jsonl", tmp_path / "scores.csv"
    records = [
        {"id": '=HYPERLINK("http://evil","x")', "status": "ok", "group": "+cmd|' /C calc'!A0", "question_id": "@SUM(1)",
         "knowledge_index": 0.5, "info_gain": -0.25, "steps": [], "counts": None, "provenance": {}},
        {"id": "-2", "status": {"code": "INVALID_ARGUMENT", "reason": "X", "message": "\tindented"}, "steps": [],
         "knowledge_index": None, "info_gain": None},
        {"id": "plain", "status": "ok", "group": "a-b", "knowledge_index": 1.0, "info_gain": 0.0, "steps": []},
    ]
    journal.write_text("".join(json.dumps(r) + "\n" for r in records))
    export_journal(journal, out)
    with open(out, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert rows[0]["id"] == '\'=HYPERLINK("http://evil","x")'
    assert rows[0]["group"] == "'+cmd|' /C calc'!A0" and rows[0]["question_id"] == "'@SUM(1)"
    assert rows[0]["info_gain"] == "-0.25"  # a number stays a number
    assert rows[1]["id"] == "'-2" and rows[1]["status_message"] == "'\tindented"
    assert rows[2]["id"] == "plain" and rows[2]["group"] == "a-b"
