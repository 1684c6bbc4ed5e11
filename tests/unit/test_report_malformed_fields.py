"""`kgverify report` over a journal whose records carry malformed counts or steps (hand-edited, truncated by a
tool, or written by something else): those fields stay undefined, as malformed metrics do, and the report runs."""

import pytest

from client.cli import main
from client.report_stats import chain_of, contradiction_rate, verdict_counts
from tests.unit.test_report_review import _journal, _record

MALFORMED_COUNTS = [5, [1, 2], "x", None, {"contradicted": "many"}, {"supported": 1, "contradicted": 1.5},
                    {"supported": -1}, {"supported": True}, {"supported": float("nan")}]


@pytest.mark.parametrize("counts", MALFORMED_COUNTS)
def test_malformed_counts_are_undefined_not_a_crash(counts):
    chain = chain_of({"id": 1, "status": "ok", "counts": counts}, "group")
    assert chain.values["contradiction_rate"] is None and chain.ki_steps == 0
    assert verdict_counts(counts) is None and contradiction_rate(counts) is None


@pytest.mark.parametrize("steps", [5, "abc", {"gain": 1.0}, None])
def test_steps_that_are_not_a_list_give_no_gains(steps):
    assert chain_of({"id": 1, "status": "ok", "steps": steps}, "group").gains == []


def test_well_formed_counts_are_read_as_before():
    counts = {"supported": 2, "contradicted": 1, "not_enough_info": None, "no_knowledge": 4}
    chain = chain_of({"id": 1, "status": "ok", "counts": counts}, "group")
    assert chain.values["contradiction_rate"] == pytest.approx(1 / 3) and chain.ki_steps == 3
    assert verdict_counts({"supported": 2.0}) == {"supported": 2, "contradicted": 0, "not_enough_info": 0}


def test_report_runs_over_a_journal_with_malformed_fields(tmp_path, capsys):
    records = [_record(i, g) for g in ("base", "sft") for i in range(4)]
    records[1]["counts"] = 7
    records[5]["counts"] = {"contradicted": "many"}
    records[6]["steps"] = 3
    path = _journal(tmp_path / "s.jsonl", records)
    assert main(["report", "--bootstrap", "20", str(path)]) == 0
    assert "sft vs base" in capsys.readouterr().out
