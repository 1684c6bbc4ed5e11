"""Cross-request micro-batching changes no result: the same concurrent requests on a server with batching on
and one with it off give the same verdicts, evidence and probabilities.

Both servers run the shipped NLI judge (in fp32, then in bfloat16) and the nli InfoGain estimator with
the verdict cache off, so every claim is scored by the model. The requests are the demo chains whole
(ScoreChain: KI and InfoGain), again as ScoreKnowledge against context passages, and each knowledge step
alone (many small concurrent requests, the sidecar pattern), all sent at once so the batching server
mixes them in its model calls.

fp32 rows do not depend on the other rows of a call (measured: at most 5e-7 apart), hence the 1e-5
tolerance. bfloat16 rows would (rounding to 8 mantissa bits amplifies the padding width's effect, up to
0.006 in probability), so in bfloat16 each row is padded to a width fixed by its own length and batched
only with rows of that width, and the fp32 head runs one row at a time: bit-identical in any batch.
Batched int8 rows are not batch-invariant: dynamic quantization scales each layer's input by the range of
the whole batch, which moved P(supported) of one demo claim from 0.26 to 0.86 between batch compositions
(docs/performance.md). So the int8 model scores one pair per pass (a test below).
"""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest

from client import AsyncVerifierClient
from server.backends.registry import SHIPPED_NLI_MODEL
from tests.conftest import REPO, make_settings

CHAINS = [json.loads(line) for line in (REPO / "client" / "demo" / "chains.jsonl").read_text().splitlines()
          if line.strip()]
FACTS = {f["id"]: f["text"] for f in map(json.loads, (REPO / "kb" / "demo" / "facts.jsonl").read_text().splitlines())}
PROB_TOL = 1e-5
NLL_TOL = 1e-4  # -log P(supported): the same difference divided by P(supported), floored at 0.1 here

pytestmark = pytest.mark.skipif(not (SHIPPED_NLI_MODEL / "config.json").exists(),
                                reason=f"the trained NLI judge is not in {SHIPPED_NLI_MODEL}")


def batcher_stats(server) -> list:
    return [b.stats for key, b in server.runtime.ctx._cache.items() if key.startswith("batcher:")]


@pytest.fixture(scope="module", params=["float32", "bfloat16"])
async def servers(request, cache_dir, demo_kb_path):
    from server.app import start_server

    started = []
    for enabled in (True, False):
        settings = make_settings(cache_dir, judge={"backend": "nli", "cache_size": 0, "nli_int8": False,
                                                   "nli_dtype": request.param},
                                 lm={"backend": "nli"},
                                 batching={"enabled": enabled, "max_batch_size": 16, "max_wait_ms": 5})
        started.append(await start_server(settings, ["127.0.0.1:0"]))
    await asyncio.gather(*(s.wait_ready(300) for s in started))
    yield started
    for server in started:
        await server.stop(0)


def requests() -> list[tuple[str, dict]]:
    out = []
    for chain in CHAINS[:6]:  # 6 of the 10 demo chains: over 30 claims, and the test stays short
        whole = {k: chain[k] for k in ("question", "steps", "answer", "gold_answer", "choices") if k in chain}
        out.append(("chain", whole))
        context = [FACTS[f] for f in chain["kb_fact_ids"] if f is not None]
        if context:
            out.append(("knowledge", {"question": chain["question"], "steps": chain["steps"], "context": context}))
        for step, fact_id in zip(chain["steps"], chain["kb_fact_ids"]):
            if fact_id is not None:
                out.append(("knowledge", {"question": chain["question"], "steps": [step]}))
    return out


async def send_all(address: str) -> list:
    async with AsyncVerifierClient(address, retries=0) as client:
        calls = [client.score_chain(metrics=("ki", "infogain"), timeout_s=120, **kw) if kind == "chain"
                 else client.score_knowledge(timeout_s=120, **kw) for kind, kw in requests()]
        return await asyncio.gather(*calls)


def probs(p) -> list[float]:
    return [] if p is None else [p.supported, p.contradicted, p.not_enough_info]


