"""Server runtime against a real server: a model's own errors and the batch metrics."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from client import AsyncVerifierClient, VerifierError
from server.app import start_server
from tests.conftest import make_settings

STEPS = ["Heparin is an anticoagulant.", "Protamine sulfate neutralizes heparin."]


def _scrape(address):
    families = text_string_to_metric_families(httpx.get(f"http://{address}/metrics", timeout=5).text)
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families for s in f.samples}


def _judge_model(samples, name):
    return sum(value for (metric, labels), value in samples.items()
               if metric == name and dict(labels).get("model", "").startswith("kgverify-nli-judge"))


@pytest.fixture
async def nli_server(cache_dir, demo_kb_path, monkeypatch):
    """A real server with the real NLI judge, whose model call times out on its own for claims saying so."""
    from server.backends.judges.nli_model import NliModel

    scored = NliModel.predict_proba

    def predict_proba(self, pairs, *args, **kwargs):
        if any("device-timeout" in claim for _, claim in pairs):
            raise TimeoutError("the accelerator did not answer within 5 s")
        return scored(self, pairs, *args, **kwargs)

    monkeypatch.setattr(NliModel, "predict_proba", predict_proba)
    server = await start_server(make_settings(cache_dir, metrics={"port": 0}), ["127.0.0.1:0"])
    await server.wait_ready(300)
    yield server
    await server.stop(0)


async def test_a_model_timing_out_on_its_own_is_not_the_callers_deadline_and_is_not_counted_as_served(nli_server):
    """The model's own TimeoutError came back as DEADLINE_EXCEEDED / BACKEND_TIMEOUT "the deadline expired while
    waiting for the model" (a client would retry with a longer deadline, in vain), and its failed batch was counted
    in kgverify_batches_total / kgverify_batch_items_total like a served one."""
    async with AsyncVerifierClient(nli_server.addresses[0], retries=0) as client:
        before = await asyncio.to_thread(_scrape, nli_server.metrics_address)
        with pytest.raises(VerifierError) as info:
            await client.score_knowledge(timeout_s=60.0, steps=["Protamine sulfate neutralizes heparin "
                                                                "(device-timeout)."])
        assert info.value.code == "INTERNAL" and info.value.reason != "BACKEND_TIMEOUT", info.value
        after = await asyncio.to_thread(_scrape, nli_server.metrics_address)
        for name in ("kgverify_batches_total", "kgverify_batch_items_total"):
            assert _judge_model(after, name) == _judge_model(before, name), name

        score = await client.score_knowledge(timeout_s=60.0, steps=STEPS)  # the model serves on
        assert score.steps[1].verdict == "supported"
        served = await asyncio.to_thread(_scrape, nli_server.metrics_address)
        assert _judge_model(served, "kgverify_batches_total") > _judge_model(after, "kgverify_batches_total")
