#!/usr/bin/env python
"""Benchmark of the embedded NLI judge on the NLI dev pairs (prints JSON on stdout).

Per source, with bootstrap 95% intervals: accuracy, macro-F1 and expected calibration
error (ECE, 15 equal-width bins, top-label confidence) of

* ``judge_fp32``  — the shipped judge (models/nli-judge), plain PyTorch fp32;
* ``judge_int8``  — the same with int8 dynamic quantization (unless ``--no-int8``);
* ``judge_bf16``  — the same in bfloat16 (unless ``--no-bf16``; see nli_model.to_precision);
* ``judge_fp16``  — the same in float16 (``--fp16``; CUDA only);
* ``baseline``    — no training: cosine similarity of all-MiniLM-L6-v2 sentence embeddings
  of premise and hypothesis, with thresholds fitted per source on a *train* slice
  (the selection + calibration slices of train.jsonl.gz; pooled for dev-only sources).

Binary sources (scifact, covidfact, wice: "contradicted"/"not_enough_info" mean "not
supported") are scored supported vs not-supported: predicted supported iff
P(supported) >= 0.5, confidence max(P(s), 1 - P(s)). Three-way sources use the argmax.
The bootstrap resamples units, not pairs: pairs that share a claim or a premise (a claim with its
supporting and refuting evidence, a premise with its counter-claims) are one unit, drawn together.
Throughput = pairs/s of ``predict_proba`` over all dev pairs as they are (max length 256,
batched, length-bucketed, tokenization included). Bench only: nothing here asserts timings.

    nice -n 19 .venv/bin/python bench/judge.py > bench/judge_results.json
    python bench/judge.py --device cuda --fp16 --no-baseline > bench/results/judge_cuda.json   # on a GPU
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import time
from pathlib import Path
from typing import Sequence

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "training"))

DEFAULT_DEV = REPO.parent / "shared" / "data" / "nli" / "dev.jsonl.gz"
DEFAULT_TRAIN = REPO.parent / "shared" / "data" / "nli" / "train.jsonl.gz"
LABELS = ("supported", "contradicted", "not_enough_info")
BINARY_SOURCES = frozenset({"scifact", "covidfact", "wice"})
GOALS = {"checkcovid": 0.75, "vitaminc": 0.80}
GOAL_ECE = 0.05
GOAL_MARGIN = 0.25
GOAL_PAIRS_PER_S = 150.0


def host_cpu_times() -> list[int] | None:
    """The host's cumulative CPU time counters (/proc/stat "cpu" line), or None where there is none."""
    try:
        with open("/proc/stat", encoding="ascii") as fh:
            return [int(x) for x in fh.readline().split()[1:9]]
    except (OSError, ValueError):
        return None


def pass_machine_share(wall_s: float, process_cpu_s: float, before, after) -> dict:
    """What one timed pass had of the machine: the cores this process used, and the shares of all CPU time
    that were stolen by the hypervisor (other guests) or busy in other processes."""
    out = {"process_cores": round(process_cpu_s / wall_s, 2) if wall_s > 0 else None}
    if before and after:
        d = [b - a for a, b in zip(before, after)]  # user nice system idle iowait irq softirq steal
        total = sum(d)
        if total > 0:
            ticks = os.sysconf("SC_CLK_TCK")
            busy = d[0] + d[1] + d[2] + d[5] + d[6]
            out["steal_share"] = round(d[7] / total, 3)
            out["others_busy_share"] = round(max(0.0, busy - process_cpu_s * ticks) / total, 3)
    return out


def eprint(*a) -> None:
    print(*a, file=sys.stderr, flush=True)


def read_jsonl_gz(path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def missing_data(paths) -> str | None:
    """The message for the first input file that is not there (the shared data lives outside the repository)."""
    for path in paths:
        if not Path(path).is_file():
            return (f"{path} not found: the benchmark reads the shared data set (../shared/data beside the "
                    "repository, see its README.md) or the file given on the command line")
    return None


# --------------------------------------------------------------------------- scoring
def targets(rows: Sequence[dict]):
    """Per row: y (class id in its scoring regime), K (2 or 3)."""
    import numpy as np

    y = np.array([(0 if r["label"] == "supported" else 1) if r["source"] in BINARY_SOURCES
                  else LABELS.index(r["label"]) for r in rows])
    k = np.array([2 if r["source"] in BINARY_SOURCES else 3 for r in rows])
    return y, k


def decisions_from_probs(probs, rows: Sequence[dict]):
    """(pred, conf) per row, binary sources on P(supported) >= 0.5."""
    import numpy as np

    probs = np.asarray(probs, dtype=np.float64)
    binary = np.array([r["source"] in BINARY_SOURCES for r in rows])
    ps = probs[:, 0]
    pred = np.where(binary, np.where(ps >= 0.5, 0, 1), probs.argmax(axis=1))
    conf = np.where(binary, np.maximum(ps, 1 - ps), probs.max(axis=1))
    return pred, conf


def macro_f1_np(y, pred, k: int) -> float:
    import numpy as np

    cm = np.bincount(y * k + pred, minlength=k * k).reshape(k, k)
    tp = np.diag(cm).astype(float)
    denom = cm.sum(0) + cm.sum(1)
    f1 = np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)
    present = cm.sum(1) > 0  # classes present in the gold labels of this (re)sample
    present |= cm.sum(0) > 0
    return float(f1[present].mean()) if present.any() else float("nan")


