"""`kgverify report` renders statistics, PNG figures and one self-contained HTML report from batch output."""

import asyncio
import base64
import json
import re

import numpy as np

from client.cli import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def synthetic_journal(path, questions=60, seed=7):
    """Batch records of base, SFT and RL models on the same questions, SFT with ~40% less InfoGain."""
    rng = np.random.default_rng(seed)
    scale = {"base": 1.0, "sft": 0.6, "rl": 0.85}
    ki_mean = {"base": 0.7, "sft": 0.8, "rl": 0.75}
    lines = []
    for q in range(questions):
        difficulty = rng.normal(0.3, 0.1)
        for group in ("base", "sft", "rl"):
            n = int(rng.integers(3, 12))
            gains = [float(difficulty * scale[group] * (1.5 - s / n) + rng.normal(0, 0.05)) for s in range(n)]
            verdicts = rng.choice(["supported", "contradicted", "not_enough_info", "no_knowledge"], size=n,
                                  p=[ki_mean[group] * 0.8, 0.1, 0.8 - ki_mean[group] * 0.8, 0.1])
            counts = {v: int((verdicts == v).sum()) for v in ("supported", "contradicted", "not_enough_info",
                                                               "no_knowledge")}
            counts["error"] = 0
            bearing = counts["supported"] + counts["contradicted"] + counts["not_enough_info"]
            record = {
                "id": f"{group}-{q}", "status": "ok", "group": group, "question_id": f"q{q}",
                "knowledge_index": counts["supported"] / bearing if bearing else None,
                "knowledge_index_paper": (counts["supported"] + counts["no_knowledge"]) / n,
                "coverage": (counts["supported"] + counts["contradicted"]) / bearing if bearing else None,
                "counts": counts, "info_gain": float(np.mean(gains)), "info_gain_total": float(np.sum(gains)),
                "steps": [{"text": f"step {s}", "verdict": str(v), "gain": g} for s, (v, g) in
                          enumerate(zip(verdicts, gains))],
            }
            lines.append(json.dumps(record))
    lines.append(json.dumps({"id": "sft-down", "status": {"code": "UNAVAILABLE", "reason": "BACKEND_UNAVAILABLE",
                                                         "message": "judge down"}, "group": "sft",
                             "question_id": "q0", "knowledge_index": None, "counts": None, "steps": []}))
    path.write_text("\n".join(lines) + "\n")


def _png_size(data):
    assert data[:8] == PNG_MAGIC
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


async def _report(*args):
    return await asyncio.to_thread(main, ["report", *map(str, args)])


async def test_report_writes_pngs_and_a_self_contained_html(tmp_path, capsys):
    journal = tmp_path / "scores.jsonl"
    synthetic_journal(journal)
    html, stats = tmp_path / "report.html", tmp_path / "report.json"
    assert await _report(journal, "--by", "group", "--baseline", "base", "--html", html, "--json", stats,
                         "--bootstrap", "500") == 0
    text = capsys.readouterr().out
    assert "sft vs base  info_gain" in text and "paired, 60 questions" in text

    plots = tmp_path / "report_plots"
    for name in ("info_gain_steps.png", "ki_distribution.png", "group_means.png"):
        width, height = _png_size((plots / name).read_bytes())
        assert width >= 1200 and height >= 400  # legible at 130 dpi

    page = html.read_text()
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == 3 and all(base64.b64decode(i)[:8] == PNG_MAGIC for i in images)
    assert not re.search(r'(src|href)="(http|//|file:)', page)  # nothing fetched from elsewhere
    assert "sft" in page and "(B − A) / |A|" in page

    report = json.loads(stats.read_text())
    sft = next(c for c in report["comparisons"] if c["group"] == "sft" and c["metric"] == "info_gain")
    low, high = sft["relative_change"]["ci"]
    assert sft["paired"] and low < sft["relative_change"]["value"] < high and high < -0.25  # ~ -40% by design
    assert report["groups"]["sft"]["n"] == 61 and report["groups"]["sft"]["n_error"] == 1
    assert report["groups"]["sft"]["metrics"]["info_gain"]["n_undefined"] == 1


async def test_report_groups_by_input_file(tmp_path, capsys):
    base, tuned = tmp_path / "base.jsonl", tmp_path / "tuned.jsonl"
    synthetic_journal(tmp_path / "all.jsonl", questions=10)
    records = [json.loads(line) for line in (tmp_path / "all.jsonl").read_text().splitlines()]
    base.write_text("".join(json.dumps(r) + "\n" for r in records if r["group"] == "base"))
    tuned.write_text("".join(json.dumps(r) + "\n" for r in records if r["group"] == "rl"))
    assert await _report(base, tuned, "--by", "file", "--bootstrap", "200") == 0
    assert "tuned vs base" in capsys.readouterr().out
    assert await _report(tmp_path / "missing.jsonl") == 1


async def test_report_reads_real_batch_output(verifier, tmp_path, capsys):
    rows = [{"id": f"{g}{i}", "group": g, "question_id": f"q{i}", "question": "Which drug reverses heparin?",
             "steps": ["Protamine sulfate neutralizes heparin.", "Heparin is reversed by vitamin K."][: 1 + i % 2],
             "answer": "Protamine sulfate"} for g in ("a", "b") for i in range(3)]
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert await asyncio.to_thread(main, ["batch", "--no-progress", "--input", str(source), "--output", str(out),
                                          "--server", verifier.addresses[0]]) == 0
    assert await _report(out, "--plots-dir", tmp_path / "plots", "--bootstrap", "200") == 0
    assert "b vs a  knowledge_index" in capsys.readouterr().out
    assert _png_size((tmp_path / "plots" / "ki_distribution.png").read_bytes())[0] > 0


async def test_report_says_what_it_wrote_and_refuses_a_file_that_is_not_a_batch_journal(tmp_path, capsys):
    journal, stats = tmp_path / "scores.jsonl", tmp_path / "stats.json"
    synthetic_journal(journal, questions=5)
    assert await _report(journal, "--json", stats, "--bootstrap", "100") == 0
    assert f"wrote {stats}" in capsys.readouterr().err
    assert json.loads(stats.read_text())["baseline"] == "base"

    rows = tmp_path / "rows.jsonl"  # a batch input: ids, no statuses
    rows.write_text("".join(json.dumps({"id": f"r{i}", "question": "q", "reasoning": "r", "answer": "a"}) + "\n"
                            for i in range(3)))
    assert await _report(rows) == 1
    err = capsys.readouterr().err
    assert f"{rows} is not a kgverify batch journal" in err and "--output" in err


async def test_an_output_whose_directory_does_not_exist_is_an_error_and_no_directory_is_made(tmp_path, capsys):
    journal = tmp_path / "scores.jsonl"
    synthetic_journal(journal, questions=5)
    missing = tmp_path / "missing" / "deeper"
    for option, path in (("--json", missing / "x.json"), ("--html", missing / "x.html"),
                         ("--plots-dir", missing / "plots")):
        assert await _report(journal, option, path, "--bootstrap", "50") == 2, option
        out, err = capsys.readouterr()
        assert f"the directory {missing} does not exist" in err and option in err, err
        assert out == "" and "wrote" not in err  # checked before any work: nothing written
    assert not (tmp_path / "missing").exists()  # no parent directory was created
    # the plots directory itself is made when its parent exists
    assert await _report(journal, "--plots-dir", tmp_path / "plots", "--bootstrap", "50") == 0
    assert _png_size((tmp_path / "plots" / "group_means.png").read_bytes())[0] > 0
