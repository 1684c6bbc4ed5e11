"""Fast tests of the embedded NLI judge's inference core (the shipped models/nli-judge)."""

from __future__ import annotations

import json
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from server.backends.judges.nli_model import DEFAULT_MODEL_DIR, LABELS, NliModel, NliModelError  # noqa: E402

SHIPPED = Path(DEFAULT_MODEL_DIR)
pytestmark = pytest.mark.skipif(
    not (SHIPPED / "config.json").exists(), reason="the NLI judge artefact has not been exported yet"
)

ASPIRIN = "Aspirin irreversibly inhibits cyclooxygenase."
PAIRS = [
    (ASPIRIN, "Aspirin inhibits cyclooxygenase."),
    ("The trial enrolled 120 adults with type 2 diabetes and followed them for two years. " * 6,
     "The trial followed patients for two years."),
    ("Paris is the capital of France.", "Paris is not the capital of France."),
    ("A man is playing a guitar on stage.", "A woman is sleeping."),
    ("Vitamin D deficiency is common in northern countries during winter.",
     "The moon orbits the earth."),
    ("Masks reduce transmission.", "Masks"),
]


@pytest.fixture(scope="module")
def model() -> NliModel:
    return NliModel.load(quantize=False)


def test_config_declares_label_order_and_temperature():
    cfg = json.loads((SHIPPED / "config.json").read_text())
    assert tuple(cfg["labels"]) == LABELS == ("supported", "contradicted", "not_enough_info")
    assert cfg["temperature"] > 0
    assert cfg["max_length"] >= 128
    assert cfg["base_weights_sha256"] and cfg["weights_sha256"] and cfg["training"]["data_sha256"]
    size = sum(f.stat().st_size for f in SHIPPED.iterdir() if f.is_file())
    assert size <= 25 * 1024 * 1024


def test_shapes_and_rows_sum_to_one(model):
    probs = model.predict_proba(PAIRS)
    assert probs.shape == (len(PAIRS), 3)
    assert np.all(probs >= 0) and np.all(probs <= 1)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    assert model.predict_proba([]).shape == (0, 3)


def test_order_restored_under_length_bucketing(model):
    one_by_one = np.vstack([model.predict_proba([p], batch_size=1) for p in PAIRS])
    perm = [3, 1, 5, 0, 4, 2]
    batched = model.predict_proba([PAIRS[i] for i in perm], batch_size=4)
    np.testing.assert_allclose(batched, one_by_one[perm], atol=2e-4)


def test_obvious_pairs(model):
    probs = model.predict_proba([
        (ASPIRIN, "Aspirin inhibits cyclooxygenase."),
        ("Paris is the capital of France.", "Paris is not the capital of France."),
    ])
    assert LABELS[int(probs[0].argmax())] == "supported"
    assert LABELS[int(probs[1].argmax())] == "contradicted"


def test_model_id_names_weights(model):
    cfg = json.loads((SHIPPED / "config.json").read_text())
    assert model.model_id.startswith(cfg["name"])
    assert cfg["weights_sha256"][:12] in model.model_id
    assert model.name == model.model_id


def test_temperature_file_is_honoured(model, tmp_path):
    cfg = json.loads((SHIPPED / "config.json").read_text())
    cfg["temperature"] = 2.5
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    shutil.copy(SHIPPED / cfg["weights_file"], tmp_path / cfg["weights_file"])
    hot = NliModel.load(str(tmp_path), quantize=False)
    assert hot.temperature == 2.5
    logits = model.predict_logits(PAIRS[:3]).astype(np.float64) / 2.5
    expected = np.exp(logits - logits.max(axis=1, keepdims=True))
    expected /= expected.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(hot.predict_proba(PAIRS[:3]), expected, atol=1e-5)


def test_thread_pool_calls_agree_with_serial(model):
    serial = model.predict_proba(PAIRS)
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda _: model.predict_proba(PAIRS), range(4)))
    for r in results:
        np.testing.assert_allclose(r, serial, atol=2e-4)