def ece_np(conf, correct, bins: int = 15) -> float:
    import numpy as np

    idx = np.clip(np.ceil(conf * bins).astype(int) - 1, 0, bins - 1)
    n = len(conf)
    sc = np.bincount(idx, weights=conf, minlength=bins)
    sa = np.bincount(idx, weights=correct.astype(float), minlength=bins)
    return float(np.abs(sc - sa).sum() / n) if n else float("nan")


def metrics(y, pred, conf, k: int) -> dict:
    correct = y == pred
    out = {"accuracy": float(correct.mean()), "macro_f1": macro_f1_np(y, pred, k)}
    out["ece"] = ece_np(conf, correct) if conf is not None else None
    return out


def units(rows: Sequence[dict]):
    """Bootstrap unit per row: rows sharing a hypothesis or a premise, directly or through others, are one unit."""
    import numpy as np

    parent: dict = {}

    def root(x):
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for r in rows:
        a, b = root(("h", r["hypothesis"])), root(("p", r["premise"]))
        parent[a] = b
    ids: dict = {}
    return np.array([ids.setdefault(root(("h", r["hypothesis"])), len(ids)) for r in rows], dtype=int)


def unit_resamples(unit_of, n_boot: int, rng) -> list:
    """Bootstrap samples (row positions) drawing whole units with replacement, as many units as there are."""
    import numpy as np

    order = np.argsort(unit_of, kind="stable")
    groups = np.split(order, np.flatnonzero(np.diff(unit_of[order])) + 1) if len(unit_of) else []
    return [np.concatenate([groups[g] for g in rng.integers(0, len(groups), len(groups))]) for _ in range(n_boot)]


def with_ci(point: dict, boots: list[dict]) -> dict:
    import numpy as np

    res = {}
    for key, val in point.items():
        if val is None:
            res[key] = None
            continue
        arr = np.array([b[key] for b in boots], dtype=float)
        lo, hi = np.nanpercentile(arr, [2.5, 97.5])
        res[key] = {"value": round(val, 4), "ci95": [round(float(lo), 4), round(float(hi), 4)]}
    return res


# --------------------------------------------------------------------------- baseline
def fit_thresholds(sim, y, k: int, grid: int = 60):
    """Best interval rule on similarity for macro-F1: binary t, or (t1, t2, labels low/mid/high)."""
    import itertools

    import numpy as np

    qs = np.unique(np.quantile(sim, np.linspace(0.0, 1.0, grid + 1)))
    if k == 2:
        best = (-1.0, None)
        for t in qs:
            pred = np.where(sim >= t, 0, 1)
            f = macro_f1_np(y, pred, 2)
            if f > best[0]:
                best = (f, {"t": float(t)})
        return best[1]
    best = (-1.0, None)
    for i, t1 in enumerate(qs):
        for t2 in qs[i:]:
            band = np.where(sim < t1, 0, np.where(sim < t2, 1, 2))
            for order in itertools.permutations(range(3)):
                pred = np.array(order)[band]
                f = macro_f1_np(y, pred, 3)
                if f > best[0]:
                    best = (f, {"t1": float(t1), "t2": float(t2), "labels": [LABELS[o] for o in order]})
    return best[1]


def apply_thresholds(sim, rule: dict, k: int):
    import numpy as np

    if k == 2:
        return np.where(sim >= rule["t"], 0, 1)
    band = np.where(sim < rule["t1"], 0, np.where(sim < rule["t2"], 1, 2))
    return np.array([LABELS.index(lab) for lab in rule["labels"]])[band]


def similarity(model, rows: Sequence[dict], batch_size: int = 64):
    import numpy as np

    prem = model.encode([r["premise"] for r in rows], batch_size=batch_size, normalize_embeddings=True,
                        convert_to_numpy=True, show_progress_bar=False)
    hyp = model.encode([r["hypothesis"] for r in rows], batch_size=batch_size, normalize_embeddings=True,
                       convert_to_numpy=True, show_progress_bar=False)
    return np.sum(prem * hyp, axis=1)


