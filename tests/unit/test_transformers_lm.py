"""The transformers causal LM: packed passes and the KV walk equal n+1 independent passes on tiny random models."""

from __future__ import annotations

import asyncio
import math

import pytest

torch = pytest.importorskip("torch")

from server.backends.lm.causal_lm import ANSWER_CUE, LmEstimator, ScoringJob  # noqa: E402
from server.backends.lm.transformers_lm import TransformersCausalLm  # noqa: E402
from server.pipeline.deadline import NO_DEADLINE  # noqa: E402
from server.pipeline.errors import BackendNotConfiguredError  # noqa: E402
from server.pipeline.runtime import Blocking  # noqa: E402
from tests.helpers.tiny_lm import answer_of_tokens, chain, load_tiny_lm, one_torch_thread, tiny_lm_path  # noqa: E402

STYLES = ("llama", "gpt2")
QUESTION = "Question: which drug lowers the blood glucose?"
TOL = 1e-4


_threads = pytest.fixture(scope="module", autouse=True)(one_torch_thread)


@pytest.fixture(scope="module", params=STYLES)
def style(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def packed_lm(style) -> TransformersCausalLm:
    return TransformersCausalLm(str(tiny_lm_path(style)), Blocking(None), strategy="packed")


def independent_nll(style: str, context0: str, steps: list[str], target: str) -> list[float]:
    """-log p(answer | c_i) from one full forward pass per prefix, tokenized here with the pinned rule."""
    model, tok = load_tiny_lm(style)
    answer = tok(" " + target, add_special_tokens=False)["input_ids"]
    out, context = [], context0
    for i in range(len(steps) + 1):
        if i:
            context = context + "\n" + steps[i - 1]
        prefix = tok(context + " Answer:")["input_ids"]  # the tiny tokenizers add BOS only (llama) or nothing
        with torch.no_grad():
            logits = model(torch.tensor([prefix + answer])).logits[0].float()
        logp = torch.log_softmax(logits, dim=-1)
        out.append(-sum(logp[len(prefix) - 1 + j, a].item() for j, a in enumerate(answer)))
    return out


def run(coro):
    return asyncio.run(coro)


@pytest.mark.parametrize("n_steps", [1, 5, 30])
@pytest.mark.parametrize("n_answer", [1, 20])
def test_packed_equals_independent_passes(style, packed_lm, n_steps, n_answer):
    _, tok = load_tiny_lm(style)
    steps, target = chain(n_steps, seed=n_steps), answer_of_tokens(tok, n_answer, seed=n_answer)
    before = packed_lm.forward_passes
    scores = run(LmEstimator(packed_lm).score_prefixes(QUESTION, steps, target, NO_DEADLINE))
    assert packed_lm.forward_passes - before == 1  # all n+1 conditionals from one pass
    assert scores.answer_tokens == n_answer
    expected = independent_nll(style, QUESTION, steps, target)
    assert len(scores.nll) == n_steps + 1
    assert max(abs(a - b) for a, b in zip(scores.nll, expected)) < TOL
    # The values vary with the prefix, so agreement is not an accident of a flat model.
    assert max(expected) - min(expected) > 0.1 or n_steps == 1


def test_prefill_counts_shared_tokens_once(style, packed_lm):
    _, tok = load_tiny_lm(style)
    steps, target = chain(30, seed=3), answer_of_tokens(tok, 20)
    scores = run(LmEstimator(packed_lm).score_prefixes(QUESTION, steps, target, NO_DEADLINE))
    context = QUESTION
    longest = len(tok(QUESTION + "\n" + "\n".join(steps) + ANSWER_CUE)["input_ids"]) + 20
    independent = 0
    for i in range(31):
        context = context if i == 0 else context + "\n" + steps[i - 1]
        independent += len(tok(context + ANSWER_CUE)["input_ids"]) + 20
    assert longest <= scores.prefill_tokens < independent / 4


@pytest.mark.parametrize("budget", [16, 64, 300])
def test_budget_splits_long_chains_without_changing_results(style, budget):
    _, tok = load_tiny_lm(style)
    steps, target = chain(30, seed=7), answer_of_tokens(tok, 20, seed=2)
    lm = TransformersCausalLm(str(tiny_lm_path(style)), Blocking(None), max_tokens_per_pass=budget, strategy="packed")
    scores = run(LmEstimator(lm).score_prefixes(QUESTION, steps, target, NO_DEADLINE))
    assert lm.forward_passes >= scores.prefill_tokens // budget > 1  # it really split
    expected = independent_nll(style, QUESTION, steps, target)
    assert max(abs(a - b) for a, b in zip(scores.nll, expected)) < TOL


@pytest.mark.parametrize("budget", [24, 4096])
def test_kv_walk_equals_independent_passes(style, budget):
    _, tok = load_tiny_lm(style)
    steps, target = chain(5, seed=11), answer_of_tokens(tok, 20, seed=5)
    lm = TransformersCausalLm(str(tiny_lm_path(style)), Blocking(None), max_tokens_per_pass=budget, strategy="walk")
    scores = run(LmEstimator(lm).score_prefixes(QUESTION, steps, target, NO_DEADLINE))
    expected = independent_nll(style, QUESTION, steps, target)
    assert max(abs(a - b) for a, b in zip(scores.nll, expected)) < TOL


def test_several_chains_share_one_forward(style, packed_lm):
    _, tok = load_tiny_lm(style)
    estimator = LmEstimator(packed_lm)
    chains = [(chain(n, seed=n), answer_of_tokens(tok, k, seed=n)) for n, k in ((2, 1), (4, 20), (6, 3))]
    jobs = []
    for steps, target in chains:
        seqs, n_answer = run(estimator.answer_sequences(QUESTION, steps, target, NO_DEADLINE))
        jobs.append(ScoringJob(tuple(map(tuple, seqs)), tuple(len(s) - n_answer for s in seqs)))

    async def concurrently():
        return await asyncio.gather(*(packed_lm.score(job, NO_DEADLINE) for job in jobs))

    before = packed_lm.forward_passes
    results = run(concurrently())
    assert packed_lm.forward_passes - before == 1  # three concurrent chains, one forward pass
    for (steps, target), result in zip(chains, results):
        nll = [-math.fsum(lp) for lp in result.logprobs]
        expected = independent_nll(style, QUESTION, steps, target)
        assert max(abs(a - b) for a, b in zip(nll, expected)) < TOL


def test_paper_logprobs_cover_every_token_after_the_first(style, packed_lm):
    model, tok = load_tiny_lm(style)
    steps, target = chain(4, seed=4), "insulin"
    ppl = run(LmEstimator(packed_lm).paper_perplexities(QUESTION, steps, target, NO_DEADLINE))
    context = QUESTION
    for i in range(5):
        context = context if i == 0 else context + "\n" + steps[i - 1]
        ids = tok(context + " Answer: " + target)["input_ids"]
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), -1)
        nll = -sum(logp[t - 1, ids[t]].item() for t in range(1, len(ids))) / (len(ids) - 1)
        assert math.isclose(ppl[i], math.exp(nll), rel_tol=1e-4)


