#!/usr/bin/env python
"""bf16 judge on an AMX CPU: fixed row blocks of several sizes vs no blocks vs oneDNN capped (prints JSON).

Each configuration runs in its own process (oneDNN reads ``ONEDNN_MAX_CPU_ISA`` once), one after the other,
``--rounds`` times interleaved, on the same dev pairs (shuffled with a fixed seed): bulk pairs/s through
``predict_logits`` in batches of 32, the mean time of a lone pair (one pair per call), and whether every
pair's logits were the same alone and in the batches (the property the blocks exist for). Bench only.

    .venv/bin/python bench/bf16_row_blocks.py --pairs 600 --rounds 2 > bench/results/bf16_row_blocks.json
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DEV = REPO.parent / "shared" / "data" / "nli" / "dev.jsonl.gz"


def one(isa: str, row_block: int, n_pairs: int, lone: int, dev: str) -> dict:
    """Measure one configuration in this process (row_block 0: no blocks)."""
    os.environ["ONEDNN_MAX_CPU_ISA"] = isa
    sys.path.insert(0, str(REPO))
    import numpy as np

    import server.backends.judges.nli_model as nm

    if row_block:
        nm.fixed_row_blocks.__defaults__ = (row_block,)
    else:
        nm.onednn_amx = lambda: False
    rows = [json.loads(line) for line in gzip.open(dev, "rt", encoding="utf-8")]
    random.Random(0).shuffle(rows)
    pairs = [(r["premise"], r["hypothesis"]) for r in rows[:n_pairs]]
    model = nm.NliModel.load(quantize=False, dtype="bfloat16")
    model.predict_logits(pairs[:64])  # warm-up
    t = time.perf_counter()
    batched = model.predict_logits(pairs, batch_size=32)
    bulk = len(pairs) / (time.perf_counter() - t)
    t = time.perf_counter()
    alone = np.concatenate([model.predict_logits([p]) for p in pairs[:lone]])
    lone_ms = (time.perf_counter() - t) / lone * 1000
    return {"isa": isa, "row_block": row_block if nm.onednn_amx() else None, "bulk_pairs_per_s": round(bulk, 1),
            "lone_pair_ms": round(lone_ms, 1),
            "pairs_differing_alone_vs_batched": int((np.abs(batched[:lone] - alone).max(axis=1) > 0).sum()),
            "pairs_compared": lone}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dev", default=str(DEFAULT_DEV))
    p.add_argument("--pairs", type=int, default=600)
    p.add_argument("--lone", type=int, default=60, help="pairs also scored one per call")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--blocks", default="0,96,128,256", help="row-block sizes (0 = no blocks) with AMX on")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        isa, block = args.child.split(":")
        print(json.dumps(one(isa, int(block), args.pairs, args.lone, args.dev)))
        return 0
    configs = [("ALL", int(b)) for b in args.blocks.split(",")] + [("AVX512_CORE_BF16", 0)]
    runs = []
    for _ in range(args.rounds):
        for isa, block in configs:
            out = subprocess.run([sys.executable, __file__, "--child", f"{isa}:{block}", "--pairs", str(args.pairs),
                                  "--lone", str(args.lone), "--dev", args.dev],
                                 capture_output=True, text=True, check=True)
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(json.dumps(runs[-1]), file=sys.stderr)
    print(json.dumps({"pairs": args.pairs, "rounds": args.rounds, "cpu_count": os.cpu_count(),
                      "loadavg_at_end": [round(x, 2) for x in os.getloadavg()], "runs": runs}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
