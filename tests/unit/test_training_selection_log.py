"""The selection log (selection.jsonl) holds one line per evaluation: none twice when an epoch ends on an evaluation
step, none repeated when a run killed between an evaluation and its checkpoint is resumed."""

from __future__ import annotations

import json
import sys

import pytest

from tests.conftest import REPO
from tests.unit.test_training_review import _args, _checkcovid, _last, _write

sys.path.insert(0, str(REPO / "training"))
import train_nli_judge as T  # noqa: E402


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return _write(tmp_path_factory.mktemp("nli") / "train.jsonl.gz", _checkcovid(40))


def _logged_steps(out):
    return [json.loads(line)["step"] for line in (out / "selection.jsonl").read_text().splitlines()]


def test_an_epoch_ending_on_an_evaluation_step_is_evaluated_once(data, tmp_path):
    out = tmp_path / "run"
    T.main(_args(data, out, "--eval-every", "1", "--epochs", "1"))
    steps = _logged_steps(out)
    assert steps == sorted(set(steps)) and steps[-1] == _last(out)["step"]
    assert [h["step"] for h in _last(out)["history"]] == steps


def test_a_resumed_run_logs_each_evaluation_once(data, tmp_path, monkeypatch):
    out = tmp_path / "run"
    loss, calls = T.nli_loss, {"n": 0}

    def killed(*a):
        calls["n"] += 1
        if calls["n"] == 4:  # steps 1-3 evaluated, the last checkpoint at step 2
            raise KeyboardInterrupt
        return loss(*a)

    monkeypatch.setattr(T, "nli_loss", killed)
    with pytest.raises(KeyboardInterrupt):
        T.main(_args(data, out, "--eval-every", "1", "--max-steps", "5"))
    monkeypatch.setattr(T, "nli_loss", loss)
    assert _last(out)["step"] == 2 and _logged_steps(out) == [1, 2, 3]
    T.main(_args(data, out, "--eval-every", "1", "--max-steps", "5", "--resume"))
    assert _logged_steps(out) == [1, 2, 3, 4, 5]
