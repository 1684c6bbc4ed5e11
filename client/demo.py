"""`kgverify demo`: score the bundled example chains and print per-step verdicts and InfoGain."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .aio import AsyncVerifierClient
from .render import render_chain

DEMO_CHAINS = Path(__file__).parent / "demo" / "chains.jsonl"
ROW_KEYS = ("question", "reasoning", "steps", "answer", "gold_answer", "choices", "context")


def load_chains(path: Path = DEMO_CHAINS) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


async def run_demo(address: str, chains: list[dict], out=sys.stdout) -> dict[str, int]:
    """Scores each chain through the server; returns how many steps matched their expected verdicts."""
    matched = total = 0
    async with AsyncVerifierClient(address) as client:
        await client.wait_ready()
        info = await client.kb_info()
        print(f"knowledge base {info['kb_id']}: {info['num_facts']} facts, embedder {info['embedder']}\n", file=out)
        for chain in chains:
            score = await client.score_chain(**{k: chain[k] for k in ROW_KEYS if k in chain})
            expected = chain.get("expected")
            print(f"== {chain['id']}: {chain.get('note', '')}", file=out)
            print(render_chain(score, chain.get("question", ""), expected), file=out)
            print(file=out)
            if expected:
                total += len(expected)
                matched += sum(want == step.verdict for want, step in zip(expected, score.steps))
        judge = score.provenance.get("judge", "?")
    print(f"{matched}/{total} steps got the verdict they were written for (judge {judge}).", file=out)
    return {"matched": matched, "total": total}
