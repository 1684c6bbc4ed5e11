"""The vLLM causal LM against the fake vLLM server whose log-probabilities come from the same tiny model."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from server.backends.lm.causal_lm import ZERO_PROBABILITY, LmEstimator  # noqa: E402
from server.backends.lm.transformers_lm import TransformersCausalLm  # noqa: E402
from server.backends.lm.vllm_lm import VllmCausalLm, _read_generated  # noqa: E402
from server.backends.vllm_client import VllmClient  # noqa: E402
from server.pipeline.deadline import NO_DEADLINE, Deadline  # noqa: E402
from server.pipeline.errors import BackendResponseError, BackendTimeoutError, BackendUnavailableError  # noqa: E402
from server.pipeline.runtime import Blocking  # noqa: E402
from tests.fakes.vllm_server import FakeVllmServer  # noqa: E402
from tests.helpers.tiny_lm import answer_of_tokens, chain, load_tiny_lm, one_torch_thread, tiny_lm_path  # noqa: E402

QUESTION = "Question: which drug lowers the blood glucose?"
TOL = 1e-4
STYLE = "llama"
_threads = pytest.fixture(scope="module", autouse=True)(one_torch_thread)


def model_scorer(ids: list[int]) -> list[float]:
    """log p(ids[t] | ids[:t]) for t >= 1 from the tiny model (what vLLM's prompt_logprobs report)."""
    model, _ = load_tiny_lm(STYLE)
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), dim=-1)
    return [logp[t - 1, ids[t]].item() for t in range(1, len(ids))]


def fake_server(**kwargs) -> FakeVllmServer:
    _, tok = load_tiny_lm(STYLE)
    return FakeVllmServer(model="tiny", scorer=kwargs.pop("scorer", model_scorer),
                          tokenizer=lambda text, special: tok(text, add_special_tokens=special)["input_ids"],
                          decode=lambda t: tok.decode([t]), **kwargs)


@pytest.fixture(scope="module")
def local_lm() -> TransformersCausalLm:
    return TransformersCausalLm(str(tiny_lm_path(STYLE)), Blocking(None), strategy="packed")


@pytest.fixture
def fake():
    with fake_server(max_model_len=4096, prefix_cache_block=16, prompt_tokens_details=True) as server:
        yield server


def vllm_estimator(fake, **kwargs) -> LmEstimator:
    client = VllmClient(fake.base_url, timeout_s=kwargs.pop("timeout_s", 30.0), max_retries=1, backoff_s=0.01)
    return LmEstimator(VllmCausalLm(client, "tiny", **kwargs))


def completions(fake) -> list[dict]:
    return [body for path, body in fake.requests if path == "/v1/completions"]


@pytest.mark.parametrize("scoring", ["prompt_logprobs", "cached"])
@pytest.mark.parametrize("n_answer", [1, 20])
async def test_vllm_agrees_with_transformers(fake, local_lm, scoring, n_answer):
    _, tok = load_tiny_lm(STYLE)
    steps, target = chain(5, seed=5), answer_of_tokens(tok, n_answer)
    expected = await LmEstimator(local_lm).score_prefixes(QUESTION, steps, target, NO_DEADLINE)
    estimator = vllm_estimator(fake, scoring=scoring)
    try:
        got = await estimator.score_prefixes(QUESTION, steps, target, NO_DEADLINE)
    finally:
        await estimator.aclose()
    assert got.answer_tokens == expected.answer_tokens == n_answer
    assert max(abs(a - b) for a, b in zip(got.nll, expected.nll)) < TOL
    assert estimator.name == "lm:vllm:tiny"


