"""Device settings: a misspelt device fails at startup, an unavailable one fails the model's load by name."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from server.backends.registry import require_device
from server.config import EmbedderSettings, JudgeSettings, LmSettings
from server.pipeline.errors import BackendNotConfiguredError, FailedPreconditionError


@pytest.mark.parametrize("device", ["cpu", "cuda", "cuda:1", "mps", "xpu:0"])
def test_torch_device_names_are_accepted(device):
    assert JudgeSettings(nli_device=device).nli_device == device
    assert EmbedderSettings(device=device).device == device
    assert LmSettings(device=device).device == device


@pytest.mark.parametrize("device", ["nope", "gpu", "cuda:", "CUDA", "cuda:x", " cpu"])
def test_misspelt_devices_fail_at_startup(device):
    for make in (lambda: JudgeSettings(nli_device=device), lambda: EmbedderSettings(device=device),
                 lambda: LmSettings(device=device)):
        with pytest.raises(ValidationError, match="not a torch device"):
            make()


def test_auto_is_only_for_the_lm():
    assert LmSettings(device="auto").device == "auto"
    with pytest.raises(ValidationError, match="auto is for KGV_LM__DEVICE only"):
        JudgeSettings(nli_device="auto")
    with pytest.raises(ValidationError, match="auto is for KGV_LM__DEVICE only"):
        EmbedderSettings(device="auto")


def test_an_unavailable_cuda_device_fails_by_setting_name():
    torch = pytest.importorskip("torch")
    require_device("cpu", "KGV_JUDGE__NLI_DEVICE")  # never checks torch
    if torch.cuda.is_available() and torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    with pytest.raises(FailedPreconditionError, match=r"KGV_JUDGE__NLI_DEVICE=cuda:7, but torch") as caught:
        require_device("cuda:7", "KGV_JUDGE__NLI_DEVICE")
    # Not "not configured": that error would let the embedded judge fall back to the similarity baseline.
    assert not isinstance(caught.value, BackendNotConfiguredError)
