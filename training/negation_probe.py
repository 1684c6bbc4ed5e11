#!/usr/bin/env python
"""How a judge checkpoint handles negation: macro-F1 on the selection slice of train as it is and with every claim
the negation rule applies to negated (labels flipped as logic requires; ``train_nli_judge.negation_rows``).

Reads only train.jsonl.gz (the selection slice); prints one JSON line per checkpoint::

    .venv/bin/python training/negation_probe.py runs/nli-v1/best-step2400.pt runs/nli-neg/best.pt
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import train_nli_judge as T  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoints", nargs="+", help="training checkpoints (best.pt, best-step<N>.pt)")
    p.add_argument("--data", default=str(T.DEFAULT_DATA))
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoTokenizer

    torch.set_num_threads(args.threads)
    rows = T.read_train_rows(args.data)
    base = T.base_model_dir()
    tokenizer = AutoTokenizer.from_pretrained(base)
    by_version: dict = {}  # each checkpoint is probed on the selection slice of the slices it was trained with

    def encoded_for(version: int) -> dict:
        if version not in by_version:
            selection = [r for r in T.split_slices(rows, version)["selection"] if r["source"] in T.DEFAULT_SOURCES]
            negated = T.negation_rows(selection, 1.0, 0)
            by_version[version] = {"selection": T.Encoded(selection, tokenizer, 256),
                                   "negated": T.Encoded(negated, tokenizer, 256)}
        return by_version[version]

    for path in args.checkpoints:
        ck = T.load_checkpoint(path, "negation_probe")
        model = T.build_model(base)
        model.load_state_dict(ck["weights"], strict=False)
        encoded = encoded_for(ck.get("slices", 1))
        out = {"checkpoint": path, "negated_rows": len(encoded["negated"].rows)}
        for name, enc in encoded.items():
            res = T.evaluate(model, enc, autocast=True)
            out[name] = {k: round(v if k == "score" else v["macro_f1"], 4) for k, v in res.items()}
        print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
