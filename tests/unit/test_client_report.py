"""`kgverify report`: never overwrites its inputs, names files apart, picks a baseline with scores, draws any group
name, and keeps relative-change intervals honest when the baseline mean can be 0."""

import json

import numpy as np
import pytest

from client import report_stats
from client.cli import main
from client.report import ReportOptions, build_report, run_report


def _journal(path, groups, n=6, **fields):
    lines = []
    for group, ki in groups.items():
        for i in range(n):
            lines.append({"id": f"{group}{i}", "status": "ok", "group": group, "knowledge_index": ki + 0.01 * i,
                          "info_gain": 0.1, "counts": {"supported": 1, "contradicted": 0, "not_enough_info": 0},
                          "steps": [{"gain": 0.1}] * 3, **fields})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    return path


def _report(*args):
    return main(["report", "--bootstrap", "50", *map(str, args)])


def test_json_naming_an_input_or_another_journal_or_a_directory_is_refused_before_writing(tmp_path, capsys):
    base = _journal(tmp_path / "base.jsonl", {"a": 0.5})
    sft = _journal(tmp_path / "sft.jsonl", {"b": 0.6})
    before = base.read_bytes(), sft.read_bytes()
    assert _report("--json", base, sft, "--by", "file") == 2  # `--json` taken for a flag: base.jsonl is its value
    assert "is a batch journal" in capsys.readouterr().err
    assert _report(base, sft, "--json", base) == 2
    assert "is one of the inputs" in capsys.readouterr().err
    assert (base.read_bytes(), sft.read_bytes()) == before
    assert _report(base, "--html", tmp_path / "base.jsonl") == 2
    capsys.readouterr()
    (tmp_path / "out").mkdir()
    assert _report(base, "--json", tmp_path / "out") == 2
    assert "is a directory" in capsys.readouterr().err.strip().splitlines()[-1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base.jsonl", "out", "sft.jsonl"]  # no .out.tmp
    assert _report(base, "--json", tmp_path / "stats.json") == 0  # a new file is fine, and so is rewriting it
    assert _report(base, "--json", tmp_path / "stats.json") == 0


def test_by_file_names_files_with_the_same_stem_by_their_directories(tmp_path, capsys):
    base = _journal(tmp_path / "base" / "scores.jsonl", {"x": 0.4})
    sft = _journal(tmp_path / "sft" / "scores.jsonl", {"x": 0.9})
    report, _ = build_report(ReportOptions(inputs=[base, sft], by="file", samples=50))
    assert list(report["groups"]) == ["base/scores", "sft/scores"]
    assert {c["group"] for c in report["comparisons"]} == {"sft/scores"}
    other = _journal(tmp_path / "other.jsonl", {"x": 0.1})
    report, _ = build_report(ReportOptions(inputs=[other, base], by="file", samples=50))
    assert list(report["groups"]) == ["other", "scores"]  # distinct stems stay stems
    assert _report(base, tmp_path / "base" / ".." / "base" / "scores.jsonl", "--by", "file") == 2
    assert "is given twice" in capsys.readouterr().err


def test_the_default_baseline_is_the_first_group_with_scores(tmp_path):
    path = tmp_path / "scores.jsonl"
    _journal(path, {"base": 0.4, "sft": 0.6})
    broken = {"id": "#line-3", "input_row": "line-3", "status": {"code": "INVALID_ARGUMENT", "reason": "INVALID_JSON",
                                                                  "message": "line 3 is not valid JSON"},
              "knowledge_index": None, "steps": []}
    path.write_text(json.dumps(broken) + "\n" + path.read_text())  # errors before any call are journaled first
    report, _ = build_report(ReportOptions(inputs=[path], samples=50))
    assert report["baseline"] == "base"
    assert report["groups"]["(none)"]["n_error"] == 1


@pytest.mark.parametrize("name", ["base_$x^$", "sft ($2 budget, $3_max)", "cost $5 or $10"])
def test_group_names_with_dollar_signs_are_drawn_as_text(tmp_path, name):
    path = _journal(tmp_path / "m.jsonl", {"base": 0.3, name: 0.6})
    report = run_report(ReportOptions(inputs=[path], plots_dir=tmp_path / "plots", samples=50))
    assert len(report["written"]) == 3


def _rare_event(tmp_path):
    """1 contradiction in 20 baseline chains, none in 20 new ones: the baseline mean is 0 in ~36% of resamples."""
    lines = []
    for group in ("base", "new"):
        for i in range(20):
            hit = int(group == "base" and i == 0)
            lines.append({"id": f"{group}{i}", "status": "ok", "group": group, "knowledge_index": 0.5,
                          "counts": {"supported": 1 - hit, "contradicted": hit, "not_enough_info": 0}, "steps": []})
    path = tmp_path / "rare.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    return path


def test_a_relative_change_whose_baseline_is_often_0_in_resamples_has_no_interval_and_is_never_bold(tmp_path,
                                                                                                    capsys):
    path = _rare_event(tmp_path)
    html = tmp_path / "rare.html"
    assert main(["report", str(path), "--html", str(html), "--json", str(tmp_path / "rare.json")]) == 0
    stats = json.loads((tmp_path / "rare.json").read_text())
    change = next(c for c in stats["comparisons"] if c["metric"] == "contradiction_rate")
    rel = change["relative_change"]
    assert rel["value"] == -1.0 and rel["ci"] == [None, None] and 0.3 < rel["undefined_share"] < 0.45
    row = next(r for r in html.read_text().split("<tr>") if "Contradiction rate" in r and " vs " in r)
    assert 'class="sig"' not in row and "interval undefined" in row
    assert "interval undefined: the baseline mean is 0 in" in capsys.readouterr().out


class CountingRng:
    """Records how many values each integers() call draws."""

    def __init__(self, seed):
        self.rng, self.sizes = np.random.default_rng(seed), []

    def integers(self, low, high, size):
        self.sizes.append(int(np.prod(size)))
        return self.rng.integers(low, high, size=size)


def test_bootstrap_draws_in_blocks_and_gets_the_same_means_as_one_draw(monkeypatch):
    values = np.random.default_rng(1).normal(size=1000)
    whole = values[np.random.default_rng(2).integers(0, 1000, size=(500, 1000))].mean(axis=1)
    monkeypatch.setattr(report_stats, "BLOCK_VALUES", 30_000)
    rng = CountingRng(2)
    means, = report_stats.resample_means(rng, 500, values)
    assert max(rng.sizes) <= 30_000 and len(rng.sizes) == 17
    assert np.array_equal(means, whole)
    rng = CountingRng(2)
    summary = report_stats.bootstrap_mean(values, rng, 500)
    assert max(rng.sizes) <= 30_000
    assert summary["ci"] == list(report_stats.percentile_ci(whole))