async def test_one_request_with_token_id_prompts_and_prompt_logprobs(fake):
    _, tok = load_tiny_lm(STYLE)
    steps = chain(6, seed=2)
    estimator = vllm_estimator(fake)
    try:
        scores = await estimator.score_prefixes(QUESTION, steps, "insulin", NO_DEADLINE)
    finally:
        await estimator.aclose()
    (body,) = completions(fake)
    assert body["prompt_logprobs"] == 0 and body["max_tokens"] == 1 and body["model"] == "tiny"
    prompts = body["prompt"]
    assert len(prompts) == 7 and all(isinstance(p, list) and all(isinstance(t, int) for t in p) for p in prompts)
    answer = tok(" insulin", add_special_tokens=False)["input_ids"]
    context = QUESTION
    for i, prompt in enumerate(prompts):  # the pinned tokenization: BOS + c_i + " Answer:", then " " + A
        context = context if i == 0 else context + "\n" + steps[i - 1]
        assert prompt == tok(context + " Answer:")["input_ids"] + answer
    assert scores.prefill_tokens == sum(map(len, prompts))  # no prefix-cache reads with prompt_logprobs
    assert scores.llm_calls == 1


async def test_prompts_are_split_across_requests_without_changing_results(fake):
    steps = chain(6, seed=3)
    one = vllm_estimator(fake)
    split = vllm_estimator(fake, max_prompts_per_request=2)
    try:
        a = await one.score_prefixes(QUESTION, steps, "insulin", NO_DEADLINE)
        b = await split.score_prefixes(QUESTION, steps, "insulin", NO_DEADLINE)
    finally:
        await one.aclose(), await split.aclose()
    assert b.llm_calls == 4 and len(completions(fake)) == 5
    assert a.nll == pytest.approx(b.nll, abs=1e-9)


async def test_cached_scoring_reads_the_prefix_cache(fake):
    _, tok = load_tiny_lm(STYLE)
    steps, target = chain(8, seed=8), answer_of_tokens(tok, 1)
    plain, cached = vllm_estimator(fake), vllm_estimator(fake, scoring="cached")
    try:
        a = await plain.score_prefixes(QUESTION, steps, target, NO_DEADLINE)
        fake.requests.clear()
        b = await cached.score_prefixes(QUESTION, steps, target, NO_DEADLINE)
    finally:
        await plain.aclose(), await cached.aclose()
    bodies = completions(fake)
    assert len(bodies) == 9 == b.llm_calls  # one request per prefix and answer token
    assert all("prompt_logprobs" not in body and body["logprob_token_ids"] and body["logprobs"] == 1
               for body in bodies)
    assert max(abs(x - y) for x, y in zip(a.nll, b.nll)) < TOL
    assert b.prefill_tokens < a.prefill_tokens / 2  # the shared chain is computed about once


async def test_paper_mode_scores_the_jointly_tokenized_strings(fake, local_lm):
    steps = chain(4, seed=4)
    estimator = vllm_estimator(fake, scoring="cached")  # paper mode always uses prompt_logprobs
    try:
        got = await estimator.paper_perplexities(QUESTION, steps, "insulin", NO_DEADLINE)
    finally:
        await estimator.aclose()
    expected = await LmEstimator(local_lm).paper_perplexities(QUESTION, steps, "insulin", NO_DEADLINE)
    assert got == pytest.approx(expected, rel=1e-4)
    (body,) = completions(fake)
    assert body["prompt_logprobs"] == 0


async def test_paper_mode_sends_short_sequences_whole_too(fake, local_lm):
    """Short strings fit `cached` scoring's per-token requests; paper mode still sends one prompt_logprobs request."""
    estimator = vllm_estimator(fake, scoring="cached")
    try:
        got = await estimator.paper_perplexities("Q?", ["a b", "c"], "d", NO_DEADLINE)
    finally:
        await estimator.aclose()
    expected = await LmEstimator(local_lm).paper_perplexities("Q?", ["a b", "c"], "d", NO_DEADLINE)
    assert got == pytest.approx(expected, rel=1e-4)
    (body,) = completions(fake)
    assert body["prompt_logprobs"] == 0 and len(body["prompt"]) == 3