# --------------------------------------------------------------------------- main
def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dev", default=str(DEFAULT_DEV))
    p.add_argument("--train", default=str(DEFAULT_TRAIN), help="for the baseline's threshold slice")
    p.add_argument("--model", default=str(REPO / "models" / "nli-judge"))
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--boot", type=int, default=1000, help="bootstrap resamples")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="torch device of the judge (cpu, cuda); int8 is CPU-only")
    p.add_argument("--int8", action=argparse.BooleanOptionalAction, default=True, help="also bench int8 (CPU)")
    p.add_argument("--fp16", action=argparse.BooleanOptionalAction, default=False, help="also bench float16 (CUDA)")
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=True,
                   help="also bench bfloat16")
    p.add_argument("--baseline", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--tp-repeats", type=int, default=2,
                   help="timed passes over the dev pairs per judge (best and all are reported)")
    p.add_argument("--limit", type=int, default=0, help="first N dev rows only (quick runs)")
    args = p.parse_args(argv)
    if problem := missing_data([args.dev] + ([args.train] if args.baseline else [])):
        p.error(problem)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    from server.backends.judges.nli_model import NliModel, base_model_dir

    dev = read_jsonl_gz(args.dev)
    if args.limit:
        dev = dev[: args.limit]
    pairs = [(r["premise"], r["hypothesis"]) for r in dev]
    y, kk = targets(dev)
    sources = sorted({r["source"] for r in dev})
    by_src = {s: np.array([i for i, r in enumerate(dev) if r["source"] == s]) for s in sources}
    result: dict = {
        "dev": {"file": str(args.dev), "rows": len(dev), "per_source": {s: int(len(v)) for s, v in by_src.items()}},
        "settings": {"max_length": args.max_length, "batch_size": args.batch_size, "threads": args.threads,
                     "bootstrap": args.boot, "bootstrap_unit": "pairs sharing a claim or a premise",
                     "ece_bins": 15, "binary_sources": sorted(BINARY_SOURCES),
                     "torch": torch.__version__, "cpu_count": os.cpu_count(), "device": args.device,
                     "device_name": torch.cuda.get_device_name() if args.device.startswith("cuda") else None,
                     "loadavg_at_start": [round(x, 2) for x in os.getloadavg()]},
    }

    systems: dict[str, tuple] = {}  # name -> (pred, conf)
    throughput = {}
    for tag, quant, dtype in (("judge_fp32", False, "float32"), ("judge_int8", True, "float32"),
                              ("judge_bf16", False, "bfloat16"), ("judge_fp16", False, "float16")):
        if ((quant and not (args.int8 and args.device == "cpu")) or (dtype == "bfloat16" and not args.bf16)
                or (dtype == "float16" and not args.fp16)):
            continue
        t = time.time()
        model = NliModel.load(args.model, device=args.device, max_length=args.max_length, quantize=quant,
                              dtype=dtype)
        load_s = time.time() - t
        model.predict_proba(pairs[:64], batch_size=args.batch_size)  # warm-up
        times, machine = [], []
        for _ in range(max(1, args.tp_repeats)):
            t, cpu, host = time.time(), time.process_time(), host_cpu_times()
            probs = model.predict_proba(pairs, batch_size=args.batch_size)
            times.append(time.time() - t)
            machine.append(pass_machine_share(times[-1], time.process_time() - cpu, host, host_cpu_times()))
        throughput[tag] = {"pairs_per_s": round(len(pairs) / min(times), 1),
                           "pairs_per_s_all_passes": [round(len(pairs) / x, 1) for x in times],
                           # per pass: cores this process kept busy, and the host's CPU time taken by the
                           # hypervisor for other guests (steal) and by other processes: why a pass ran slower
                           "machine_per_pass": machine,
                           "seconds": round(min(times), 2), "load_s": round(load_s, 2),
                           "model_id": model.model_id, "temperature": model.temperature}
        eprint(f"{tag}: {throughput[tag]}")
        systems[tag] = decisions_from_probs(probs, dev)
        del model

    if args.baseline:
        from sentence_transformers import SentenceTransformer

        import train_nli_judge as T

        st = SentenceTransformer(base_model_dir(), device="cpu")
        train_rows = T.read_jsonl_gz(args.train)
        sl = T.split_slices(train_rows)
        fit_rows = sl["selection"] + sl["calibration"]
        t = time.time()
        sim_fit = similarity(st, fit_rows)
        sim_dev = similarity(st, dev)
        eprint(f"baseline embeddings in {time.time() - t:.1f}s ({len(fit_rows)} train-slice rows)")
        fy, fk = targets(fit_rows)
        fit_src = np.array([r["source"] for r in fit_rows])
        rules = {}
        pred = np.zeros(len(dev), dtype=int)
        for s in sources:
            k = 2 if s in BINARY_SOURCES else 3
            m = fit_src == s
            if m.sum() >= 30:
                rule = fit_thresholds(sim_fit[m], fy[m], k)
                rule["fitted_on"] = f"train slice of {s} ({int(m.sum())} rows)"
            else:  # dev-only source: pooled binary (supported vs not) over all train-slice rows
                yb = np.array([0 if r["label"] == "supported" else 1 for r in fit_rows])
                rule = fit_thresholds(sim_fit, yb, 2) if k == 2 else fit_thresholds(sim_fit, fy * (fk == 3), 3)
                rule["fitted_on"] = f"pooled train slices ({len(fit_rows)} rows)"
            rules[s] = rule
            pred[by_src[s]] = apply_thresholds(sim_dev[by_src[s]], rule, k)
        systems["baseline"] = (pred, None)
        result["baseline_rules"] = rules

    rng = np.random.default_rng(args.seed)
    unit_of = {s: units([dev[i] for i in v]) for s, v in by_src.items()}
    boot_idx = {s: unit_resamples(unit_of[s], args.boot, rng) for s in by_src}
    result["dev"]["bootstrap_units_per_source"] = {s: int(u.max()) + 1 for s, u in unit_of.items()}
    per_source: dict = {}
    for s in sources:
        ii = by_src[s]
        k = int(kk[ii[0]])
        entry: dict = {"n": int(len(ii)), "scoring": "binary (supported vs not)" if k == 2 else "3-way"}
        f1_boot: dict[str, np.ndarray] = {}
        for name, (pred, conf) in systems.items():
            ys, ps = y[ii], pred[ii]
            cs = conf[ii] if conf is not None else None
            point = metrics(ys, ps, cs, k)
            boots = [metrics(ys[b], ps[b], cs[b] if cs is not None else None, k) for b in boot_idx[s]]
            f1_boot[name] = np.array([b["macro_f1"] for b in boots])
            entry[name] = with_ci(point, boots)
        if "baseline" in systems:
            for name in systems:
                if name == "baseline":
                    continue
                d = f1_boot[name] - f1_boot["baseline"]
                point = entry[name]["macro_f1"]["value"] - entry["baseline"]["macro_f1"]["value"]
                entry[f"{name}_minus_baseline_macro_f1"] = {
                    "value": round(point, 4), "ci95": [round(float(x), 4) for x in np.percentile(d, [2.5, 97.5])]}
        for variant in ("int8", "bf16", "fp16"):
            if f"judge_{variant}" in systems:
                entry[f"{variant}_macro_f1_cost"] = round(entry["judge_fp32"]["macro_f1"]["value"]
                                                          - entry[f"judge_{variant}"]["macro_f1"]["value"], 4)
        per_source[s] = entry
    result["per_source"] = per_source

    overall: dict = {}
    all_idx = np.arange(len(dev))
    strat = [np.concatenate([by_src[s][b[j]] for s, b in boot_idx.items()]) for j in range(args.boot)]
    for name, (pred, conf) in systems.items():
        correct = y == pred
        point = {"accuracy": float(correct.mean()),
                 "mean_macro_f1_over_sources": float(np.mean([per_source[s][name]["macro_f1"]["value"]
                                                              for s in sources])),
                 "ece": ece_np(conf, correct) if conf is not None else None}
        boots = [{"accuracy": float(correct[b].mean()), "mean_macro_f1_over_sources": point[
            "mean_macro_f1_over_sources"], "ece": ece_np(conf[b], correct[b]) if conf is not None else None}
            for b in strat]
        overall[name] = with_ci(point, boots)
        overall[name]["mean_macro_f1_over_sources"] = round(point["mean_macro_f1_over_sources"], 4)
    result["overall"] = overall
    result["throughput"] = throughput
    result["settings"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    del all_idx

    for judge in [name for name in systems if name != "baseline"]:
        goals = {}
        for s, g in GOALS.items():
            if s in per_source:
                v = per_source[s][judge]["macro_f1"]["value"]
                goals[f"{s}_macro_f1>={g}"] = {"value": v, "met": v >= g}
        e = overall[judge]["ece"]["value"]
        goals[f"overall_ece<={GOAL_ECE}"] = {"value": e, "met": e <= GOAL_ECE}
        if "baseline" in systems:
            margins = {s: per_source[s][f"{judge}_minus_baseline_macro_f1"]["value"] for s in sources}
            goals[f"every_source_macro_f1_above_baseline_by>={GOAL_MARGIN}"] = {
                "value": margins, "met": all(v >= GOAL_MARGIN for v in margins.values())}
        tp = throughput[judge]["pairs_per_s"]
        goals[f"throughput>={GOAL_PAIRS_PER_S}_pairs_per_s"] = {"value": tp, "met": tp >= GOAL_PAIRS_PER_S}
        result[f"goals_{judge}"] = goals
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
