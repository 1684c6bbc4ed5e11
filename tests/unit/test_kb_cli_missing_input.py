"""kb build/add with an input that does not exist say so before anything else: the embedder was loaded first
(seconds) and an empty "documents: 0doc" bar was drawn before the error."""

from __future__ import annotations

import pytest

import kb.cli as cli


@pytest.mark.parametrize("command", ["build", "add"])
def test_a_missing_input_is_named_before_the_embedder_loads(tmp_path, capsys, monkeypatch, command):
    def no_model(*args, **kwargs):
        raise AssertionError("the embedder was loaded for an input that does not exist")

    monkeypatch.setattr(cli, "_embedder", no_model)
    missing = tmp_path / "nope.jsonl"
    argv = (["build", "--input", str(missing), "--output", str(tmp_path / "kb")] if command == "build"
            else ["add", str(tmp_path / "kb"), "--input", str(missing)])
    code = cli.main(argv)
    err = capsys.readouterr().err
    assert code == 2 and f"input {missing} does not exist" in err
    assert "documents" not in err and not (tmp_path / "kb").exists()
