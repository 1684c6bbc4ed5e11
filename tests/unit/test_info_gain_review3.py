"""InfoGain review: memory of packed passes on long chains, and the InfoGain values of the LM backends."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from server.backends.lm.causal_lm import LmEstimator  # noqa: E402
from server.backends.lm.packing import _allowed, build_layout, plan_passes  # noqa: E402
from server.backends.lm.transformers_lm import TransformersCausalLm  # noqa: E402
from server.pipeline.deadline import NO_DEADLINE  # noqa: E402
from server.pipeline.runtime import Blocking  # noqa: E402
from tests.helpers.tiny_lm import answer_of_tokens, chain, load_tiny_lm, one_torch_thread, tiny_lm_path  # noqa: E402

QUESTION = "Question: which drug lowers the blood glucose?"
TOL = 1e-4

_threads = pytest.fixture(scope="module", autouse=True)(one_torch_thread)


def independent_nll(style: str, context: str, answer_text: str) -> float:
    """-log p(answer | context) from one full forward pass, tokenized here with the pinned rule."""
    model, tok = load_tiny_lm(style)
    answer = tok(" " + answer_text, add_special_tokens=False)["input_ids"]
    prefix = tok(context + " Answer:")["input_ids"]
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([prefix + answer])).logits[0].float(), dim=-1)
    return -sum(logp[len(prefix) - 1 + j, a].item() for j, a in enumerate(answer))


def simulate(layout, passes):
    """Runs the plan of one large layout on a simulated KV cache: every node is a query exactly once, and sees
    all it may attend to (its ancestors) among the keys. Returns the largest (queries, keys) and cache size."""
    seen = np.zeros(layout.size, dtype=int)
    cache = np.zeros(0, dtype=np.int64)
    everything = np.arange(layout.size)
    widest, largest_cache = (0, 0), 0
    for p in passes:
        assert p.cached
        keys = np.concatenate([cache, p.nodes])
        seen[p.nodes] += 1
        needed = _allowed(layout, p.nodes, everything)  # queries x every node of the layout
        present = np.zeros(layout.size, dtype=bool)
        present[keys] = True
        assert not (needed & ~present[None, :]).any(), "a query misses a key it attends to"
        widest = max(widest, (len(p.nodes), len(keys)), key=lambda s: s[0] * s[1])
        largest_cache = max(largest_cache, len(keys))
        cache = keys[:p.keep]
    assert (seen == 1).all()
    assert len(cache) <= layout.size
    return widest, largest_cache


@pytest.mark.parametrize("answer", [3, 40])
@pytest.mark.parametrize("budget", [16, 64, 1000])
def test_large_layout_plans_keep_every_ancestor_and_a_stem_sized_cache(answer, budget):
    """A synthetic 256-step job: prefixes of one stem, each followed by its own answer copy (two tokens of the
    copy differing from the stem at the seam). The plan is exact and its cache never holds another branch."""
    rng = np.random.default_rng(0)
    stem = rng.integers(10, 400, 256 * 12 + answer + 3).tolist()
    cut = [len(stem) - answer - 3 - 12 * k for k in range(256, 0, -1)]
    ans = rng.integers(10, 400, answer).tolist()
    sequences = [stem[:c] + [1, 2] + ans for c in cut] + [stem]
    layout = build_layout(sequences, [len(s) - answer for s in sequences[:-1]] + [len(stem) - answer])
    passes = plan_passes([layout], budget)
    (queries, keys), cache = simulate(layout, passes)
    assert queries <= budget
    assert cache <= len(stem) + budget and keys <= len(stem) + budget


def test_a_256_step_chain_keeps_masks_and_cache_within_stem_plus_budget():
    """256 steps, 64-token answer: with every earlier node kept in the KV cache, a pass's mask and the cache
    grew with the answer copies of all steps (steps x answer tokens: 4.9x the stem here; a 200-token answer gave
    a 872 MB fp32 mask per pass and 2.5 GB peak RSS on the tiny model). Now both stay within the stem plus one
    budget, and the L_i are those of independent passes."""
    style, budget = "llama", 1024
    _, tok = load_tiny_lm(style)
    steps, target = chain(256, seed=4), answer_of_tokens(tok, 64, seed=3)
    lm = TransformersCausalLm(str(tiny_lm_path(style)), Blocking(None), max_tokens_per_pass=budget,
                              strategy="packed")
    seen = {"mask": 0, "cache": 0}
    forward = lm._forward

    def watched(tokens, positions, mask, cache, *reads):
        seen["mask"] = max(seen["mask"], mask.numel())
        if cache is not None:
            seen["cache"] = max(seen["cache"], cache.get_seq_length() + len(tokens))
        return forward(tokens, positions, mask, cache, *reads)

    lm._forward = watched
    estimator = LmEstimator(lm)
    sequences, _ = asyncio.run(estimator.answer_sequences(QUESTION, steps, target, NO_DEADLINE))
    stem = max(map(len, sequences))
    scores = asyncio.run(estimator.score_prefixes(QUESTION, steps, target, NO_DEADLINE))
    assert scores.prefill_tokens > 4 * stem  # the answer copies outweigh the stem
    assert seen["cache"] <= stem + budget
    assert seen["mask"] <= budget * (stem + budget)
    for i in (0, 1, 128, 255, 256):
        expected = independent_nll(style, "\n".join([QUESTION, *steps[:i]]), target)
        assert abs(scores.nll[i] - expected) < TOL * max(1.0, abs(expected) / 100)


class RecordingTokenizer:
    """The real tokenizer, recording the characters of each call."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.calls: list[tuple[int, int]] = []  # (texts, characters)

    def __call__(self, texts, **kwargs):
        self.calls.append((len(texts), sum(map(len, texts))))
        return self.tokenizer(texts, **kwargs)


