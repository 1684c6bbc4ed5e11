"""`kgverify serve --kb DIR` with a misspelt DIR came up without a knowledge base (its log said so; every KI call
without context answered FAILED_PRECONDITION), and `--kb` with `--no-kb` served no KB. Both are usage errors (exit
status 2) before anything starts."""

import pytest

from client.cli import main


def _usage_error(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    return capsys.readouterr().err


def test_serve_refuses_a_kb_that_is_not_there(tmp_path, capsys):
    err = _usage_error(["serve", "--kb", str(tmp_path / "nokb"), "--listen", "127.0.0.1:0"], capsys)
    assert f"kgverify serve: error: --kb {tmp_path / 'nokb'} does not exist: give a knowledge base directory" in err
    assert "listening" not in err


def test_serve_refuses_kb_with_no_kb(tmp_path, capsys):
    err = _usage_error(["serve", "--kb", str(tmp_path), "--no-kb", "--listen", "127.0.0.1:0"], capsys)
    assert "kgverify serve: error: --kb and --no-kb contradict each other" in err
