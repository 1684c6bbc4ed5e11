"""The embedded NLI judge on a CUDA device, in each precision it offers there (skipped without a GPU).

On CUDA the reduced-precision path stores the encoder in bf16/fp16 and runs torch's SDPA attention; the
matrix kernels cuBLAS picks depend on the batch's shape, so a row alone and in a batch are compared within
a tolerance here (on CPU they are bit-identical: test_nli_model.py). Run on a GPU machine with
``python -m pytest tests/unit/test_nli_cuda.py -s`` (the measured differences are printed).
"""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")

from server.backends.judges.nli_model import NliModel  # noqa: E402
from tests.unit.test_nli_model import PAIRS as SHARED_PAIRS  # noqa: E402

PAIRS = [
    *SHARED_PAIRS,  # the CPU tests' pairs, plus two medical ones
    ("Metformin lowers hepatic glucose production and is first-line therapy for type 2 diabetes.",
     "Metformin raises hepatic glucose production."),
    ("Penicillin was discovered by Alexander Fleming in 1928.", "Fleming discovered penicillin."),
]


@pytest.fixture(scope="module")
def cpu_fp32() -> np.ndarray:
    return NliModel.load(quantize=False, dtype="float32").predict_proba(PAIRS)


# (dtype, most |p_cuda - p_cpu_fp32|, most |p_alone - p_batched|)
CASES = [("float32", 1e-4, 1e-5), ("bfloat16", 0.05, 1e-2), ("float16", 0.02, 1e-2)]


@pytest.mark.parametrize("dtype,vs_cpu,vs_batch", CASES)
def test_cuda_precision_agrees_with_cpu_fp32_and_across_batches(cpu_fp32, dtype, vs_cpu, vs_batch):
    model = NliModel.load(device="cuda", quantize=False, dtype=dtype)
    batched = model.predict_proba(PAIRS)
    alone = np.concatenate([model.predict_proba([pair]) for pair in PAIRS])
    reordered = model.predict_proba(PAIRS[::-1], batch_size=3)[::-1]
    cpu_gap = float(np.abs(batched - cpu_fp32).max())
    batch_gap = float(max(np.abs(alone - batched).max(), np.abs(reordered - batched).max()))
    print(f"\n{dtype} on {torch.cuda.get_device_name()}: max |cuda - cpu fp32| {cpu_gap:.2e}, "
          f"max |alone or reordered - batched| {batch_gap:.2e}")
    np.testing.assert_allclose(batched.sum(axis=1), 1.0, atol=1e-6)
    assert (batched.argmax(axis=1) == cpu_fp32.argmax(axis=1)).all()
    assert cpu_gap < vs_cpu
    assert batch_gap < vs_batch
