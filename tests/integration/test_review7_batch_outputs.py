"""An --export or a report file that cannot be written (a full disk, a file size limit) is a one-line error naming
the file, nothing of it left behind; the journal stays complete and the same command writes the export."""

import json
import os
import resource
import subprocess
import sys

from tests.conftest import REPO

LIMIT_BYTES = 64 * 1024  # RLIMIT_FSIZE of the command: a write past it fails with EFBIG, as a full disk would


def _cli(*args, limit: int | None = LIMIT_BYTES) -> subprocess.CompletedProcess:
    def limited() -> None:
        if limit is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "proto")]),
           "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run([sys.executable, "-m", "client.cli", *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300, preexec_fn=limited)


def _done_run(tmp_path, text=lambda: os.urandom(10_000).hex()):
    """An input whose rows all have a record in the journal (a run that needs no server), over LIMIT_BYTES: its
    steps' text does not compress, so Parquet is over the limit too, unless `text` makes text that does."""
    source, journal = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    rows = [{"id": f"r{i}", "question": "q", "reasoning": "Protamine reverses heparin.", "answer": "B",
             "group": "base" if i % 2 else "sft"} for i in range(8)]
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    records = [{"id": r["id"], "status": "ok", "group": r["group"], "knowledge_index": 0.5 + 0.01 * i,
                "info_gain": 0.1, "counts": {"supported": 1, "contradicted": 0, "not_enough_info": 0},
                "steps": [{"text": text(), "gain": 0.1, "verdict": "supported"} for _ in range(3)]}
               for i, r in enumerate(rows)]
    journal.write_text("".join(json.dumps(r) + "\n" for r in records))
    return source, journal


def test_an_export_that_cannot_be_written_names_it_and_the_same_command_writes_it_later(tmp_path):
    source, journal = _done_run(tmp_path)
    before = journal.read_bytes()
    for name in ("scores.csv", "scores.parquet"):
        export = tmp_path / "exports" / name
        args = ("batch", "--no-progress", "--input", source, "--output", journal, "--export", export)
        failed = _cli(*args)
        last = failed.stderr.strip().splitlines()[-1]
        assert failed.returncode == 1, failed.stderr
        assert last == (f"batch failed: cannot write --export {export} (File too large): nothing of it was written; "
                        f"the journal {journal} is complete: run the same command again to export it (no row is "
                        "scored again)")
        assert [f for f in os.listdir(export.parent) if name in f] == []  # no partial file, no temporary file
        assert journal.read_bytes() == before

        again = _cli(*args, limit=None)
        assert again.returncode == 0, again.stderr
        assert export.stat().st_size > LIMIT_BYTES


def test_a_second_export_that_cannot_be_written_says_the_first_was(tmp_path):
    source, journal = _done_run(tmp_path, text=lambda: "x" * 20_000)
    small, large = tmp_path / "small.parquet", tmp_path / "large.csv"  # (Parquet compresses the text)
    failed = _cli("batch", "--no-progress", "--input", source, "--output", journal, "--export", small,
                  "--export", large)
    assert failed.returncode == 1, failed.stderr
    assert f"cannot write --export {large} (File too large): nothing of it was written ({small} written)" \
        in failed.stderr
    assert small.is_file() and not large.exists()


def test_report_files_that_cannot_be_written_are_named_and_nothing_of_them_is_left(tmp_path):
    _, journal = _done_run(tmp_path)
    out = tmp_path / "report"
    out.mkdir()
    html = out / "r.html"
    failed = _cli("report", journal, "--bootstrap", "50", "--html", html, limit=16 * 1024)
    assert failed.returncode == 1, failed.stderr
    figure = out / "r_plots" / "info_gain_steps.png"
    assert failed.stderr.strip().splitlines()[-1] == (
        f"report failed: cannot write the figure {figure} (File too large): nothing of it was written")
    assert not html.exists() and os.listdir(out / "r_plots") == []

    failed = _cli("report", journal, "--bootstrap", "50", "--json", out / "stats.json", limit=1024)
    assert failed.returncode == 1, failed.stderr
    assert failed.stderr.strip().splitlines()[-1] == (
        f"report failed: cannot write --json {out / 'stats.json'} (File too large): nothing of it was written")
    assert sorted(os.listdir(out)) == ["r_plots"]
