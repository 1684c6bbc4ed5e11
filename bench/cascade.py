#!/usr/bin/env python
"""How often the cascade would call the LLM judge: the embedded judge's confidences on the NLI dev pairs (JSON).

Every dev pair is one claim (one step) judged by the embedded judge against its own premise,
through the judge's evidence windows. The cascade escalates a claim when it is judged
contradicted, or when its top probability is below the threshold. Reported per source and
overall, at the configured threshold and over a sweep: LLM calls per step (split into
"contradicted" and "low confidence"), and the embedded judge's accuracy on the claims it
keeps versus those it escalates (what the LLM tier is there to fix; on the binary sources a
verdict is right when it says supported vs not supported as the label does, as in bench/judge.py).
The same count on the demo chains through the pipeline (demo KB retrieval; planning and answer
steps included) shows the rate on reasoning chains, where contradictions are rarer than in NLI data.

    nice -n 10 .venv/bin/python bench/cascade.py > bench/results/cascade.json
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import sys
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DEV = REPO.parent / "shared" / "data" / "nli" / "dev.jsonl.gz"
SWEEP = (0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)
# Sources labelled supported vs not supported only ("contradicted" / "not_enough_info" mean "not supported"),
# scored that way as in bench/judge.py.
BINARY_SOURCES = frozenset({"scifact", "covidfact", "wice"})


def eprint(*args) -> None:
    print(*args, file=sys.stderr, flush=True)


def judge_settings():
    """The judge settings the server would run with (KGV_JUDGE__* applied)."""
    from server.config import Settings

    return Settings().judge


def scorer_for(args):
    """The pair scorer as the server builds it from its settings (KGV_JUDGE__*: precision, device, threshold)."""
    from kb.embedder import SentenceTransformerEmbedder

    cfg = judge_settings()
    if args.judge == "baseline":
        from server.backends.judges.similarity import SimilarityPairScorer

        return SimilarityPairScorer(SentenceTransformerEmbedder(), cfg.support_threshold)
    from server.backends.judges.nli_model import NliModel

    return NliModel.load(args.model or cfg.nli_model_path, device=cfg.nli_device, quantize=cfg.nli_int8,
                         dtype=cfg.nli_dtype)


def embedded_judge(scorer):
    """The embedded judge over `scorer` with the server's aggregation settings."""
    from server.backends.judges.aggregation import AggregationPolicy
    from server.backends.judges.embedded import EmbeddedJudge
    from server.pipeline.runtime import Blocking

    cfg = judge_settings()
    return EmbeddedJudge(scorer, Blocking(None), AggregationPolicy(window_chars=cfg.window_chars,
                                                                   min_decisive=cfg.min_decisive_probability))


async def judge_all(scorer, rows: list[dict]) -> list:
    from server.pipeline.deadline import Deadline
    from server.pipeline.types import Evidence, EvidenceOrigin, JudgeItem

    judge = embedded_judge(scorer)
    items = [JudgeItem(r["hypothesis"], (Evidence(r["id"], r["premise"], r["source"], "", 1.0,
                                                  EvidenceOrigin.CONTEXT),)) for r in rows]
    out = []
    for start in range(0, len(items), 256):
        out.extend(await judge.judge(items[start:start + 256], Deadline()))
        eprint(f"{len(out)}/{len(items)} pairs")
    return out


def is_correct(verdict: str, row: dict) -> bool:
    """The verdict matches the row's label; on a binary source, supported vs not supported."""
    if row["source"] in BINARY_SOURCES:
        return verdict in ("supported", "contradicted", "not_enough_info") and \
            (verdict == "supported") == (row["label"] == "supported")
    return verdict == row["label"]


