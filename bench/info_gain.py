#!/usr/bin/env python
"""Benchmark of InfoGain scoring: packed passes vs the KV-cache walk vs n+1 independent passes (prints JSON).

For random Llama-style models built in code (`tiny`: 64 hidden x 2 layers,
`medium`: 256 x 4) and chains of n steps with answers of k tokens, every
variant scores the same pinned sequences (prefix ids + answer ids of c_0..c_n)
in the same run: wall time (median of --repeats), tokens pushed through the
model, the largest difference from the independent passes (nats), and ratios
against the independent passes. A long chain (~10k tokens) shows the token
budget at work; its independent passes are counted, not run. The vLLM part
scores the chains through the fake vLLM server (prompt log-probabilities from
the same model) and reports the prefill tokens vLLM would compute per chain:
`prompt_logprobs` (no prefix-cache reads) vs `cached` (logprob_token_ids;
prefix-cache hits modelled as vLLM V1 does, 16-token blocks).

    nice -n 10 .venv/bin/python bench/info_gain.py > bench/info_gain_results.json
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

QUESTION = "Question: which drug lowers the blood glucose? A. aspirin B. insulin C. metformin"


def eprint(*a) -> None:
    print(*a, file=sys.stderr, flush=True)


def timed(fn, repeats: int):
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def independent(lm, job):
    """One full forward pass per sequence, logits only where answer tokens are predicted."""
    import torch

    out, tokens = [], 0
    with torch.inference_mode():
        for seq, start in zip(job.sequences, job.starts):
            keep = torch.arange(start - 1, len(seq) - 1, device=lm.device)
            logits = lm.model(input_ids=torch.tensor([seq], device=lm.device), logits_to_keep=keep,
                              use_cache=False).logits[0]
            logp = torch.log_softmax(logits.float(), -1)
            answer = torch.tensor(seq[start:], device=lm.device)
            out.append(logp.gather(1, answer[:, None])[:, 0].double().tolist())
            tokens += len(seq)
    return out, tokens


def max_diff(a, b) -> float:
    return max(abs(x - y) for xs, ys in zip(a, b) for x, y in zip(xs, ys))


def bench_case(lm, estimator, n_steps: int, n_answer: int, words: tuple[int, int], repeats: int,
               budgets: list[int], run_independent: bool) -> dict:
    from server.backends.lm.causal_lm import ScoringJob
    from server.pipeline.deadline import NO_DEADLINE
    from tests.helpers.tiny_lm import answer_of_tokens, chain

    steps = chain(n_steps, seed=n_steps, words_per_step=words)
    target = answer_of_tokens(lm.tokenizer, n_answer)
    seqs, k = asyncio.run(estimator.answer_sequences(QUESTION, steps, target, NO_DEADLINE))
    job = ScoringJob(tuple(map(tuple, seqs)), tuple(len(s) - k for s in seqs))
    row = {"steps": n_steps, "answer_tokens": k, "longest_sequence": max(map(len, seqs)),
           "independent_tokens": sum(map(len, seqs))}
    reference = None
    if run_independent:
        t, (reference, _) = timed(lambda: independent(lm, job), repeats)
        row["independent_s"] = round(t, 4)
    variants = [(f"packed_b{b}", "packed", b) for b in budgets] + [("walk", "walk", budgets[0])]
    for name, strategy, budget in variants:
        lm.budget = budget
        passes = lm.forward_passes
        t, (result,) = timed(lambda: lm.score_jobs([job], strategy), repeats)
        row[f"{name}_s"] = round(t, 4)
        row[f"{name}_tokens"] = result.prefill_tokens
        row[f"{name}_passes"] = (lm.forward_passes - passes) // repeats
        if reference is not None:
            row[f"{name}_max_diff_nats"] = float(f"{max_diff(result.logprobs, reference):.2e}")
            row[f"{name}_speedup_vs_independent"] = round(row["independent_s"] / t, 2)
        row[f"{name}_token_ratio_vs_independent"] = round(row["independent_tokens"] / result.prefill_tokens, 2)
    return row


async def vllm_prefill(model_path: Path, cases) -> list[dict]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from server.backends.lm.causal_lm import LmEstimator
    from server.backends.lm.vllm_lm import VllmCausalLm
    from server.backends.vllm_client import VllmClient
    from server.pipeline.deadline import NO_DEADLINE
    from tests.fakes.vllm_server import FakeVllmServer
    from tests.helpers.tiny_lm import answer_of_tokens, chain

    model = AutoModelForCausalLM.from_pretrained(model_path).eval()
    tok = AutoTokenizer.from_pretrained(model_path)

    def scorer(ids):
        with torch.inference_mode():
            logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), -1)
        return logp[:-1].gather(1, torch.tensor(ids[1:])[:, None])[:, 0].tolist()

    rows = []
    for n_steps, n_answer, words in cases:
        steps, target = chain(n_steps, seed=n_steps, words_per_step=words), answer_of_tokens(tok, n_answer)
        row = {"steps": n_steps, "answer_tokens": n_answer}
        for mode in ("prompt_logprobs", "cached"):
            with FakeVllmServer(model="m", scorer=scorer, max_model_len=32768, prefix_cache_block=16,
                                prompt_tokens_details=True,
                                tokenizer=lambda t, s: tok(t, add_special_tokens=s)["input_ids"]) as fake:
                estimator = LmEstimator(VllmCausalLm(VllmClient(fake.base_url), "m", tokenizer=tok, scoring=mode))
                scores = await estimator.score_prefixes(QUESTION, steps, target, NO_DEADLINE)
                await estimator.aclose()
            row[f"{mode}_prefill_tokens"] = scores.prefill_tokens
            row[f"{mode}_requests"] = scores.llm_calls
        row["prefill_ratio"] = round(row["prompt_logprobs_prefill_tokens"] / row["cached_prefill_tokens"], 2)
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a busy 2-core box)")
    parser.add_argument("--sizes", default="tiny,medium")
    parser.add_argument("--no-long", action="store_true", help="skip the ~10k-token chain")
    parser.add_argument("--no-goal", action="store_true",
                        help="skip the goal run (~48M-parameter Llama, n = 5, 10, 20, 40 steps of ~40 tokens)")
    parser.add_argument("--goal-steps", default="5,10,20,40")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (the goal run)")
    parser.add_argument("--dtype", default="float32", help="float32 or bfloat16 (the goal run)")
    args = parser.parse_args()

    import torch

    from server.backends.lm.causal_lm import LmEstimator
    from server.backends.lm.transformers_lm import TransformersCausalLm
    from server.pipeline.runtime import Blocking
    from tests.helpers.tiny_lm import build_tiny_lm

    torch.set_num_threads(args.threads)
    out = {"machine": f"{os.cpu_count()} CPUs, shared with other jobs; torch {torch.__version__}, "
                      f"{args.threads} thread(s), fp32", "repeats": args.repeats, "results": {}}
    short = [(5, 1), (5, 20), (30, 1), (30, 20)]
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes.split(","):
            path = build_tiny_lm("llama", Path(tmp) / size, size=size)
            lm = TransformersCausalLm(str(path), Blocking(None), strategy="packed")
            estimator = LmEstimator(lm)
            rows = []
            for n, k in short:
                eprint(f"{size}: {n} steps, {k} answer tokens")
                rows.append(bench_case(lm, estimator, n, k, (4, 12), args.repeats, [4096, 256], True))
            if not args.no_long:
                eprint(f"{size}: long chain")
                rows.append(bench_case(lm, estimator, 30, 20, (170, 220), 1, [4096, 1024], False))
            out["results"][size] = rows
            if size == "tiny":
                out["vllm_prefill"] = asyncio.run(vllm_prefill(path, [(5, 1, (4, 12)), (30, 1, (4, 12)),
                                                                      (30, 20, (4, 12)), (30, 1, (170, 220))]))
        if not args.no_goal:
            out["goal"] = goal_run(Path(tmp), [int(n) for n in args.goal_steps.split(",")], args)
    print(json.dumps(out, indent=2))


def goal_run(tmp: Path, steps: list[int], args) -> dict:
    """Packed vs n+1 independent passes on a ~48M-parameter random Llama, steps of ~40 tokens.

    Goals on the 2-core CPU: >= 5x at n = 20 and >= 10x at n = 40. `single_pass_bound` is the
    fewest tokens any exact method must push: the full chain with its answer once, plus one more
    answer copy per shorter prefix.
    """
    import torch

    from server.backends.lm.causal_lm import LmEstimator
    from server.backends.lm.transformers_lm import TransformersCausalLm
    from server.pipeline.runtime import Blocking
    from tests.helpers.tiny_lm import build_tiny_lm

    path = build_tiny_lm("llama", tmp / "50m", size="50m")
    lm = TransformersCausalLm(str(path), Blocking(None), strategy="packed", device=args.device, dtype=args.dtype)
    params = sum(p.numel() for p in lm.model.parameters())
    estimator = LmEstimator(lm)
    rows = []
    for n in steps:
        for k in ((1, 20) if n == max(steps) else (1,)):
            eprint(f"50m: {n} steps of ~40 tokens, {k} answer tokens")
            row = bench_case(lm, estimator, n, k, (18, 26), args.repeats, [4096], True)
            bound = row["longest_sequence"] + n * row["answer_tokens"]
            row["single_pass_bound_tokens"] = bound
            row["packed_tokens_over_bound"] = round(row["packed_b4096_tokens"] / bound, 3)
            rows.append(row)
    speedup = {r["steps"]: r["packed_b4096_speedup_vs_independent"] for r in rows if r["answer_tokens"] == 1}
    return {"model": f"random Llama, {params / 1e6:.1f}M parameters (hidden 768, 9 layers), "
                     f"{args.device} {args.dtype}, {torch.get_num_threads()} thread(s)",
            "loadavg_at_end": [round(x, 2) for x in os.getloadavg()], "rows": rows,
            "goals": {"speedup>=5_at_n20": {"value": speedup.get(20), "met": (speedup.get(20) or 0) >= 5},
                      "speedup>=10_at_n40": {"value": speedup.get(40), "met": (speedup.get(40) or 0) >= 10}}}


if __name__ == "__main__":
    main()