async def test_clamped_minus_inf_is_zero_probability():
    _, tok = load_tiny_lm(STYLE)
    steps = ["Step 1: the heart.", "Step 2: the liver.", "Step 3: the bone."]
    liver = tok(" liver", add_special_tokens=False)["input_ids"]
    answer = tok(" insulin", add_special_tokens=False)["input_ids"]

    def scorer(ids):  # -inf for the answer right after a context that mentions the liver (clamped to -9999.0)
        values = model_scorer(ids)
        mentions = any(ids[k:k + len(liver)] == liver for k in range(len(ids) - len(answer)))
        return [float("-inf") if mentions and t == len(ids) - 1 else v for t, v in enumerate(values, start=1)]

    with fake_server(scorer=scorer) as server:
        estimator = vllm_estimator(server)
        try:
            scores = await estimator.score_prefixes(QUESTION, steps, "insulin", NO_DEADLINE)
        finally:
            await estimator.aclose()
        raw = completions(server)[0]
    assert scores.nll[0] is not None and scores.nll[1] is not None
    assert scores.nll[2:] == (None, None)
    assert scores.null_reasons[2] == ZERO_PROBABILITY and scores.overflow_reason == ""
    assert all(math.isfinite(v) for v in scores.nll[:2])
    assert len(raw["prompt"]) == 4


async def test_prefixes_beyond_max_model_len_are_not_sent():
    _, tok = load_tiny_lm(STYLE)
    steps = chain(5, seed=6)
    answer = len(tok(" insulin", add_special_tokens=False)["input_ids"])
    lengths = []
    context = QUESTION
    for i in range(6):
        context = context if i == 0 else context + "\n" + steps[i - 1]
        lengths.append(len(tok(context + " Answer:")["input_ids"]) + answer)
    with fake_server(max_model_len=lengths[2] + 1) as server:  # one slot is kept for the generated token
        estimator = vllm_estimator(server)
        try:
            scores = await estimator.score_prefixes(QUESTION, steps, "insulin", NO_DEADLINE)
        finally:
            await estimator.aclose()
        (body,) = completions(server)
    assert len(body["prompt"]) == 3
    assert scores.nll[3:] == (None, None, None) and None not in scores.nll[:3]
    assert "context is" in scores.overflow_reason


async def test_local_tokenizer_skips_tokenize_requests(fake, local_lm):
    _, tok = load_tiny_lm(STYLE)
    client = VllmClient(fake.base_url)
    estimator = LmEstimator(VllmCausalLm(client, "tiny", tokenizer=tok))
    try:
        got = await estimator.score_prefixes(QUESTION, chain(3), "insulin", NO_DEADLINE)
    finally:
        await estimator.aclose()
    assert "/tokenize" not in fake.paths()
    expected = await LmEstimator(local_lm).score_prefixes(QUESTION, chain(3), "insulin", NO_DEADLINE)
    assert max(abs(a - b) for a, b in zip(got.nll, expected.nll)) < TOL


async def test_failures_map_to_domain_errors(fake):
    estimator = vllm_estimator(fake, timeout_s=0.2)
    try:
        fake.faults.delay_s = 0.5
        with pytest.raises(BackendTimeoutError):
            await estimator.score_prefixes(QUESTION, chain(2), "insulin", Deadline.after(5))
        fake.faults.delay_s = 0.0
        fake.faults.malformed_body = True
        with pytest.raises(BackendResponseError):
            await estimator.score_prefixes(QUESTION, chain(2), "insulin", NO_DEADLINE)
        fake.faults.malformed_body = False
        fake.faults.dead_engine = True
        assert not await estimator.ready()
    finally:
        await estimator.aclose()
    with pytest.raises(BackendResponseError, match="logprob_token_ids"):
        _read_generated({"logprobs": {"top_logprobs": [{"token_id:5": -1.0}]}}, 7)  # an older vLLM ignored it


async def test_unreachable_vllm_is_unavailable():
    server = fake_server().start()
    url = server.base_url
    server.stop()
    client = VllmClient(url, max_retries=1, backoff_s=0.01)
    estimator = LmEstimator(VllmCausalLm(client, "tiny"))
    try:
        with pytest.raises(BackendUnavailableError):
            await estimator.score_prefixes(QUESTION, chain(2), "insulin", NO_DEADLINE)
    finally:
        await estimator.aclose()


@pytest.mark.parametrize("value", [2.5, float("inf"), float("nan")])
def test_impossible_logprobs_are_a_bad_answer(value):
    from server.backends.lm.vllm_lm import _logprob
    with pytest.raises(BackendResponseError, match="impossible log-probability"):
        _logprob(value)
