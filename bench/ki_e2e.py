#!/usr/bin/env python
"""End-to-end KI benchmark on Check-COVID: KB retrieval + judge vs the same judge on gold evidence (prints JSON).

1. Builds (once, cached) a KB from ../shared/data/kb/checkcovid_corpus.jsonl.gz: every abstract
   sentence is one fact, its cord_id the source. A KB found at --kb-dir is reused only if this bench
   built it from the same corpus file (sha256) with the same chunking and embedder; the bench's own KB
   is built again otherwise, and any other KB is refused (never removed).
2. Takes the Check-COVID dev claims of ../shared/data/nli/dev.jsonl.gz. Each claim has one
   supported or contradicted pair (its gold premise; some premises are two or three abstract
   sentences) and sometimes a not_enough_info pair with another sentence: the claim's label is
   the label of its supported/contradicted pair.
3. Sends every claim as a one-step chain through the pipeline of a real in-process server
   runtime (splitter, retrieval, judge, step verdict): `e2e` without context (KB top-k),
   `gold` with its gold premise as the only context passage.
4. Reports per judge and aggregation variant: claim macro-F1 over the gold labels (supported,
   contradicted; a not_enough_info verdict, or a step found to hold no knowledge, is a miss; the
   sklearn-style mean that also averages in the never-gold not_enough_info class is reported
   as macro_f1_with_predicted_labels), evidence recall
   (all gold premise sentences among the top-k / at least one), the ratio e2e/gold (goal >= 0.9),
   the pair-level 3-way macro-F1 on all dev pairs with their own premise, and the cascade's
   escalation rate (LLM calls per step) at the configured threshold.
5. Off-topic evidence: the same claims judged against the top facts of the bundled demo KB
   (pharmacology, diagnosis, maths; nothing on COVID-19) as context. Such evidence cannot settle
   them, so every verdict should be not_enough_info: `settled_share` is the false-verdict rate.

    nice -n 10 .venv/bin/python bench/ki_e2e.py > bench/ki_e2e_results.json
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DATA = REPO.parent / "shared" / "data"
LABELS = ("supported", "contradicted", "not_enough_info")


def eprint(*args) -> None:
    print(*args, file=sys.stderr, flush=True)


def read_jsonl_gz(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def missing_data(paths) -> str | None:
    """The message for the first input file that is not there (the shared data lives outside the repository)."""
    for path in paths:
        if not Path(path).is_file():
            return f"{path} not found: the benchmark reads the shared data set (../shared/data beside the " \
                   "repository, see its README.md)"
    return None


def corpus_documents(corpus: list[dict]):
    from kb.ingest import Document

    for doc in corpus:
        for sentence in doc["abstract"]:
            if sentence.strip():
                yield Document(doc["cord_id"], sentence, doc["cord_id"], doc.get("title") or "")


KB_CHUNK_CHARS = 4_000  # one fact per abstract sentence: chunks never pack two sentences below 4,000 characters
BENCH_MARK = "ki_e2e"  # recorded in the build record of the KBs this bench builds


def kb_recipe(corpus_path: Path) -> dict:
    """What the bench's KB is built from; recorded in its manifest's build record and checked on reuse."""
    from kb.manifest import sha256_file

    return {"bench": BENCH_MARK, "corpus": str(Path(corpus_path).resolve()), "corpus_sha256": sha256_file(corpus_path)}


def _build_record(kb_dir: Path) -> dict:
    """The build record of the KB's current version ({} when it cannot be read)."""
    from kb.layout import current_version
    from kb.manifest import Manifest

    try:
        return Manifest.load(current_version(kb_dir)).build
    except Exception:  # damaged, half-written: not known to be the bench's
        return {}


def kb_mismatch(kb_dir: Path, recipe: dict, embedder) -> str | None:
    """Why the KB at kb_dir is not the one this bench builds from the recipe's corpus (None: it is)."""
    from kb.chunking import ChunkSpec
    from kb.knowledge_base import FaissKnowledgeBase
    from server.pipeline.errors import KgverifyError

    try:
        kb = FaissKnowledgeBase.load(kb_dir, embedder)  # checks the embedder and the files' checksums
    except KgverifyError as exc:
        return exc.message
    manifest = kb.manifest
    kb.close()
    build = manifest.build
    if build.get("op") != "build":
        return "documents were added to it after its build"
    if build.get("bench") != BENCH_MARK:
        return f"it was not built by this bench (built from {build.get('inputs') or 'unknown inputs'})"
    if build.get("corpus_sha256") != recipe["corpus_sha256"]:
        return f"it was built from another corpus ({build.get('corpus')}, sha256 {build.get('corpus_sha256', '')[:12]})"
    if manifest.chunking != ChunkSpec(max_chars=KB_CHUNK_CHARS).to_dict():
        return f"its facts were chunked with {manifest.chunking}"
    if manifest.bm25 is None:
        return "it was built without BM25"
    return None