async def test_batching_on_and_off_give_the_same_results(servers):
    on, off = servers
    batched, alone = await send_all(on.addresses[0]), await send_all(off.addresses[0])

    worst_prob, worst_nll, claims = 0.0, 0.0, 0
    for a, b in zip(batched, alone):
        assert a.chain_text == b.chain_text
        assert (a.knowledge_index, a.counts, a.first_error_step) == (b.knowledge_index, b.counts, b.first_error_step)
        for sa, sb in zip(a.steps, b.steps, strict=True):
            assert sa.verdict == sb.verdict
            assert [e.fact_id for e in sa.evidence] == [e.fact_id for e in sb.evidence]
            for ca, cb in zip(sa.claims, sb.claims, strict=True):
                claims += 1
                assert (ca.verdict, ca.cached, cb.cached) == (cb.verdict, False, False)
                pa, pb = probs(ca.probabilities), probs(cb.probabilities)
                assert len(pa) == len(pb)
                worst_prob = max([worst_prob, *(abs(x - y) for x, y in zip(pa, pb))])
            if sa.nll is not None or sb.nll is not None:
                worst_nll = max(worst_nll, abs(sa.nll - sb.nll))
    assert claims >= 30
    assert worst_prob <= PROB_TOL, f"largest probability difference {worst_prob:.2e}"
    assert worst_nll <= NLL_TOL, f"largest InfoGain NLL difference {worst_nll:.2e}"

    # The comparison means something only if the first server really mixed requests and the second never did.
    merged = batcher_stats(on)
    assert merged and sum(s.batches for s in merged) < sum(s.requests for s in merged)
    assert all(s.batches >= s.requests for s in batcher_stats(off))
    print(f"\nlargest differences: probability {worst_prob:.2e}, nll {worst_nll:.2e}; batches on "
          f"{[(s.requests, s.batches, s.largest_batch) for s in merged]}")


def test_a_pairs_int8_probabilities_do_not_depend_on_its_neighbours(cache_dir):
    from server.backends.registry import BackendContext
    from server.pipeline.runtime import Blocking

    int8 = BackendContext(make_settings(cache_dir, judge={"nli_int8": True}), Blocking(None)).nli_model()
    assert int8.quantized and int8.batch_invariant
    pair = ("The area of a circle equals pi multiplied by the square of its radius, A = pi r^2.",
            "The area of a circle equals 2 times pi times its radius.")
    neighbours = [("Metformin is a first-line drug for type 2 diabetes in most adults.", "Metformin lowers glucose."),
                  ("x" * 900, "A long premise pads every other row of a batch."),
                  ("Aspirin irreversibly inhibits cyclooxygenase.", "Aspirin inhibits COX.")]
    alone = int8.predict_proba([pair])[0]
    for k in range(1, len(neighbours) + 1):
        mixed = int8.predict_proba(neighbours[:k] + [pair] + neighbours[k:], batch_size=32)[k]
        np.testing.assert_allclose(mixed, alone, atol=1e-7)


def test_a_pairs_bfloat16_probabilities_do_not_depend_on_its_neighbours(cache_dir):
    from server.backends.registry import BackendContext
    from server.pipeline.runtime import Blocking

    context = BackendContext(make_settings(cache_dir, judge={"nli_dtype": "bfloat16"}), Blocking(None))
    model = context.nli_model()
    assert model.dtype == "bfloat16" and model.batch_invariant and model.model_id.endswith("+bf16")
    assert context.pair_batcher(model).enabled
    pair = ("The area of a circle equals pi multiplied by the square of its radius, A = pi r^2.",
            "The area of a circle equals 2 times pi times its radius.")
    neighbours = [("Metformin is a first-line drug for type 2 diabetes in most adults.", "Metformin lowers glucose."),
                  ("x" * 900, "A long premise pads every other row of a batch."),
                  ("The circle's area is pi r squared, for a circle of radius r.", "A circle's area is pi r^2."),
                  ("Aspirin irreversibly inhibits cyclooxygenase.", "Aspirin inhibits COX.")]
    alone = model.predict_proba([pair])[0]
    for k in range(1, len(neighbours) + 1):
        mixed = model.predict_proba(neighbours[:k] + [pair] + neighbours[k:], batch_size=32)[k]
        np.testing.assert_array_equal(mixed, alone)
