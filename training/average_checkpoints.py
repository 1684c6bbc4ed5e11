#!/usr/bin/env python
"""Weight-space averages of NLI judge checkpoints, chosen on the selection slice.

Fine-tuned checkpoints that share an ancestor (a run's later epochs, or a second stage started with
``train_nli_judge.py --init``) can be averaged parameter by parameter; the average often keeps what each
got right on different sources. This script scores each mixing weight on the *selection* slice carved
from train (never dev), writes the best average as a checkpoint that ``export_nli_judge.py`` reads, and
prints the scores as JSON.

Example::

    .venv/bin/python training/average_checkpoints.py --out runs/nli-soup \\
        --ckpt runs/nli-v1/best-step2400.pt --ckpt runs/nli-v1m/best-step540.pt --alphas 0,0.25,0.5,0.75,1
    .venv/bin/python training/export_nli_judge.py --run runs/nli-soup --out /tmp/candidate

With two checkpoints A and B the candidates are (1 - alpha) * A + alpha * B for each alpha; alpha 0
and 1 score the checkpoints themselves, in the same run.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train_nli_judge as T  # noqa: E402


def mix(states: Sequence[dict], alpha: float) -> dict:
    """(1 - alpha) * states[0] + alpha * states[1], parameter by parameter (fp32)."""
    a, b = states
    if set(a) != set(b):
        raise SystemExit(f"the checkpoints train different parameters: {sorted(set(a) ^ set(b))[:3]} ...")
    out = {}
    for name in a:
        if a[name].shape != b[name].shape:
            raise SystemExit(f"shape mismatch for {name}: {tuple(a[name].shape)} vs {tuple(b[name].shape)}")
        out[name] = (1.0 - alpha) * a[name].float() + alpha * b[name].float()
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", action="append", required=True, help="a checkpoint (give exactly two)")
    p.add_argument("--alphas", default="0,0.25,0.5,0.75,1", help="weights of the second checkpoint to score")
    p.add_argument("--out", required=True, help="run directory for the chosen average (best.pt, run_config.json)")
    p.add_argument("--data", default=str(T.DEFAULT_DATA), help="train.jsonl.gz (for the selection slice)")
    p.add_argument("--max-length", type=int, default=None,
                   help="tokens per pair (default: the length the first checkpoint was trained with)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    if len(args.ckpt) != 2:
        raise SystemExit("give exactly two --ckpt")
    alphas = [float(a) for a in args.alphas.split(",")]
    if not alphas or any(not 0.0 <= a <= 1.0 for a in alphas):
        raise SystemExit("--alphas: numbers between 0 and 1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch
    from transformers import AutoTokenizer

    torch.set_num_threads(args.threads)
    rows = T.read_train_rows(args.data)
    data_sha = T.file_sha256(args.data)
    checkpoints = [T.load_checkpoint(c, "--ckpt") for c in args.ckpt]
    for path, ck in zip(args.ckpt, checkpoints):
        if ck.get("data_sha256") not in (None, data_sha):
            raise SystemExit(f"{path} was trained on other data than --data")
    if args.max_length is None:
        args.max_length = int(checkpoints[0].get("max_length") or 256)
    versions = {ck.get("slices", 1) for ck in checkpoints}
    if len(versions) > 1:  # each was selected on slices the other may have trained on
        raise SystemExit(f"the checkpoints were trained with different slices (versions {sorted(versions)})")
    slice_version = versions.pop()
    run_configs = [json.loads((Path(c).parent / "run_config.json").read_text()) for c in args.ckpt]
    bases = {rc["base_weights_sha256"] for rc in run_configs if rc.get("base_weights_sha256")}
    if len(bases) > 1:
        raise SystemExit("the checkpoints were trained from different base models")
    sources = sorted(set().union(*(T.run_sources(rc) for rc in run_configs)))

    sel_rows = [r for r in T.split_slices(rows, slice_version)["selection"] if r["source"] in sources]
    if not sel_rows:  # no mixing weight could be scored
        raise SystemExit(T.empty_slice_message(args.data, "selection", sources))
    enc = T.Encoded(sel_rows, AutoTokenizer.from_pretrained(T.base_model_dir()), args.max_length)
    model = T.build_model(T.base_model_dir())
    states = [ck["weights"] for ck in checkpoints]
    t0 = time.time()
    scores = []
    for alpha in alphas:
        model.load_state_dict(mix(states, alpha), strict=False)
        res = T.evaluate(model, enc, autocast=True)
        scores.append({"alpha": alpha, "score": res["score"],
                       **{s: round(v["macro_f1"], 4) for s, v in res.items() if isinstance(v, dict)}})
        print(json.dumps(scores[-1]), file=sys.stderr)
    best = max(scores, key=lambda s: s["score"])

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"average_of": args.ckpt, "alpha": best["alpha"], "selection": best,
            "step": f"average(alpha={best['alpha']})"}
    T.atomic_torch_save({"weights": mix(states, best["alpha"]), "meta": meta, "data_sha256": data_sha,
                         "slices": slice_version,
                         "labels": list(T.LABELS), "max_length": args.max_length}, out / "best.pt")
    run_config = {**run_configs[0], "args": {**run_configs[0]["args"], "sources": ",".join(sources)},
                  "trained_sources": sources, "source_licences": {s: T.SOURCE_LICENCES.get(s) for s in sources},
                  "average_of": [{"ckpt": c, "run_args": rc["args"]} for c, rc in zip(args.ckpt, run_configs)],
                  "alpha": best["alpha"]}
    T.atomic_write_text(out / "run_config.json", json.dumps(run_config, indent=2))
    print(json.dumps({"out": str(out / "best.pt"), "best": best, "scores": scores,
                      "seconds": round(time.time() - t0, 1)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
