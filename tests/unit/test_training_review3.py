"""The judge's training script: what --seed controls (smoke runs of a few steps, tiny data)."""

from __future__ import annotations

import sys

import pytest

from tests.conftest import REPO
from tests.unit.test_training_review import _args, _checkcovid, _last, _write

sys.path.insert(0, str(REPO / "training"))
import train_nli_judge as T  # noqa: E402


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return _write(tmp_path_factory.mktemp("nli") / "train.jsonl.gz", _checkcovid())


def _weights(out):
    return _last(out)["weights"]


def _same(a, b):
    import torch

    return all(torch.equal(a[k], b[k]) for k in a)


def test_the_seed_sets_dropout_too(data, tmp_path, monkeypatch):
    # build_model seeds the head's init with 0, which reset the torch generator after --seed had set it: every
    # seed trained with the same dropout masks, so a seed sweep varied only the sampling
    plan = T.epoch_plan
    monkeypatch.setattr(T, "epoch_plan", lambda rows, lengths, seed, *a: plan(rows, lengths, 0, *a))  # same batches
    for name, seed in (("a", "13"), ("b", "13"), ("c", "14")):
        T.main(_args(data, tmp_path / name, "--max-steps", "2", "--seed", seed))
    assert _same(_weights(tmp_path / "a"), _weights(tmp_path / "b"))  # the same seed: the same run
    assert not _same(_weights(tmp_path / "a"), _weights(tmp_path / "c"))  # only dropout differs
