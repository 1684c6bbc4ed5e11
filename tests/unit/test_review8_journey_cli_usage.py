"""A usage mistake on `kgverify evaluate` or `kgverify batch` is a usage error (exit status 2, the command's name,
before any model loads or any row is sent), never a bare exit status 1 or a journal of refused rows."""

import json

import pytest

from client.cli import main


def _usage_error(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "starting the embedded verifier" not in err  # refused before any model loads
    return err


def test_evaluate_without_a_chain_is_a_usage_error(capsys):
    err = _usage_error(["evaluate", "--question", "Q", "--answer", "A"], capsys)
    assert "kgverify evaluate: error: give exactly one of --reasoning and --steps-file" in err


def test_evaluate_with_both_chains_is_a_usage_error(tmp_path, capsys):
    steps = tmp_path / "steps.json"
    steps.write_text(json.dumps(["Aspirin inhibits COX."]))
    err = _usage_error(["evaluate", "--question", "Q", "--reasoning", "x", "--steps-file", str(steps),
                        "--answer", "A"], capsys)
    assert "kgverify evaluate: error: give exactly one of --reasoning and --steps-file" in err


def test_evaluate_infogain_alone_without_a_target_is_a_usage_error(capsys):
    err = _usage_error(["evaluate", "--question", "Q", "--reasoning", "Aspirin inhibits COX.",
                        "--metrics", "infogain"], capsys)
    assert "kgverify evaluate: error: InfoGain needs a target" in err


@pytest.mark.parametrize("command", ["evaluate", "batch"])
@pytest.mark.parametrize("option", ["--top-k", "--window"])
def test_a_negative_count_is_refused_before_anything_runs(command, option, tmp_path, capsys):
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_text(json.dumps({"id": "a", "question": "Q", "reasoning": "Aspirin inhibits COX.",
                                  "answer": "A"}) + "\n")
    argv = (["evaluate", "--question", "Q", "--reasoning", "Aspirin inhibits COX.", "--answer", "A"]
            if command == "evaluate" else ["batch", "--input", str(source), "--output", str(out)])
    err = _usage_error([*argv, option, "-1"], capsys)
    assert f"argument {option}: must be 0 (the server's default) or more, not -1" in err
    assert not out.exists()  # (batch: no journal of rows refused for the option)
