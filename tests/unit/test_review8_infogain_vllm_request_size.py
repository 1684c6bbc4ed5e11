"""InfoGain review 8: a prompt_logprobs request carries at most MAX_PROMPT_TOKENS_PER_REQUEST prompt tokens, since
its reply holds an entry per prompt token (~700 bytes each once parsed) and is parsed whole."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

from server.backends.lm.causal_lm import LmEstimator  # noqa: E402
from server.backends.lm.vllm_lm import VllmCausalLm  # noqa: E402
from server.backends.vllm_client import VllmClient  # noqa: E402
from server.pipeline.deadline import NO_DEADLINE  # noqa: E402
from tests.contract.test_vllm_lm import QUESTION, fake_server  # noqa: E402
from tests.helpers.tiny_lm import chain  # noqa: E402

BUDGET = 32768


def constant(ids: list[int]) -> list[float]:
    return [-0.5] * (len(ids) - 1)


async def test_a_long_chains_prompts_are_split_by_their_tokens():
    """31 prefixes of up to ~3.3k tokens (about 50k in all) went in one request, under the 64-prompt cap: with
    a long-context model, 64 prefixes of 25k tokens were a 130 MB reply, 1.1 GB once parsed."""
    steps = chain(30, seed=4, words_per_step=(90, 110))
    with fake_server(max_model_len=32768, scorer=constant) as fake:
        estimator = LmEstimator(VllmCausalLm(VllmClient(fake.base_url, max_retries=0), "tiny"))
        try:
            scores = await estimator.score_prefixes(QUESTION, steps, "insulin", NO_DEADLINE)
        finally:
            await estimator.aclose()
    sent = [body["prompt"] for path, body in fake.requests if path == "/v1/completions"]
    sizes = [sum(map(len, prompts)) for prompts in sent]
    assert sum(sizes) > 1.5 * BUDGET  # the chain is over the budget
    assert len(sent) > 1 and all(size <= BUDGET for size in sizes)
    assert sum(map(len, sent)) == len(steps) + 1 and scores.llm_calls == len(sent)
    assert scores.nll == pytest.approx([0.5 * scores.answer_tokens] * (len(steps) + 1))
