"""What a first-time user looks for in --help: `kgverify --version` was an error ("the following arguments are
required: command"), `batch --help` never said what a row holds, and `--paper` did not say it needs a causal LM
(with the default nli estimator every row was refused)."""

import pytest

from client.cli import main
from server import __version__


def test_version(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"kgverify {__version__}"


def test_batch_help_names_the_row_fields_and_paper_its_estimator(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # (argparse wraps at the terminal's width, breaking words at hyphens)
    with pytest.raises(SystemExit):
        main(["batch", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for field in ("id (required, unique)", "reasoning (text) or steps", "answer and/or gold_answer", "choices",
                  "context", "group and question_id"):
        assert field in text, field
    assert "--paper also compute the paper's InfoGain formula (needs a causal LM: --estimator lm)" in text