def test_int8_model(model):
    q = NliModel.load(quantize=True)
    assert q.quantized and q.model_id.endswith("+int8")
    probs = q.predict_proba(PAIRS[:2])
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    assert LABELS[int(probs[0].argmax())] == "supported"


def test_bad_artefacts_are_rejected(tmp_path):
    with pytest.raises(NliModelError):
        NliModel.load(str(tmp_path))
    cfg = json.loads((SHIPPED / "config.json").read_text())
    cfg["labels"] = list(reversed(cfg["labels"]))
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(NliModelError):
        NliModel.load(str(tmp_path))


def test_weights_that_do_not_match_their_config_do_not_load_under_its_name(tmp_path):
    cfg = json.loads((SHIPPED / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    data = bytearray((SHIPPED / cfg["weights_file"]).read_bytes())
    data[-1] ^= 0x01  # another model's weights, or a copy cut short and padded: the config no longer names them
    (tmp_path / cfg["weights_file"]).write_bytes(bytes(data))
    with pytest.raises(NliModelError, match="does not match .*config.json"):
        NliModel.load(str(tmp_path))


def test_bfloat16_stays_close_to_fp32_and_is_batch_invariant(model):
    bf16 = NliModel.load(quantize=False, dtype="bfloat16")
    assert bf16.model_id.endswith("+bf16") and bf16.batch_invariant and bf16.pad_multiple > 1
    full = model.predict_proba(PAIRS)
    reduced = bf16.predict_proba(PAIRS)
    assert np.abs(reduced - full).max() < 0.05  # 8 mantissa bits: close, not equal
    assert (reduced.argmax(axis=1) == full.argmax(axis=1)).all()
    alone = np.concatenate([bf16.predict_proba([pair]) for pair in PAIRS])
    np.testing.assert_array_equal(alone, reduced)  # rows padded by their own length: exact in any batch
    np.testing.assert_array_equal(bf16.predict_proba(PAIRS[::-1], batch_size=2)[::-1], reduced)
    with pytest.raises(ValueError, match="exclude"):
        NliModel.load(quantize=True, dtype="bfloat16")
    with pytest.raises(ValueError, match="CUDA"):
        NliModel.load(quantize=False, dtype="float16")


def test_fixed_row_blocks_make_a_bfloat16_product_batch_invariant():
    """Where oneDNN uses AMX the split of a bf16 product's reduction depends on its row count (BERT's 1536-wide
    output projection: 57 to ~500 rows summed differently from fewer or more), so a row's result moved with its
    batch; in fixed blocks each row comes out the same whatever the rows beside it and however many."""
    import torch

    from server.backends.judges.nli_model import fixed_row_blocks

    torch.manual_seed(0)
    inner = torch.nn.Linear(1536, 384).to(torch.bfloat16)
    blocked = fixed_row_blocks(inner, rows=128)
    x = torch.randn(700, 1536).to(torch.bfloat16)
    with torch.inference_mode():
        alone = torch.cat([blocked(x[i:i + 1]) for i in range(300)])
        for m in (1, 60, 128, 300, 700):
            out = blocked(x[:m])
            assert out.shape == (m, 384)
            torch.testing.assert_close(out, inner(x[:m]), atol=0.1, rtol=0.02)  # the same product, rounded
            assert torch.equal(out[:300], alone[:m])  # unblocked, rows 60, 128 and 300 differed here (AMX)
        perm = torch.randperm(300)
        assert torch.equal(blocked(x[:300][perm]), blocked(x[:300])[perm])
        assert torch.equal(blocked(x[:300].reshape(3, 100, 1536)).reshape(300, 384), blocked(x[:300]))


def test_fixed_row_blocks_are_used_only_where_onednn_may_use_amx(monkeypatch):
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from server.backends.judges import nli_model

    monkeypatch.setattr(nli_model, "cpu_flags", lambda: frozenset({"avx512_bf16", "amx_bf16"}))
    for isa, amx in ((None, True), ("ALL", True), ("avx512_core_amx", True), ("AVX512_CORE_BF16", False)):
        if isa is None:
            monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
        else:
            monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", isa)
        assert nli_model.onednn_amx() is amx, isa
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.setattr(nli_model, "cpu_flags", lambda: frozenset({"avx512_bf16"}))
    assert not nli_model.onednn_amx()

    def tiny():
        torch.manual_seed(0)
        return BertForSequenceClassification(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2,
                                                        num_attention_heads=2, intermediate_size=32, num_labels=3))

    def blocked(model):
        return sum(type(m).__name__ == "_FixedRows" for m in model.modules())

    ids = torch.tensor([[1, 5, 7, 2, 9, 2, 0, 0]])
    mask = (ids > 0).long()
    reference = tiny().eval()
    with torch.inference_mode():
        expected = reference(input_ids=ids, attention_mask=mask).logits
    for amx, count in ((True, 2 * 6), (False, 0)):  # six Linear layers per BERT layer
        monkeypatch.setattr(nli_model, "onednn_amx", lambda amx=amx: amx)
        model = nli_model.to_precision(tiny().eval(), "bfloat16")
        assert blocked(model) == count
        with torch.inference_mode():
            torch.testing.assert_close(model(input_ids=ids, attention_mask=mask).logits, expected,
                                       atol=0.05, rtol=0.05)
    assert blocked(nli_model.to_precision(tiny().eval(), "float32")) == 0


def test_auto_precision_is_bfloat16_only_on_a_cpu_that_has_it(monkeypatch):
    from server.backends.judges import nli_model

    monkeypatch.setattr(nli_model, "native_bf16", lambda: True)
    assert nli_model.resolve_dtype("auto") == "bfloat16"
    assert nli_model.resolve_dtype("auto", quantize=True) == "float32"
    assert nli_model.resolve_dtype("auto", device="cuda") == "float32"
    assert nli_model.resolve_dtype("float32") == "float32"
    monkeypatch.setattr(nli_model, "native_bf16", lambda: False)
    assert nli_model.resolve_dtype("auto") == "float32"


def test_an_explicit_precision_that_is_slower_than_auto_here_is_named_at_load(monkeypatch, caplog):
    from server.backends.judges import nli_model

    monkeypatch.setattr(nli_model, "native_bf16", lambda: True)
    assert "CUDA" in nli_model.precision_advice("bfloat16", "cuda:0")
    assert "CUDA" in nli_model.precision_advice("float16", "cuda")
    assert nli_model.precision_advice("float32", "cuda") is None
    assert nli_model.precision_advice("bfloat16", "cpu") is None  # the fast path on this kind of CPU
    monkeypatch.setattr(nli_model, "native_bf16", lambda: False)
    assert "emulated" in nli_model.precision_advice("bfloat16", "cpu")
    assert nli_model.precision_advice("float32", "cpu") is None
    with caplog.at_level("WARNING", logger="kgverify.judge"):
        NliModel.load(quantize=False, dtype="bfloat16")  # a real load on this CPU, told it has no bf16
    assert any("emulated" in r.getMessage() for r in caplog.records)


def test_reduced_precision_settings_are_checked_at_startup():
    from pydantic import ValidationError

    from server.config import JudgeSettings

    assert JudgeSettings().nli_dtype == "auto" and JudgeSettings(nli_int8=True).nli_dtype == "auto"
    assert JudgeSettings(nli_dtype="bfloat16").nli_dtype == "bfloat16"
    with pytest.raises(ValidationError, match="exclude each other"):
        JudgeSettings(nli_int8=True, nli_dtype="bfloat16")
    with pytest.raises(ValidationError, match="CUDA"):
        JudgeSettings(nli_dtype="float16")
    assert JudgeSettings(nli_dtype="float16", nli_device="cuda:0").nli_dtype == "float16"


def test_counting_a_long_text_logs_no_sequence_length_warning(model, caplog):
    with caplog.at_level("WARNING"):
        assert model.count_tokens(["serum magnesium " * 600])[0] > model.max_length
    assert not [r for r in caplog.records if "sequence length" in r.getMessage()]