def test_context_overflow_drops_the_prefixes_that_do_not_fit(style, packed_lm):
    _, tok = load_tiny_lm(style)
    steps, target = chain(6, seed=1), "insulin"
    full = independent_nll(style, QUESTION, steps, target)
    lengths = []
    context = QUESTION
    for i in range(7):
        context = context if i == 0 else context + "\n" + steps[i - 1]
        lengths.append(len(tok(context + ANSWER_CUE)["input_ids"]) + len(tok(" insulin", add_special_tokens=False)
                                                                          ["input_ids"]))
    limit = lengths[3]  # c_0..c_3 fit, c_4.. do not
    scores = run(LmEstimator(packed_lm, max_context_tokens=limit).score_prefixes(QUESTION, steps, target, NO_DEADLINE))
    assert scores.nll[4:] == (None, None, None)
    assert max(abs(a - b) for a, b in zip(scores.nll[:4], full[:4])) < TOL
    assert f"{lengths[4]} tokens" in scores.overflow_reason and f"{limit} tokens" in scores.overflow_reason


def test_model_context_comes_from_its_config(style, packed_lm):
    model, _ = load_tiny_lm(style)
    expected = getattr(model.config, "max_position_embeddings", None) or model.config.n_positions
    assert run(packed_lm.context_tokens(NO_DEADLINE)) == expected


def test_probe_picks_the_walk_for_a_model_that_ignores_custom_masks(style):
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    def causal_only(module, query, key, value, attention_mask, **kwargs):
        q, k = query.shape[2], key.shape[2]  # plain causal attention, whatever mask it is given
        allowed = torch.ones(q, k, dtype=torch.bool, device=query.device).tril(k - q)
        return sdpa_attention_forward(module, query, key, value, allowed[None, None], **kwargs)

    AttentionInterface.register("kgv_causal_only", causal_only)
    lm = TransformersCausalLm(str(tiny_lm_path(style)), Blocking(None), strategy="packed")
    assert lm._probe() == "packed"
    lm.model.set_attn_implementation("kgv_causal_only")
    assert lm._probe() == "walk"
    lm.strategy = "walk"
    _, tok = load_tiny_lm(style)
    steps, target = chain(3, seed=9), answer_of_tokens(tok, 20)
    scores = run(LmEstimator(lm).score_prefixes(QUESTION, steps, target, NO_DEADLINE))
    expected = independent_nll(style, QUESTION, steps, target)
    assert max(abs(a - b) for a, b in zip(scores.nll, expected)) < TOL