def ensure_kb(kb_dir: Path, corpus_path: Path, corpus: list[dict], embedder, own_dir: Path | None = None) -> Path:
    """The bench's KB at kb_dir, built (again) unless the KB there was built by this bench from this corpus with
    its chunking and the embedder. A KB there that is not the bench's (no build record of it; own_dir, the
    bench's default cache directory, counts as the bench's) is never removed: SystemExit says why."""
    import shutil

    from kb.build import build_kb
    from kb.layout import is_kb

    recipe = kb_recipe(corpus_path)
    if is_kb(kb_dir):
        problem = kb_mismatch(kb_dir, recipe, embedder)
        if problem is None:
            return kb_dir
        owned = _build_record(kb_dir).get("bench") == BENCH_MARK or (
            own_dir is not None and Path(kb_dir).resolve() == Path(own_dir).resolve())
        if not owned:
            raise SystemExit(f"{kb_dir} holds a knowledge base that is not the bench's Check-COVID KB of {corpus_path}: "
                             f"{problem}; pass another --kb-dir (the bench builds its KB there) or remove it")
        eprint(f"rebuilding {kb_dir}: {problem}")
        shutil.rmtree(kb_dir)
    eprint(f"building the Check-COVID KB in {kb_dir}")
    build_kb(corpus_documents(corpus), kb_dir, embedder, chunk_chars=KB_CHUNK_CHARS, build_options=recipe,
             progress=False)
    return kb_dir


def claims_of(dev: list[dict], corpus: list[dict]) -> list[dict]:
    """One row per Check-COVID dev claim: text, label, gold premise and its corpus sentences."""
    sentences = {" ".join(s.split()) for doc in corpus for s in doc["abstract"] if len(s.strip()) > 20}
    out: dict[str, dict] = {}
    for row in dev:
        if row["source"] != "checkcovid" or row["label"] == "not_enough_info":
            continue
        premise = " ".join(row["premise"].split())
        parts = sorted(s for s in sentences if s in premise)
        out.setdefault(row["hypothesis"], {"claim": row["hypothesis"], "label": row["label"], "premise": premise,
                                           "gold_sentences": parts})
    return list(out.values())


def macro_f1(gold: list[str], pred: list[str], over_gold_labels: bool = True) -> float:
    """Mean F1 over the gold labels (predictions of other labels are misses), or over gold + predicted labels."""
    present = [label for label in LABELS if label in gold or (not over_gold_labels and label in pred)]
    scores = []
    for label in present:
        tp = sum(g == p == label for g, p in zip(gold, pred))
        denom = gold.count(label) + pred.count(label)
        scores.append(2 * tp / denom if denom else 0.0)
    return sum(scores) / len(scores) if scores else float("nan")


def settings_for(args, kb_dir: Path, judge: str):
    from server.config import Settings

    judge_cfg = {"backend": judge, "cache_size": 0}
    if args.model:
        judge_cfg["nli_model_path"] = args.model
    return Settings(kb={"path": kb_dir, "cache_dir": args.cache_dir}, judge=judge_cfg,
                    server={"executor_workers": 1})


async def score_all(runtime, claims: list[dict], with_gold: bool, top_k: int, mode: str,
                    contexts: list[tuple] | None = None) -> list:
    """Each claim as a one-step chain: KB retrieval, its gold premise as context, or the given contexts."""
    from server.pipeline.deadline import Deadline
    from server.pipeline.knowledge_index import score_knowledge
    from server.pipeline.types import ChainInput, KnowledgeOptions, KnowledgeRequest, Passage, RetrievalMode

    given = with_gold or contexts is not None
    options = KnowledgeOptions(top_k=top_k, retrieval_mode=RetrievalMode(mode), use_knowledge_base=not given)
    out = []
    for start in range(0, len(claims), 16):  # a few claims in flight, like a batch client
        batch = claims[start:start + 16]
        requests = [KnowledgeRequest(ChainInput(steps=(c["claim"],)),
                                     context=(contexts[start + i] if contexts is not None
                                              else (Passage("gold", c["premise"]),) if with_gold else ()),
                                     options=options)
                    for i, c in enumerate(batch)]
        out.extend(await asyncio.gather(*(score_knowledge(r, runtime.deps, Deadline()) for r in requests)))
    return out


