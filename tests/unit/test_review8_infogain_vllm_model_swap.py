"""InfoGain review 8: another model served under the same name (the compose file serves ${MODEL} as "judge") is
tokenized as that model: the BOS and space probes of the first model were kept for good, silently."""

from __future__ import annotations

import dataclasses

import pytest

torch = pytest.importorskip("torch")

from server.backends.lm import vllm_lm  # noqa: E402
from server.backends.lm.causal_lm import LmEstimator  # noqa: E402
from server.backends.lm.vllm_lm import VllmCausalLm  # noqa: E402
from server.backends.vllm_client import VllmClient  # noqa: E402
from server.pipeline.deadline import NO_DEADLINE  # noqa: E402
from tests.fakes.vllm_server import FakeVllmServer  # noqa: E402
from tests.helpers.tiny_lm import chain, load_tiny_lm, one_torch_thread  # noqa: E402

_threads = pytest.fixture(scope="module", autouse=True)(one_torch_thread)
TOL = 1e-4


@dataclasses.dataclass
class SwappableVllm(FakeVllmServer):
    """The fake vLLM, whose /v1/models names the model path as vLLM does (`root`)."""

    root: str = ""

    def _models(self) -> dict:
        out = super()._models()
        for card in out["data"]:
            card["root"] = self.root
        return out

    def serve(self, style: str) -> None:
        """Loads the tiny `style` model (its tokenizer and log-probabilities) under the same served name."""
        model, tok = load_tiny_lm(style)

        def scorer(ids):
            with torch.no_grad():
                logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), dim=-1)
            return [logp[t - 1, ids[t]].item() for t in range(1, len(ids))]

        self.scorer, self.root = scorer, f"tiny-{style}"
        self.tokenizer = lambda text, special: tok(text, add_special_tokens=special)["input_ids"]


def estimator(fake) -> LmEstimator:
    return LmEstimator(VllmCausalLm(VllmClient(fake.base_url, max_retries=0), "judge"))


async def test_a_model_swapped_under_the_served_name_is_probed_again(monkeypatch):
    """gpt2-style (no BOS) then llama-style (BOS) under "judge": every later prompt lacked the BOS the new model's
    tokenizer adds, and the scores differed from the same vLLM's scores to a server started afresh."""
    monkeypatch.setattr(vllm_lm, "CONTEXT_TTL_S", 0.0)  # vLLM's restart takes longer than the re-read interval
    steps = chain(4, seed=3)
    with SwappableVllm(model="judge", max_model_len=4096) as fake:
        fake.serve("gpt2")
        running = estimator(fake)
        fresh = None
        try:
            before = await running.score_prefixes("Question: which drug?", steps, "insulin", NO_DEADLINE)
            fake.serve("llama")
            after = await running.score_prefixes("Question: which drug?", steps, "insulin", NO_DEADLINE)
            sent = [body for path, body in fake.requests if path == "/v1/completions"][-1]
            fresh = estimator(fake)
            expected = await fresh.score_prefixes("Question: which drug?", steps, "insulin", NO_DEADLINE)
        finally:
            await running.aclose()
            if fresh is not None:
                await fresh.aclose()
    assert max(abs(a - b) for a, b in zip(after.nll, expected.nll)) < TOL
    assert max(abs(a - b) for a, b in zip(before.nll, expected.nll)) > 0.1  # the two models do differ
    bos = load_tiny_lm("llama")[1].bos_token_id
    assert all(prompt[0] == bos for prompt in sent["prompt"])  # the running server's prompts after the swap