def test_unusable_settings_are_not_configured_errors():
    path = str(tiny_lm_path("gpt2"))
    if not torch.cuda.is_available():
        with pytest.raises(BackendNotConfiguredError, match="CUDA"):
            TransformersCausalLm(path, Blocking(None), device="cuda")
    with pytest.raises(BackendNotConfiguredError, match="dtype"):
        TransformersCausalLm(path, Blocking(None), dtype="int8")
    with pytest.raises(BackendNotConfiguredError, match="strategy"):
        TransformersCausalLm(path, Blocking(None), strategy="fast")
    with pytest.raises(BackendNotConfiguredError, match="cannot load"):
        TransformersCausalLm("/nonexistent/model", Blocking(None))


def test_expired_deadline_times_out_and_the_job_never_runs(packed_lm):
    from server.pipeline.deadline import Deadline
    from server.pipeline.errors import BackendTimeoutError

    job = ScoringJob(((1, 2, 3, 4),), (2,))

    async def expired():
        before = packed_lm.forward_passes
        with pytest.raises(BackendTimeoutError):
            await packed_lm.score(job, Deadline.after(0))
        await asyncio.sleep(0)
        return packed_lm.forward_passes - before

    assert run(expired()) == 0


@pytest.mark.parametrize("strategy", ["packed", "walk"])
def test_a_cancelled_request_frees_the_model_after_the_pass_in_progress(style, strategy):
    """The LM's work for a request nobody waits for any more stops at the next pass, not at the end of the job."""
    import threading

    from server.backends.lm.causal_lm import ScoringJob

    _, tok = load_tiny_lm(style)
    lm = TransformersCausalLm(str(tiny_lm_path(style)), Blocking(None), max_tokens_per_pass=16, strategy=strategy)
    steps, target = chain(30, seed=7), answer_of_tokens(tok, 20, seed=2)
    estimator = LmEstimator(lm)
    first_pass, gate = threading.Event(), threading.Event()

    def hold(module, args, kwargs):
        first_pass.set()
        gate.wait(30)  # hang guard only

    handle = lm.model.register_forward_pre_hook(hold, with_kwargs=True)

    async def cancelled():
        task = asyncio.ensure_future(estimator.score_prefixes(QUESTION, steps, target, NO_DEADLINE))
        await asyncio.to_thread(first_pass.wait, 30)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task  # the request is gone while its first pass is still held
        gate.set()
        collector = lm.batcher._collector
        await asyncio.wait_for(collector, 30)  # the batch ends without running the rest of the job
        return lm.forward_passes

    passes = run(cancelled())
    handle.remove()
    assert passes <= 2
    whole = run(estimator.score_prefixes(QUESTION, steps, target, NO_DEADLINE))  # the model still serves
    assert lm.forward_passes - passes > 10
    assert max(abs(a - b) for a, b in zip(whole.nll, independent_nll(style, QUESTION, steps, target))) < TOL


def test_a_failing_forward_is_counted_as_a_failed_batch_not_a_served_one(style, monkeypatch):
    from prometheus_client import REGISTRY

    lm = TransformersCausalLm(str(tiny_lm_path(style)), Blocking(None), strategy="packed")

    def value(name):
        return REGISTRY.get_sample_value(name, {"model": lm.name}) or 0.0

    def broken(*args, **kwargs):
        raise RuntimeError("the model broke")

    monkeypatch.setattr(lm.model, "forward", broken)
    before = value("kgverify_batch_failures_total"), value("kgverify_batches_total")
    with pytest.raises(Exception):
        run(lm.score(ScoringJob(((1, 2, 3, 4),), (2,)), NO_DEADLINE))
    assert (value("kgverify_batch_failures_total"), value("kgverify_batches_total")) == (before[0] + 1, before[1])


def test_a_context_setting_above_a_learned_position_table_is_capped_to_the_table(style, packed_lm):
    """GPT-2's learned positions end at n_positions: KGV_LM__MAX_CONTEXT_TOKENS above it failed the forward (an
    index error; on CUDA a device-side assert) instead of reporting the prefixes that do not fit. Rotary positions
    (the Llama model) may be run past their configured length."""
    model, tok = load_tiny_lm(style)
    table = model.config.n_positions if style == "gpt2" else None
    assert packed_lm.context_is_hard == (style == "gpt2")
    if table is None:
        return
    steps = [" ".join(chain(40, seed=s)) for s in range(6)]
    longest = len(tok(QUESTION + "\n" + "\n".join(steps) + ANSWER_CUE)["input_ids"])
    assert longest > table
    scores = run(LmEstimator(packed_lm, max_context_tokens=4 * table).score_prefixes(QUESTION, steps, "insulin",
                                                                                        NO_DEADLINE))
    assert scores.nll[0] is not None and scores.nll[-1] is None
    assert f"{table} tokens" in scores.overflow_reason