def verdicts(results) -> tuple[list[str], Counter]:
    preds, raw = [], Counter()
    for result in results:
        verdict = result.steps[0].verdict.value
        raw[verdict] += 1
        preds.append(verdict if verdict in LABELS else "not_enough_info")
    return preds, raw


def recall(results, claims: list[dict]) -> dict:
    full = anyhit = 0
    for result, claim in zip(results, claims):
        seen = {" ".join(e.text.split()) for c in result.steps[0].claims for e in c.evidence}
        gold = claim["gold_sentences"] or [claim["premise"]]
        full += all(s in seen for s in gold)
        anyhit += any(s in seen for s in gold)
    return {"all_gold_sentences": round(full / len(claims), 4), "any_gold_sentence": round(anyhit / len(claims), 4)}


def escalation(results, threshold: float) -> float:
    """LLM calls per step the cascade would make: claims it escalates (one call each) over steps.

    A step with two claims that both escalate costs two calls."""
    from server.backends.judges.cascade import needs_llm
    from server.pipeline.types import Judgement

    steps = escalated = 0
    for result in results:
        for step in result.steps:
            steps += 1
            for claim in step.claims:
                if claim.probabilities is None and claim.verdict.value == "no_knowledge":
                    continue
                escalated += bool(claim.evidence) and needs_llm(
                    Judgement(claim.verdict, claim.probabilities, claim.tier), threshold)
    return round(escalated / max(steps, 1), 4)


def _summary(results, claims: list[dict], threshold: float) -> dict:
    labels = [c["label"] for c in claims]
    pred, raw = verdicts(results)
    return {"macro_f1": round(macro_f1(labels, pred), 4),
            "macro_f1_with_predicted_labels": round(macro_f1(labels, pred, over_gold_labels=False), 4),
            "accuracy": round(sum(map(str.__eq__, labels, pred)) / len(labels), 4),
            "verdicts": dict(raw), "cascade_llm_calls_per_step": escalation(results, threshold)}


class MemoScorer:
    """The judge's pair scorer with every (premise, claim) row kept: variants share most pairs."""

    def __init__(self, scorer):
        self.scorer, self.name, self.rows = scorer, scorer.name, {}
        for name in ("count_tokens", "premise_budgets"):  # the judge fits its windows to the model's tokens
            if hasattr(scorer, name):
                setattr(self, name, getattr(scorer, name))

    def predict_proba(self, pairs):
        import numpy as np

        todo = list(dict.fromkeys(p for p in pairs if p not in self.rows))
        if todo:
            self.rows.update(zip(todo, self.scorer.predict_proba(todo)))
        return np.array([self.rows[p] for p in pairs]).reshape(len(pairs), 3)


def off_topic_contexts(args, claims: list[dict], top_k: int) -> list[tuple]:
    """Per claim, the top facts of the bundled demo KB (pharmacology, diagnosis, maths: nothing on COVID-19),
    as context passages: evidence that is near the claim in embedding space but cannot settle it."""
    from kb.demo import ensure_demo_kb
    from kb.embedder import SentenceTransformerEmbedder
    from kb.knowledge_base import FaissKnowledgeBase
    from server.pipeline.types import Passage, RetrievalMode

    embedder = SentenceTransformerEmbedder()
    demo = FaissKnowledgeBase.load(ensure_demo_kb(args.cache_dir, embedder), embedder)
    hits = demo.search([c["claim"] for c in claims], top_k, RetrievalMode.HYBRID)
    return [tuple(Passage(h.fact_id, h.text) for h in row) for row in hits]


def off_topic_summary(results, contexts: list[tuple]) -> dict:
    """Claims given a verdict by evidence that cannot settle them (every one should be not_enough_info)."""
    _, raw = verdicts(results)
    settled = raw.get("supported", 0) + raw.get("contradicted", 0)
    return {"claims": len(results), "verdicts": dict(raw), "settled_share": round(settled / max(len(results), 1), 4),
            "contradicted_share": round(raw.get("contradicted", 0) / max(len(results), 1), 4),
            "passages_per_claim": round(sum(map(len, contexts)) / max(len(contexts), 1), 2)}


