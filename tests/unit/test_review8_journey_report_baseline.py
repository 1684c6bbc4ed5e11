"""`kgverify report --by group` compares every group against "the first group seen", and a batch journal lists
rows as they finished: with concurrency the baseline (and the sign of every change) could differ between two runs
of the same data, and nothing said which group it was or why. The text, JSON and HTML now say how it was chosen."""

import json

from client.cli import main


def _record(rid, group, ki):
    return {"id": rid, "status": "ok", "group": group, "knowledge_index": ki, "knowledge_index_paper": ki,
            "coverage": 1.0, "info_gain": 0.1, "counts": {"supported": 1, "contradicted": 0, "not_enough_info": 0,
                                                           "no_knowledge": 0, "error": 0}, "steps": []}


def test_report_says_which_group_is_the_baseline_and_why(tmp_path, capsys):
    journal = tmp_path / "scores.jsonl"
    journal.write_text("".join(json.dumps(_record(f"r{i}", g, 0.5 + i / 10)) + "\n"
                               for i, g in enumerate(["sft", "base", "sft", "base"])))
    html, stats = tmp_path / "r.html", tmp_path / "r.json"
    assert main(["report", str(journal), "--html", str(html), "--json", str(stats), "--bootstrap", "50"]) == 0
    out = capsys.readouterr().out
    assert "baseline group=sft (the first group with a defined score in the journal, whose rows are in the order " \
           "they finished unless batch ran with --keep-order: --baseline GROUP names one)" in out, out
    assert json.loads(stats.read_text())["baseline_chosen_by"].startswith("the first group with a defined score")
    assert "(the first group with a defined score in the journal" in html.read_text()

    assert main(["report", str(journal), "--baseline", "base", "--bootstrap", "50"]) == 0
    assert "baseline group=base (--baseline)" in capsys.readouterr().out
