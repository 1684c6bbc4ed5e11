"""The demo chains get the verdicts they were written for, from the trained embedded judge over the demo KB."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from client import AsyncVerifierClient
from server.backends.registry import SHIPPED_NLI_MODEL
from tests.conftest import REPO

CHAINS = [json.loads(line) for line in (REPO / "client" / "demo" / "chains.jsonl").read_text().splitlines()
          if line.strip()]
MODEL = Path(os.environ.get("KGV_JUDGE__NLI_MODEL_PATH") or SHIPPED_NLI_MODEL)

pytestmark = pytest.mark.skipif(not (MODEL / "config.json").exists(),
                                reason=f"the trained NLI judge is not in {MODEL} yet (training/export_nli_judge.py)")


async def test_demo_chains_get_their_written_verdicts(verifier):
    wrong = []
    async with AsyncVerifierClient(verifier.addresses[0]) as client:
        for chain in CHAINS:
            score = await client.score_knowledge(question=chain["question"], steps=chain["steps"], judge="nli")
            for i, (step, expected, fact_id) in enumerate(zip(score.steps, chain["expected"], chain["kb_fact_ids"])):
                if fact_id is not None:  # the fact the step was written against is retrieved
                    assert fact_id in [e.fact_id for e in step.evidence], (chain["id"], i)
                if step.verdict != expected:
                    top = step.evidence[0].fact_id if step.evidence else None
                    wrong.append(f"{chain['id']} step {i}: expected {expected}, got {step.verdict} "
                                 f"({step.probabilities}, deciding fact {top}, written against {fact_id})")
    assert score.provenance["judge"].startswith("kgverify-nli-judge")
    assert not wrong, "\n".join(wrong)