def test_the_contexts_of_a_long_chain_are_tokenized_in_bounded_calls():
    """The n+1 contexts of a 256-step chain (a few million characters) went to the tokenizer in one call, which
    holds every token's string and offsets until it returns: 0.9 GB at once at the request limits."""
    from server.backends.lm.transformers_lm import ENCODE_CHARS

    lm = TransformersCausalLm(str(tiny_lm_path("gpt2")), Blocking(None), strategy="packed")
    _, tok = load_tiny_lm("gpt2")
    lm.tokenizer = RecordingTokenizer(tok)
    steps = chain(256, seed=2, words_per_step=(14, 18))
    sequences, n_answer = asyncio.run(LmEstimator(lm).answer_sequences(QUESTION, steps, "insulin", NO_DEADLINE))
    big = max(lm.tokenizer.calls, key=lambda call: call[1])
    assert sum(chars for _, chars in lm.tokenizer.calls) > 2 * ENCODE_CHARS  # it had to split
    assert big[1] <= ENCODE_CHARS or big[0] == 1
    answer = tok(" insulin", add_special_tokens=False)["input_ids"]
    assert n_answer == len(answer)
    context = QUESTION
    for i in range(257):  # the same ids as one call per context
        context = context if i == 0 else context + "\n" + steps[i - 1]
        assert sequences[i] == tok(context + " Answer:", add_special_tokens=False)["input_ids"] + answer


@pytest.mark.parametrize("strategy", ["packed", "walk"])
def test_paper_mode_computes_logits_once_per_token_of_a_pass(strategy):
    """Paper mode scores every token of every sequence, so a stem token predicts a token of each of the n+1
    sequences: logits were computed per read, (n+1) x tokens rows of vocabulary size (128k rows for this 120-step
    chain: 66 GB of fp32 logits with a 128k vocabulary). Each node's logits are computed once now."""
    style, budget = "llama", 1024
    model, tok = load_tiny_lm(style)
    steps, target = chain(120, seed=5), "insulin"
    lm = TransformersCausalLm(str(tiny_lm_path(style)), Blocking(None), max_tokens_per_pass=budget,
                              strategy=strategy)
    rows = []
    lm.model.lm_head.register_forward_hook(lambda module, args, output: rows.append(args[0].shape[1]))
    ppl = asyncio.run(LmEstimator(lm).paper_perplexities(QUESTION, steps, target, NO_DEADLINE))
    assert rows and max(rows) <= budget
    context = QUESTION
    for i in range(121):
        context = context if i == 0 else context + "\n" + steps[i - 1]
        if i not in (0, 1, 60, 120):
            continue
        ids = tok(context + " Answer: " + target)["input_ids"]
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), dim=-1)
        nll = -sum(logp[t - 1, ids[t]].item() for t in range(1, len(ids))) / (len(ids) - 1)
        assert ppl[i] == pytest.approx(np.exp(nll), rel=1e-4)


class Reply(dict):
    """A reply dict that a weak reference can watch."""


async def test_vllm_prompt_logprobs_replies_are_read_as_they_arrive():
    """A prompt_logprobs reply holds a dict per prompt token (~0.5 kB parsed); the n+1 prompts of a long chain are
    millions of tokens over several requests, and every request's reply was held until the last one came."""
    import gc
    import weakref

    from server.backends.lm.vllm_lm import VllmCausalLm
    from server.backends.vllm_client import VllmClient
    from tests.contract.test_vllm_lm import fake_server

    with fake_server(max_model_len=4096, scorer=lambda ids: [-1.0] * (len(ids) - 1)) as fake:
        client = VllmClient(fake.base_url, max_retries=0, max_concurrency=8)
        lm = VllmCausalLm(client, "tiny", max_prompts_per_request=3)
        replies: list[weakref.ref] = []
        alive_at_arrival: list[int] = []
        post = client.completions

        async def completions(body, deadline):
            data = Reply(await post(body, deadline))
            gc.collect()
            alive_at_arrival.append(sum(ref() is not None for ref in replies))
            replies.append(weakref.ref(data))
            return data

        client.completions = completions
        try:
            scores = await LmEstimator(lm).score_prefixes(QUESTION, chain(11, seed=1), "insulin", NO_DEADLINE)
        finally:
            await lm.aclose()
    assert len(replies) == 4 and scores.llm_calls == 4
    assert max(alive_at_arrival) == 0
    assert all(value == pytest.approx(scores.answer_tokens) for value in scores.nll)
