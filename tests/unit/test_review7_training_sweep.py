"""training/gpu_sweep.py: runs side by side, stopped at a time limit and resumed by the same command, and what it
packs for a size-limited transfer back (a summary, the logs, the best run's best.pt in checked pieces)."""

from __future__ import annotations

import json
import sys
import tarfile

import pytest

from tests.conftest import REPO
from tests.unit.test_training_review import _args, _checkcovid, _write

sys.path.insert(0, str(REPO / "training"))
import gpu_sweep as S  # noqa: E402
import pieces as P  # noqa: E402


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return _write(tmp_path_factory.mktemp("nli") / "train.jsonl.gz", _checkcovid())


def _run_args(*extra):
    args = _args("D", "O", "--max-steps", "3", "--eval-every", "3", *extra)
    return " ".join(args[4:])  # without --data D --out O


def test_a_stopped_sweep_resumes_and_brings_back_the_best_run(data, tmp_path, capsys):
    root, back = tmp_path / "sweep", tmp_path / "out"
    argv = ["--root", str(root), "--data", str(data), "--device", "cpu", "--bring-back", str(back),
            "--run", f"slow: {_run_args('--lr', '1e-9', '--head-lr', '1e-9')}", "--run", f"fast: {_run_args()}"]
    assert S.main(argv + ["--time-limit", "0"]) == 1  # stopped before any step
    summary = json.loads((back / "summary.json").read_text())
    assert summary["picked"] is None and all(r["state"].startswith("stopped") for r in summary["runs"].values())
    assert S.main(argv + ["--time-limit", "3600"]) == 0
    summary = json.loads((back / "summary.json").read_text())
    runs = summary["runs"]
    assert all(r["state"] == "finished" and r["step"] == 3 for r in runs.values())
    best = max(runs, key=lambda n: runs[n]["best_score"])
    assert summary["picked"] == best
    assert P.join([back], tmp_path / "here") == {"best": []}
    assert (tmp_path / "here" / "best.pt").read_bytes() == (root / best / "best.pt").read_bytes()
    assert json.loads((tmp_path / "here" / "run_config.json").read_text())["args"]["out"] == str(root / best)
    with tarfile.open(back / "logs.tar.gz") as tar:
        assert {"fast/selection.jsonl", "slow/train.log", "fast/run_config.json"} <= set(tar.getnames())
    assert len(list(back.iterdir())) <= 8 and all(f.stat().st_size <= 16 * 2**20 for f in back.iterdir())


@pytest.mark.parametrize("spec, says", [("nocolon", "NAME: ARGS"), ("a b: --lr 1", "NAME: ARGS"),
                                        ("a: --device cpu", "set by the sweep"), ("a: --out=x", "set by the sweep")])
def test_a_malformed_run_is_refused(spec, says):
    with pytest.raises(SystemExit, match=says):
        S.parse_run(spec)


def _commands(text):
    """The shell commands of the markdown's code blocks, continuation lines joined."""
    import re

    blocks = re.findall(r"```sh\n(.*?)```", text, re.S)
    lines = "\n".join(blocks).replace("\\\n", " ").splitlines()
    return [part.strip() for line in lines for part in re.split(r"&&", line) if part.strip()]


def test_the_gpu_session_commands_use_options_the_scripts_have():
    import shlex

    import train_nli_judge as T

    commands = _commands((REPO / "training" / "gpu_session.md").read_text())
    checked = set()
    for cmd in commands:
        words = shlex.split(cmd.split("#")[0].replace('"$OUT"', "OUT").replace('"$files_at"', "FILES"))
        script = next((w for w in words if w.startswith("training/") and w.endswith(".py")), None)
        if script is None:
            if "pytest" in words:
                assert all((REPO / w).is_file() for w in words if w.startswith("tests/")), cmd
            continue
        argv = words[words.index(script) + 1:]
        if script.endswith("gpu_sweep.py"):
            args = S.parser().parse_args(argv)
            for name, run_args in map(S.parse_run, args.run):
                T.parse_args(["--out", name, *run_args])  # every option of every run exists
        elif script.endswith("pieces.py"):
            P.parser().parse_args(argv)
        elif script.endswith("export_nli_judge.py"):
            assert {w for w in argv if w.startswith("--")} <= {"--run", "--out", "--ckpt", "--data"}, cmd
        checked.add(script.split("/")[-1])
    assert checked == {"gpu_sweep.py", "pieces.py", "export_nli_judge.py"}
