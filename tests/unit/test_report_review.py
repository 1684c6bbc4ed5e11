"""`kgverify report` and the evaluate tables as an auditor reads them: group names from a journal never reach the
terminal as control sequences nor stop the report, every group is named in the figures' legends with the right
chain count, and a long step keeps its evidence id in the table."""

import json

import numpy as np

from client import report_plots
from client.cli import main
from client.render import render_chain
from client.report import ReportOptions, run_report
from client.types import ChainScore, Evidence, StepScore

HOSTILE_GROUP = "sft\x1b]0;owned\x07\x1b[2J\u202e"


def _record(i, group, ki=0.5, gains=(0.1, 0.2), **fields):
    return {"id": f"{group}{i}", "status": "ok", "group": group, "knowledge_index": ki, "knowledge_index_paper": ki,
            "coverage": 1.0, "info_gain": None if None in gains else sum(gains) / len(gains),
            "counts": {"supported": 1, "contradicted": 0, "not_enough_info": 0},
            "steps": [{"gain": g} for g in gains], **fields}


def _journal(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _raw_controls(text):
    return [c for c in text if (ord(c) < 0x20 and c not in "\n\t") or 0x7f <= ord(c) <= 0x9f
            or 0x202a <= ord(c) <= 0x202e or 0x2066 <= ord(c) <= 0x2069]


def test_group_names_reach_the_terminal_without_control_sequences(tmp_path, capsys):
    path = _journal(tmp_path / "s.jsonl", [_record(i, g) for g in ("base", HOSTILE_GROUP) for i in range(3)])
    assert main(["report", "--bootstrap", "20", str(path)]) == 0
    out = capsys.readouterr().out
    assert _raw_controls(out) == [] and "sft\\x1b]0;owned\\x07\\x1b[2J\\u202e vs base" in out
    assert main(["report", "--bootstrap", "20", str(path), "--baseline", "rl"]) == 1
    err = capsys.readouterr().err
    assert _raw_controls(err) == [] and "no group 'rl' (groups: base, sft\\x1b]0;owned" in err


def test_group_names_and_file_names_that_are_not_valid_unicode_are_shown_escaped(tmp_path, capsys):
    # A lone surrogate ("\ud800" in a JSON string, e.g. an emoji cut in half) and a file name that is not UTF-8.
    path = _journal(tmp_path / "s.jsonl", [_record(i, g) for g in ("base", "sft\ud83d") for i in range(3)])
    latin1 = _journal(tmp_path / "r\xe9sum\xe9.jsonl".encode("latin-1").decode("utf-8", "surrogateescape"),
                      [_record(i, "x") for i in range(3)])
    report = run_report(ReportOptions(inputs=[path], samples=20, html=tmp_path / "r.html", json_out=tmp_path / "r.json"))
    assert list(report["groups"]) == ["base", "sft\\ud83d"]
    assert "sft\\ud83d" in (tmp_path / "r.html").read_text(encoding="utf-8")
    report = run_report(ReportOptions(inputs=[path, latin1], by="file", samples=20, html=tmp_path / "f.html"))
    assert list(report["groups"]) == ["s", "r\\udce9sum\\udce9"]
    assert "r\\udce9sum\\udce9.jsonl" in (tmp_path / "f.html").read_text(encoding="utf-8")
    assert main(["report", "--bootstrap", "20", str(path)]) == 0
    assert "sft\\ud83d vs base" in capsys.readouterr().out


def _legends(monkeypatch, tmp_path, records):
    """The legend texts of each figure, read off the figures the report draws."""
    drawn = []
    png = report_plots._png
    monkeypatch.setattr(report_plots, "_png", lambda fig: drawn.append(fig) or png(fig))
    run_report(ReportOptions(inputs=[_journal(tmp_path / "s.jsonl", records)], samples=20, plots_dir=tmp_path / "p"))
    return [[t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()] for fig in drawn]


def test_every_group_is_in_the_legends_even_when_its_name_starts_with_an_underscore(tmp_path, monkeypatch):
    records = [_record(i, g) for g in ("_base", "sft") for i in range(4)]
    curves, ki, _ = _legends(monkeypatch, tmp_path, records)
    assert curves == ["_base (4 chains)", "sft (4 chains)"]
    assert ki == ["_base (n=4)", "sft (n=4)"]


def test_the_info_gain_legend_counts_the_chains_with_gains(tmp_path, monkeypatch):
    # Rows without an answer are scored for KI only: their steps have no gain and are not InfoGain chains.
    records = [_record(i, "base") for i in range(3)] + [_record(i, "base", gains=(None, None)) for i in range(3, 8)]
    curves, ki, _ = _legends(monkeypatch, tmp_path, records)
    assert curves == ["base (3 chains)"] and ki == ["base (n=8)"]


def test_a_long_step_is_cut_visibly_and_keeps_its_evidence_id(monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    evidence = Evidence(fact_id="kb:42", text="t", source="s", score=0.5, title="", origin="kb")
    long = StepScore(index=1, text=" ".join(["metformin lowers hepatic glucose output"] * 12) + " in renal failure",
                     start=0, end=10, verdict="contradicted", evidence=(evidence,))
    short = StepScore(index=2, text="short", start=0, end=5, verdict="supported", evidence=(evidence,))
    table = render_chain(ChainScore(steps=(long, short), chain_text="x", status="ok")).splitlines()
    assert table[2].startswith(" 1  contradicted") and table[4].endswith(" … [kb:42]")
    assert table[5].startswith(" 2  supported") and table[5].endswith("short [kb:42]")


def test_the_info_gain_curve_goes_on_past_a_step_whose_gains_are_mostly_null(tmp_path, monkeypatch):
    # Step 2 of four chains is null (the language model's answer for that prefix was unusable): the chains still
    # reach steps 3 and 4, and the curve shows them, with a gap at step 2.
    drawn = []
    png = report_plots._png
    monkeypatch.setattr(report_plots, "_png", lambda fig: drawn.append(fig) or png(fig))
    records = [_record(i, "base", gains=(0.1, None if i < 4 else 0.2, 0.3, 0.4)) for i in range(6)]
    report = run_report(ReportOptions(inputs=[_journal(tmp_path / "s.jsonl", records)], samples=20,
                                      plots_dir=tmp_path / "p"))
    curve = report["info_gain_curves"]["base"]
    assert [(p["step"], p["n"], round(p["mean"], 6)) for p in curve] == [(1, 6, 0.1), (3, 6, 0.3), (4, 6, 0.4)]
    line = drawn[0].axes[0].get_lines()[0]
    assert list(line.get_xdata()) == [1, 2, 3, 4] and np.isnan(line.get_ydata()[1])
    records = [_record(i, "base", gains=(0.1,) * (2 + (i < 2) * 8)) for i in range(6)]  # only 2 chains are long
    report = run_report(ReportOptions(inputs=[_journal(tmp_path / "s.jsonl", records)], samples=20))
    assert [p["step"] for p in report["info_gain_curves"]["base"]] == [1, 2]


def test_long_group_names_are_drawn_short_and_still_apart(tmp_path, monkeypatch):
    # Checkpoint paths as group names: drawn in full they overlap as tick labels and squeeze the axes to nothing.
    names = [f"/models/run-2026-11-20/{k}-medqa-lr1e-5-bs64/checkpoint-12000" for k in ("base", "sft", "rl-grpo")]
    curves, ki, _ = _legends(monkeypatch, tmp_path, [_record(i, g) for g in names for i in range(3)])
    assert ki == ["…base… (n=3)", "…sft… (n=3)", "…rl-grpo… (n=3)"]
    assert curves == ["…base… (3 chains)", "…sft… (3 chains)", "…rl-grpo… (3 chains)"]
    alone = "x" * 40 + "$" + "y" * 40
    assert _legends(monkeypatch, tmp_path, [_record(i, alone) for i in range(3)])[1] == ["x" * 15 + "…" + "y" * 14 + " (n=3)"]
    assert report_plots._labels(["sft", "sft" + "-v2" * 20]) == {"sft": "sft", "sft" + "-v2" * 20: "sft-v2-v2-v2-v2…v2-v2-v2-v2-v2"}
    apart_in_the_middle = ["a" * 40 + "X" + "b" * 40, "a" * 40 + "Y" + "b" * 40]
    assert list(report_plots._labels(apart_in_the_middle).values()) == apart_in_the_middle  # never two alike


def test_bootstrap_and_seed_out_of_range_are_usage_errors_that_name_the_option(tmp_path, capsys):
    path = _journal(tmp_path / "s.jsonl", [_record(i, "base") for i in range(3)])
    for option, value in (("--bootstrap", "-5"), ("--bootstrap", "0"), ("--seed", "-1")):
        assert main(["report", option, value, str(path), "--json", str(tmp_path / "r.json")]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"report failed: {option} {value}: ") and len(err.splitlines()) == 1, err
    assert not (tmp_path / "r.json").exists()


def test_one_value_has_no_interval_and_a_change_from_one_chain_is_never_bold(tmp_path):
    # One chain per group: the resamples all repeat it, and a zero-width "95% interval" would mark any change as
    # certain (bold in the HTML).
    records = [_record(0, "base", ki=0.5, question_id="q1"), _record(0, "sft", ki=0.6, question_id="q1")]
    records += [_record(i, "rl", ki=0.6 + 0.01 * i) for i in range(1, 4)]  # unpaired (no question_id), n = 1 / 3
    report = run_report(ReportOptions(inputs=[_journal(tmp_path / "s.jsonl", records)], samples=50,
                                      html=tmp_path / "r.html"))
    ki = report["groups"]["base"]["metrics"]["knowledge_index"]
    assert ki["mean"] == 0.5 and ki["ci"] == [None, None]
    for c in report["comparisons"]:
        assert c["difference"]["ci"] == [None, None] and c["relative_change"]["ci"] == [None, None], c
    sft = next(c for c in report["comparisons"] if c["group"] == "sft" and c["metric"] == "knowledge_index")
    assert sft["paired"] and sft["n"] == [1, 1] and round(sft["relative_change"]["value"], 6) == 0.2
    assert 'class="sig"' not in (tmp_path / "r.html").read_text()
    rl = report["groups"]["rl"]["metrics"]["knowledge_index"]
    assert rl["ci"][0] < rl["mean"] < rl["ci"][1]  # two values or more keep their interval


def test_small_means_keep_their_digits(tmp_path):
    # InfoGain per answer token in bits is often below 0.01: three decimals showed every mean as 0.000.
    records = [{**_record(i, g), "info_gain": v * (1 + 0.1 * i)} for g, v in (("base", 0.0004), ("sft", -0.0002))
               for i in range(3)]
    report = run_report(ReportOptions(inputs=[_journal(tmp_path / "s.jsonl", records)], samples=20,
                                      html=tmp_path / "r.html"))
    from client.report import render_text

    text = render_text(report)
    assert "info_gain              0.00044  [0.0004" in text and "0.00044 -> -0.00022" in text
    assert "0.00044 → -0.00022" in (tmp_path / "r.html").read_text()
    assert "knowledge_index          0.500  [0.500, 0.500]" in text  # larger numbers keep three decimals


def test_an_input_file_without_records_is_a_group_of_none_with_by_file(tmp_path, capsys):
    # sft.jsonl is still empty (its batch run has not written a record yet): the report says so instead of
    # leaving the file out and reporting "nothing to compare".
    base = _journal(tmp_path / "base.jsonl", [_record(i, "x") for i in range(3)])
    sft = _journal(tmp_path / "sft.jsonl", [])
    assert main(["report", "--bootstrap", "20", "--by", "file", str(base), str(sft)]) == 0
    out = capsys.readouterr().out
    assert "file=sft: n=0, error rows=0" in out and "sft vs base  knowledge_index        0.500 -> —" in out


def test_up_to_twenty_groups_are_drawn_in_colours_of_their_own(tmp_path, monkeypatch):
    drawn = []
    png = report_plots._png
    monkeypatch.setattr(report_plots, "_png", lambda fig: drawn.append(fig) or png(fig))
    records = [_record(i, f"checkpoint-{k}") for k in range(12) for i in range(3)]
    run_report(ReportOptions(inputs=[_journal(tmp_path / "s.jsonl", records)], samples=20, plots_dir=tmp_path / "p"))
    lines = drawn[0].axes[0].get_legend().get_lines()
    assert len(lines) == 12 and len({line.get_color() for line in lines}) == 12


def test_a_metric_interval_does_not_move_with_another_metric_defined_count(tmp_path):
    # Seeded per group and metric (docs/deployment.md#reports): one chain's InfoGain turning null must not move
    # the interval of coverage, a metric drawn after it.
    def report(null_gain):
        records = [_record(i, "base", ki=0.3 + 0.05 * i, coverage=0.5 + 0.04 * i) for i in range(8)]
        if null_gain:
            records[0] = _record(0, "base", ki=0.3, gains=(0.1, None), coverage=0.5)
        return run_report(ReportOptions(inputs=[_journal(tmp_path / f"s{null_gain}.jsonl", records)], samples=200))

    with_gain, without = report(False)["groups"]["base"]["metrics"], report(True)["groups"]["base"]["metrics"]
    assert with_gain["info_gain"]["n_defined"] == 8 and without["info_gain"]["n_defined"] == 7
    assert with_gain["coverage"]["ci"] == without["coverage"]["ci"]
    assert with_gain["knowledge_index"]["ci"] == without["knowledge_index"]["ci"]
