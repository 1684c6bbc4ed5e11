"""`kgverify report --by model` on journals whose records have no 'model' field put every row in one group
"(none)", compared nothing and exited 0: a misspelt --by looked like a report. It is now a usage error (exit 2)."""

import json

from client.cli import main


def _record(rid, group):
    return {"id": rid, "status": "ok", "group": group, "question_id": "q1", "knowledge_index": 0.5,
            "knowledge_index_paper": 0.5, "coverage": 1.0, "info_gain": 0.1, "steps": []}


def test_a_by_field_no_record_has_is_refused(tmp_path, capsys):
    journal = tmp_path / "scores.jsonl"
    journal.write_text("".join(json.dumps(_record(f"r{i}", g)) + "\n" for i, g in enumerate(["base", "sft"])))
    assert main(["report", str(journal), "--by", "model", "--bootstrap", "20"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "report failed: --by model: no record has a 'model' field" in captured.err, captured.err
    # fields records do hold still group, and journals without any group field are one group as before
    assert main(["report", str(journal), "--by", "question_id", "--bootstrap", "20"]) == 0
    assert "question_id=q1: n=2" in capsys.readouterr().out
    plain = tmp_path / "plain.jsonl"
    plain.write_text(json.dumps({**_record("r", None), "group": None}) + "\n")
    assert main(["report", str(plain), "--bootstrap", "20"]) == 0
    assert "group=(none): n=1" in capsys.readouterr().out
