"""`kgverify report` given one journal twice (by another path, a symbolic or a hard link) refuses it: its rows
counted twice made n double and the intervals too narrow."""

import json
import os

import pytest

from client.cli import main
from client.report import ReportOptions, build_report


def _journal(path, n=10):
    records = [{"id": f"r{i}", "status": "ok", "group": "base" if i % 2 else "sft", "knowledge_index": i / n,
                "counts": {"supported": 1, "contradicted": 0, "not_enough_info": 0}} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.mark.parametrize("how", ["same", "dotted", "symlink", "hardlink"])
def test_one_journal_given_twice_is_refused_whatever_the_grouping(tmp_path, capsys, how):
    journal = _journal(tmp_path / "scores.jsonl")
    again = {"same": journal, "dotted": tmp_path / "." / "x" / ".." / "scores.jsonl",
             "symlink": tmp_path / "link.jsonl", "hardlink": tmp_path / "hard.jsonl"}[how]
    if how == "symlink":
        again.symlink_to(journal)
    elif how == "hardlink":
        os.link(journal, again)
    assert main(["report", "--bootstrap", "20", str(journal), str(again)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"report failed: {again} is given twice (as {journal}): its rows would count twice")
    assert main(["report", "--bootstrap", "20", "--by", "file", str(journal), str(again)]) == 2
    assert "each input file is one group with --by file" in capsys.readouterr().err


def test_two_journals_with_the_same_ids_are_two_sets_of_rows(tmp_path):
    medqa, pubmedqa = _journal(tmp_path / "medqa.jsonl"), _journal(tmp_path / "pubmedqa.jsonl")
    report, _ = build_report(ReportOptions(inputs=[medqa, pubmedqa], samples=20))
    assert {group: summary["n"] for group, summary in report["groups"].items()} == {"base": 10, "sft": 10}
