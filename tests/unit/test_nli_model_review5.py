"""predict_logits builds each batch with a few array conversions, with logits identical to row-by-row tensors."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
torch = pytest.importorskip("torch", reason="the embedded NLI model needs torch")

from server.backends.judges.nli_model import DEFAULT_MODEL_DIR, NliModel  # noqa: E402

if not (DEFAULT_MODEL_DIR / "config.json").exists():
    pytest.skip("models/nli-judge is not in this checkout", allow_module_level=True)

PAIRS = [
    ("Aspirin inhibits cyclooxygenase.", "Aspirin inhibits COX enzymes."),
    ("The Eiffel Tower is in Paris, France. " * 6, "The Eiffel Tower is in Berlin."),
    ("Water boils at 100 degrees Celsius at sea level.", "Water boils at 50 degrees."),
    ("Insulin is produced by the pancreas.", "Insulin comes from the liver."),
    ("x", "y"),
]


@pytest.fixture(scope="module")
def model() -> NliModel:
    return NliModel.load(quantize=False)


def _row_by_row(model: NliModel, pairs, batch_size):
    """Reference: every row of a batch as its own tensor (the construction the batching replaced)."""
    ids, types = model._encode(pairs)
    out = np.zeros((len(pairs), 3), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(pairs), batch_size):
            idx = list(range(start, min(start + batch_size, len(pairs))))
            width = max(len(ids[i]) for i in idx)
            width = min(-(-width // model.pad_multiple) * model.pad_multiple, model.max_length)
            input_ids = torch.zeros((len(idx), width), dtype=torch.long)
            token_types = torch.zeros_like(input_ids)
            mask = torch.zeros_like(input_ids)
            for row, i in enumerate(idx):
                k = len(ids[i])
                input_ids[row, :k] = torch.tensor(ids[i], dtype=torch.long)
                token_types[row, :k] = torch.tensor(types[i], dtype=torch.long)
                mask[row, :k] = 1
            out[idx] = model._model(input_ids=input_ids, token_type_ids=token_types, attention_mask=mask).logits.numpy()
    return out


def test_batch_arrays_give_the_same_logits_as_row_by_row_tensors(model):
    got = model.predict_logits(PAIRS, batch_size=len(PAIRS))
    order = sorted(range(len(PAIRS)), key=lambda i: len(model._encode([PAIRS[i]])[0][0]))
    want = _row_by_row(model, [PAIRS[i] for i in order], batch_size=len(PAIRS))
    np.testing.assert_array_equal(got[order], want)


def test_no_tensor_is_built_per_row(model, monkeypatch):
    calls = []
    real = torch.tensor
    monkeypatch.setattr(torch, "tensor", lambda *a, **k: calls.append(1) or real(*a, **k))
    model.predict_logits(PAIRS * 8, batch_size=64)
    assert len(calls) <= 3  # per batch at most a constant, never one per row
