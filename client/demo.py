"""`kgverify demo`: score the bundled example chains and print per-step verdicts and InfoGain."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from . import requests
from .aio import AsyncVerifierClient
from .errors import VerifierError
from .readiness import wait_until_ready
from .render import printable, render_chain

DEMO_CHAINS = Path(__file__).parent / "demo" / "chains.jsonl"
ROW_KEYS = ("question", "reasoning", "steps", "answer", "gold_answer", "choices", "context")


def load_chains(path: Path = DEMO_CHAINS) -> list[dict]:
    """The chains of a JSONL file, each with an id (`chain N` when it has none); ValueError (exit status 2) for
    a file without chains or with a line that is not a JSON object or holds a field a request cannot take."""
    from .cli import read_text_file

    chains = []
    for number, line in enumerate(read_text_file(path, "--chains").splitlines(), 1):
        if not line.strip():
            continue
        try:
            chain = json.loads(line)
        except (ValueError, RecursionError):
            chain = None
        if not isinstance(chain, dict):
            raise ValueError(f"--chains {path}: line {number} is not a JSON object (one chain per line)")
        try:  # (a field the server could not take: named with its line before any server is started)
            requests.score_chain_request({k: chain[k] for k in ROW_KEYS if k in chain})
        except VerifierError as exc:
            raise ValueError(f"--chains {path}: line {number}: {exc.message}") from None
        chain.setdefault("id", f"chain {len(chains) + 1}")
        chains.append(chain)
    if not chains:
        raise ValueError(f"--chains {path} holds no chains (one JSON object per line)")
    return chains


async def run_demo(address: str, chains: list[dict], out=sys.stdout, *, credentials=None, metadata: tuple = (),
                   ready_timeout_s: float = 300.0) -> dict[str, int]:
    """Scores each chain through the server; returns how many steps matched their expected verdicts.

    Waits up to ready_timeout_s for the services the chains need (see client.readiness), and for the knowledge
    base service, whose info it prints."""
    matched = total = 0
    judge = "?"
    rows = [{k: chain[k] for k in ROW_KEYS if k in chain} for chain in chains]
    for row in rows:  # InfoGain needs a target: a chain without one is scored for KI only (as evaluate does)
        if not (row.get("answer") or row.get("gold_answer")):
            row["metrics"] = ("ki",)
    async with AsyncVerifierClient(address, credentials=credentials, metadata=metadata) as client:
        await wait_until_ready(client, [requests.score_chain_request(row) for row in rows], ready_timeout_s,
                               on_waiting=lambda message: print(message, file=sys.stderr))
        info = await client.kb_info()
        print(printable(f"knowledge base {info['kb_id']}: {info['num_facts']} facts, embedder {info['embedder']}")
              + "\n", file=out)
        for chain, row in zip(chains, rows):
            score = await client.score_chain(**row)
            expected = chain.get("expected")
            print(printable(f"== {chain['id']}: {chain.get('note', '')}"), file=out)
            if "metrics" in row:
                print("(no answer or gold_answer: KI only, no InfoGain)", file=out)
            print(render_chain(score, chain.get("question", ""), expected), file=out)
            print(file=out)
            if expected:
                total += len(expected)
                matched += sum(want == step.verdict for want, step in zip(expected, score.steps))
            judge = score.provenance.get("judge", "?")
    print(printable(f"{matched}/{total} steps got the verdict they were written for (judge {judge})."), file=out)
    return {"matched": matched, "total": total}
