"""The judge's training script on a chosen device: --device is checked before any data is read, a CUDA run's
checkpoints hold CPU tensors (a GPU run resumes or exports on a CPU), and the device may change on resume."""

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


@pytest.mark.parametrize("device, says", [("mps", "training runs on cpu or cuda"), ("tpu", "is not a torch device"),
                                          ("cuda:x", "is not a torch device"),
                                          ("cuda:99", "CUDA device")])
def test_an_unusable_device_stops_the_run_before_it_starts(tmp_path, device, says):
    with pytest.raises(SystemExit) as info:
        T.main(_args(tmp_path / "missing.jsonl.gz", tmp_path / "run", "--device", device))
    assert says in str(info.value) and f"{device}" in str(info.value)
    assert not (tmp_path / "run" / "last.pt").exists()


def test_cpu_named_or_not_trains_the_same_weights_and_a_run_may_resume_on_another_device(data, tmp_path):
    import torch

    T.main(_args(data, tmp_path / "default", "--max-steps", "2"))
    T.main(_args(data, tmp_path / "named", "--max-steps", "2", "--device", "cpu"))
    a, b = _last(tmp_path / "default")["weights"], _last(tmp_path / "named")["weights"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert all(t.device.type == "cpu" for t in a.values())
    T.main(_args(data, tmp_path / "default", "--max-steps", "2", "--resume", "--device", "cpu"))  # not refused
    assert _last(tmp_path / "default")["step"] == 2


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA device")
def test_a_cuda_run_checkpoints_cpu_weights_and_its_gpu_rng(data, tmp_path):
    T.main(_args(data, tmp_path / "gpu", "--max-steps", "2", "--device", "cuda"))
    ck = _last(tmp_path / "gpu")
    assert all(t.device.type == "cpu" for t in ck["weights"].values()) and ck["cuda_rng"] is not None