async def run_judge(args, kb_dir: Path, judge: str, claims: list[dict]) -> list[dict]:
    """Every aggregation / top-k / mode variant of one judge, on one runtime (models load once)."""
    from server.app import Runtime
    from server.backends.judges.aggregation import AggregationPolicy
    from server.backends.judges.embedded import EmbeddedJudge

    runtime = Runtime(settings_for(args, kb_dir, judge))
    runs = []
    try:
        await runtime.blocking.run(runtime.kb.load, runtime.ctx.embedder())
        built = await runtime.judge(None)
        scorer = MemoScorer(built.scorer)
        unrelated = {k: off_topic_contexts(args, claims, k) for k in {int(x) for x in args.top_k.split(",")}}
        variants = [(int(j), c, float(d)) for j in args.joint.split(",") for c in args.conflict.split(",")
                    for d in args.min_decisive.split(",")]
        for joint, conflict, decisive in variants:
            policy = AggregationPolicy(joint_support=joint, conflict=conflict, min_decisive=decisive)
            runtime._built[("judge", judge)] = EmbeddedJudge(scorer, runtime.blocking, policy)
            gold, gold_summary, off_topic = None, None, {}  # off-topic evidence: top_k passages, whatever the mode
            for mode in args.mode.split(","):
                for top_k in (int(x) for x in args.top_k.split(",")):
                    eprint(f"{judge} joint_support={joint} conflict={conflict} min_decisive={decisive} mode={mode} "
                           f"top_k={top_k}")
                    t0 = time.perf_counter()
                    e2e = await score_all(runtime, claims, False, top_k, mode)
                    if gold is None:
                        gold = await score_all(runtime, claims, True, top_k, mode)
                        gold_summary = _summary(gold, claims, args.threshold)
                    if top_k not in off_topic:
                        off = await score_all(runtime, claims, False, top_k, mode, unrelated[top_k])
                        off_topic[top_k] = off_topic_summary(off, unrelated[top_k])
                    e2e_summary = _summary(e2e, claims, args.threshold)
                    e2e_summary["evidence_recall"] = recall(e2e, claims)
                    ratio = e2e_summary["macro_f1"] / gold_summary["macro_f1"] if gold_summary["macro_f1"] else None
                    runs.append({"judge": built.name, "aggregation": policy.version(), "retrieval_mode": mode,
                                 "top_k": top_k,
                                 "e2e": e2e_summary, "gold_evidence": gold_summary,
                                 "off_topic_evidence": off_topic[top_k],
                                 "e2e_over_gold": None if ratio is None else round(ratio, 4),
                                 "seconds": round(time.perf_counter() - t0, 1)})
    finally:
        await runtime.close()
    return runs


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--judges", default="baseline,nli", help="comma-separated: baseline, nli")
    p.add_argument("--model", default=None, help="NLI judge artefact directory (default: models/nli-judge)")
    p.add_argument("--kb-dir", type=Path, default=Path.home() / ".cache" / "kgverify" / "bench" / "checkcovid-kb")
    p.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "kgverify")
    p.add_argument("--top-k", default="5", help="comma-separated facts per claim")
    p.add_argument("--mode", default="dense,hybrid", help="comma-separated retrieval modes: dense, bm25, hybrid")
    p.add_argument("--joint", default="2,0", help="aggregation variants: facts read together for support (0 = off)")
    p.add_argument("--conflict", default="rank,stronger", help="aggregation variants: support-vs-contradiction rule")
    p.add_argument("--threshold", type=float, default=None, help="cascade threshold (default: the configured one)")
    p.add_argument("--min-decisive", default="0",
                   help="aggregation variants: least top-label probability for a premise to settle a claim")
    p.add_argument("--limit", type=int, default=0, help="first N claims only (smoke runs)")
    args = p.parse_args(argv)
    if problem := missing_data([DATA / "kb" / "checkcovid_corpus.jsonl.gz", DATA / "nli" / "dev.jsonl.gz"]):
        p.error(problem)

    from kb.embedder import SentenceTransformerEmbedder
    from server.config import Settings

    if args.threshold is None:  # the server's (KGV_JUDGE__CASCADE_THRESHOLD applied)
        args.threshold = Settings().judge.cascade_threshold
    corpus_path = DATA / "kb" / "checkcovid_corpus.jsonl.gz"
    corpus = read_jsonl_gz(corpus_path)
    claims = claims_of(read_jsonl_gz(DATA / "nli" / "dev.jsonl.gz"), corpus)
    if args.limit:
        claims = claims[:args.limit]
    kb_dir = ensure_kb(args.kb_dir, corpus_path, corpus, SentenceTransformerEmbedder(), p.get_default("kb_dir"))
    report = {"bench": "ki_e2e", "dataset": "checkcovid dev claims", "claims": len(claims),
              "labels": dict(Counter(c["label"] for c in claims)), "kb": str(kb_dir), "cascade_threshold": args.threshold,
              "multi_sentence_premises": sum(len(c["gold_sentences"]) > 1 for c in claims), "runs": []}
    for judge in args.judges.split(","):
        report["runs"].extend(asyncio.run(run_judge(args, kb_dir, judge, claims)))
    report["goal_e2e_over_gold"] = 0.9
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