def rates(rows: list[dict], judgements: list, threshold: float) -> dict:
    from server.backends.judges.cascade import needs_llm

    n = len(rows)
    escalated = [needs_llm(j, threshold) for j in judgements]
    contradicted = sum(j.verdict.value == "contradicted" for j in judgements)
    correct = [is_correct(j.verdict.value, r) for j, r in zip(judgements, rows)]
    kept = [c for c, e in zip(correct, escalated) if not e]
    sent = [c for c, e in zip(correct, escalated) if e]
    return {
        "llm_calls_per_step": round(sum(escalated) / n, 4),
        "contradicted_share": round(contradicted / n, 4),
        "low_confidence_share": round(sum(e and j.verdict.value != "contradicted"
                                          for e, j in zip(escalated, judgements)) / n, 4),
        "embedded_accuracy_kept": round(sum(kept) / len(kept), 4) if kept else None,
        "embedded_accuracy_escalated": round(sum(sent) / len(sent), 4) if sent else None,
        "pairs": n,
    }


async def demo_chains(args, threshold: float) -> dict:
    """LLM calls per step the cascade makes on the demo chains (demo KB, every step counted)."""
    from server.app import Runtime
    from server.backends.judges.cascade import needs_llm
    from server.config import Settings
    from server.pipeline.deadline import Deadline
    from server.pipeline.knowledge_index import score_knowledge
    from server.pipeline.types import ChainInput, Judgement, KnowledgeRequest

    judge = {"backend": args.judge, "cache_size": 0, **({"nli_model_path": args.model} if args.model else {})}
    runtime = Runtime(Settings(kb={"cache_dir": args.cache_dir}, judge=judge))
    chains = [json.loads(line) for line in (REPO / "client" / "demo" / "chains.jsonl").read_text().splitlines()
              if line.strip()]
    steps = knowledge_steps = escalated = 0
    try:
        await runtime.blocking.run(runtime.kb.load, runtime.ctx.embedder())
        for chain in chains:
            request = KnowledgeRequest(ChainInput(question=chain["question"], steps=tuple(chain["steps"])))
            result = await score_knowledge(request, runtime.deps, Deadline())
            for step in result.steps:
                steps += 1
                knowledge_steps += step.verdict.value != "no_knowledge"
                escalated += sum(bool(c.evidence) and c.verdict.value != "no_knowledge"
                                 and needs_llm(Judgement(c.verdict, c.probabilities, c.tier), threshold)
                                 for c in step.claims)
    finally:
        await runtime.close()
    return {"chains": len(chains), "steps": steps, "knowledge_steps": knowledge_steps,
            "llm_calls_per_step": round(escalated / steps, 4),
            "llm_calls_per_knowledge_step": round(escalated / max(knowledge_steps, 1), 4)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--judge", default="nli", choices=["nli", "baseline"])
    p.add_argument("--model", default=None, help="NLI judge artefact directory (default: models/nli-judge)")
    p.add_argument("--threshold", type=float, default=None, help="default: the configured cascade threshold")
    p.add_argument("--limit", type=int, default=0, help="first N pairs per source (smoke runs)")
    p.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "kgverify", help="demo KB location")
    args = p.parse_args(argv)
    if not DEV.is_file():
        p.error(f"{DEV} not found: the benchmark reads the shared data set (../shared/data beside the repository, "
                "see its README.md)")

    threshold = judge_settings().cascade_threshold if args.threshold is None else args.threshold
    with gzip.open(DEV, "rt", encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    if args.limit:
        per: dict[str, int] = defaultdict(int)
        rows = [r for r in rows if (per.__setitem__(r["source"], per[r["source"]] + 1) or per[r["source"]]) <= args.limit]
    scorer = scorer_for(args)
    judgements = asyncio.run(judge_all(scorer, rows))
    by_source: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        by_source[r["source"]].append(i)
    report = {
        "bench": "cascade", "judge": scorer.name, "threshold": threshold,
        "overall": rates(rows, judgements, threshold),
        "by_source": {s: rates([rows[i] for i in ix], [judgements[i] for i in ix], threshold)
                      for s, ix in sorted(by_source.items())},
        "sweep": {f"{t:g}": rates(rows, judgements, t)["llm_calls_per_step"] for t in SWEEP},
        "sweep_checkcovid": {f"{t:g}": rates([rows[i] for i in by_source["checkcovid"]],
                                             [judgements[i] for i in by_source["checkcovid"]], t)["llm_calls_per_step"]
                             for t in SWEEP} if by_source.get("checkcovid") else {},
        "demo_chains": asyncio.run(demo_chains(args, threshold)),
        "goal_llm_calls_per_step": 0.3,
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
