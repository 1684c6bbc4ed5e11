"""Benchmark of the rule splitter: boundary quality on ProcessBench layouts, NO_KNOWLEDGE quality, throughput.

    python bench/split.py [--data ../shared/data/chains/processbench] [--repeat 3]

Prints one JSON object. Gold steps are laid out four ways (see docs/splitting.md):
blank lines, "Step k:" lines, one run-on paragraph, single newlines. A boundary
is the offset of the first character of every step after the first; predicted
and gold boundaries match when the offsets are equal.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from server.pipeline.splitter import RuleSplitter  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "data" / "chains" / "processbench"
LABELLED = REPO / "tests" / "data" / "no_knowledge"
_WS = re.compile(r"\s+")


def layout(steps: list[str], kind: str) -> tuple[str, list[int]]:
    """The chain text of the gold steps in one layout, and the gold boundaries."""
    steps = [s.strip() for s in steps if s.strip()]
    if kind == "runon":
        steps = [_WS.sub(" ", s) for s in steps]
    if kind == "step_k":
        steps = [f"Step {k}: {s}" for k, s in enumerate(steps, 1)]
    sep = {"blank_lines": "\n\n", "step_k": "\n", "runon": " ", "newlines": "\n"}[kind]
    text, starts = "", []
    for s in steps:
        if text:
            text += sep
        starts.append(len(text))
        text += s
    return text, starts[1:]


def boundary_scores(splitter: RuleSplitter, chains: list[list[str]], kind: str) -> dict:
    tp = n_pred = n_gold = exact_chains = 0
    for steps in chains:
        text, gold = layout(steps, kind)
        pred = [s for s, _ in splitter.step_spans(text)[1:]]
        hit = len(set(pred) & set(gold))
        tp, n_pred, n_gold = tp + hit, n_pred + len(pred), n_gold + len(gold)
        exact_chains += pred == gold
    precision = tp / n_pred if n_pred else None
    recall = tp / n_gold if n_gold else None
    f1 = 2 * precision * recall / (precision + recall) if precision and recall else 0.0
    return {"precision": _r(precision), "recall": _r(recall), "f1": _r(f1), "gold_boundaries": n_gold,
            "predicted_boundaries": n_pred, "chains_exact": _r(exact_chains / len(chains))}


def throughput(splitter: RuleSplitter, chains: list[list[str]], kind: str, repeat: int) -> dict:
    """Gold steps per second of split() (claims and NO_KNOWLEDGE included), best of `repeat` runs.

    Steps are the chains' gold steps, the same count for every layout: the steps the splitter makes
    (`predicted_steps`) would credit a layout it over-splits (run-on text) with a higher rate.
    Process CPU time is reported next to wall time: on a shared machine wall time
    also counts the time other jobs held the CPU.
    """
    texts = [layout(steps, kind)[0] for steps in chains]
    steps = sum(1 for chain in chains for s in chain if s.strip())  # the steps layout() lays out
    best_cpu = best_wall = float("inf")
    predicted = 0
    for _ in range(repeat):
        w0, c0 = time.perf_counter(), time.process_time()
        predicted = sum(len(splitter.split(t).steps) for t in texts)
        best_wall = min(best_wall, time.perf_counter() - w0)
        best_cpu = min(best_cpu, time.process_time() - c0)
    chars = sum(len(t) for t in texts)
    return {"steps_per_s": round(steps / best_cpu), "steps_per_s_wall": round(steps / best_wall),
            "chains_per_s": round(len(texts) / best_cpu), "mb_per_s": round(chars / best_cpu / 1e6, 3),
            "steps": steps, "predicted_steps": predicted, "chains": len(texts)}


def no_knowledge_scores(splitter: RuleSplitter, path: Path) -> dict:
    """Step-level precision / recall of NO_KNOWLEDGE on a labelled file (steps given pre-split)."""
    tp = fp = fn = tn = 0
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        chain = json.loads(line)
        result = splitter.split_steps([s["text"] for s in chain["steps"]], chain.get("question", ""))
        for step, gold in zip(result.steps, chain["steps"]):
            predicted, actual = step.no_knowledge, gold["label"] == "no_knowledge"
            tp += predicted and actual
            fp += predicted and not actual
            fn += actual and not predicted
            tn += not predicted and not actual
    precision = tp / (tp + fp) if tp + fp else None
    recall = tp / (tp + fn) if tp + fn else None
    return {"precision": _r(precision), "recall": _r(recall), "steps": tp + fp + fn + tn,
            "no_knowledge_steps": tp + fn, "tp": tp, "fp": fp, "fn": fn, "tn": tn}


def no_knowledge_share(splitter: RuleSplitter, rows: list[dict]) -> dict:
    """Shares of NO_KNOWLEDGE claims and steps on unlabelled chains split as given, with their question (a rate,
    not an accuracy: on word problems most steps are arithmetic on the problem's own quantities)."""
    steps = nk_steps = claims = nk_claims = 0
    for row in rows:
        for step in splitter.split_steps(row["steps"], row.get("problem", "")).steps:
            steps += 1
            nk_steps += step.no_knowledge
            claims += len(step.claims)
            nk_claims += sum(c.no_knowledge for c in step.claims)
    return {"chains": len(rows), "steps": steps, "claims": claims,
            "no_knowledge_step_share": _r(nk_steps / max(steps, 1)),
            "no_knowledge_claim_share": _r(nk_claims / max(claims, 1))}


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 4)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="ProcessBench directory")
    parser.add_argument("--subsets", nargs="+", default=["gsm8k", "math"])
    parser.add_argument("--repeat", type=int, default=3, help="throughput repetitions (best is kept)")
    args = parser.parse_args(argv)
    for subset in args.subsets:
        if not (args.data / f"{subset}.json").is_file():
            parser.error(f"{args.data / f'{subset}.json'} not found: --data names the ProcessBench directory of the "
                         "shared data set (../shared/data/chains/processbench, see ../shared/data/README.md)")
    splitter = RuleSplitter()
    report: dict = {"splitter": splitter.name, "run_on_weight": splitter.run_on_weight,
                    "cue_weight": splitter.cue_weight, "boundaries": {},
                    "throughput": {}, "no_knowledge": {}, "no_knowledge_share": {}}
    for subset in args.subsets:
        rows = json.loads((args.data / f"{subset}.json").read_text(encoding="utf-8"))
        chains = [row["steps"] for row in rows]
        report["no_knowledge_share"][subset] = no_knowledge_share(splitter, rows)
        report["boundaries"][subset] = {
            kind: boundary_scores(splitter, chains, kind) for kind in ("blank_lines", "step_k", "runon", "newlines")
        }
        report["throughput"][subset] = {
            kind: throughput(splitter, chains, kind, args.repeat) for kind in ("blank_lines", "step_k", "runon")
        }
    for path in sorted(LABELLED.glob("*.jsonl")):
        report["no_knowledge"][path.stem] = no_knowledge_scores(splitter, path)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
