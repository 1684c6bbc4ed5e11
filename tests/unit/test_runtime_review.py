"""The local model runtime under load: which executor the InfoGain estimators' work runs on, how much of it they do,
and what the micro-batcher computes for requests that no longer wait for it."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from server.backends.judges.nli_model import DEFAULT_MODEL_DIR, NliModel
from server.backends.lm.nli_estimator import NliEstimator
from server.batching import MicroBatcher
from server.pipeline.deadline import NO_DEADLINE
from server.pipeline.runtime import Blocking

HANG_GUARD_S = 30  # only catches a hang; nothing here depends on timing
QUESTION = "Question: which drug lowers the blood glucose?"


class RecordingBlocking(Blocking):
    """The server's Blocking, recording the module of every callable it runs."""

    def __init__(self, executor):
        super().__init__(executor)
        self.modules: list[str | None] = []

    async def run(self, fn, *args, **kwargs):
        self.modules.append(getattr(fn, "__module__", None))
        return await super().run(fn, *args, **kwargs)


class RecordingExecutor(ThreadPoolExecutor):
    def __init__(self):
        super().__init__(2, thread_name_prefix="asyncio-default")
        self.submitted = 0

    def submit(self, fn, /, *args, **kwargs):
        self.submitted += 1
        return super().submit(fn, *args, **kwargs)


# ---- the lm estimator: copies on the server's bounded executor, small ones inline ------------------------------

def test_the_lm_estimators_copies_run_on_the_servers_executor_and_small_ones_on_the_loop():
    """The n+1 contexts and sequences of a long chain were built with asyncio.to_thread: on asyncio's default
    executor (up to cores + 4 threads), beside the server's KGV_SERVER__EXECUTOR_WORKERS pool, unbounded by it and
    unseen by the shutdown's wait for blocking work."""
    pytest.importorskip("torch")
    from server.backends.lm.causal_lm import render_contexts
    from server.backends.lm.transformers_lm import estimator_from_settings
    from server.config import LmSettings
    from tests.helpers.tiny_lm import chain, tiny_lm_path

    executor = ThreadPoolExecutor(2, thread_name_prefix="kgv-work")
    blocking = RecordingBlocking(executor)
    # as the server builds it; most long prefixes overflow 200 tokens: only the copies are heavy
    estimator = estimator_from_settings(LmSettings(backend="transformers", model=str(tiny_lm_path("llama")),
                                                   strategy="packed", max_context_tokens=200), blocking)
    long_steps = chain(120, words_per_step=(40, 60))
    short_steps = chain(3)
    def chars(steps):
        return sum(map(len, render_contexts(QUESTION, steps)))

    assert chars(long_steps) > 1_000_000 and chars(short_steps) < 1_000
    default = RecordingExecutor()

    async def main():
        asyncio.get_running_loop().set_default_executor(default)
        async with asyncio.timeout(HANG_GUARD_S):
            blocking.modules.clear()
            small = await estimator.score_prefixes(QUESTION, short_steps, "insulin", NO_DEADLINE)
            small_hops = list(blocking.modules)
            blocking.modules.clear()
            large = await estimator.score_prefixes(QUESTION, long_steps, "insulin", NO_DEADLINE)
            return small, small_hops, large, list(blocking.modules)

    try:
        small, small_hops, large, large_hops = asyncio.run(main())
    finally:
        executor.shutdown()
    assert default.submitted == 0  # nothing on asyncio's default executor
    assert "server.backends.lm.causal_lm" in large_hops  # the long chain's copies ran on the server's executor
    assert "server.backends.lm.causal_lm" not in small_hops  # a short chain's copies cost no executor hop
    assert all(v is not None for v in small.nll)
    assert large.overflow_reason and len(large.nll) == len(long_steps) + 1


# ---- the nli estimator: the premise budget once, and only the contexts it scores ---------------------------------

class CountingScorer:
    """The shipped NLI model, counting its tokenizer calls."""

    def __init__(self, model):
        self.model = model
        self.name = model.name
        self.budgets = 0
        self.counted_texts = 0

    def premise_budget(self, hypothesis):
        self.budgets += 1
        return self.model.premise_budget(hypothesis)

    def count_tokens(self, texts):
        self.counted_texts += len(texts)
        return self.model.count_tokens(texts)

    def predict_proba(self, pairs):
        return self.model.predict_proba(pairs)


@pytest.fixture(scope="module")
def nli_model():
    if not (DEFAULT_MODEL_DIR / "config.json").exists():
        pytest.skip("the NLI judge is not exported")
    return NliModel.load(quantize=False)


STEPS = [f"Step {i}: the patient with condition {i} takes drug {i}, which lowers the blood pressure."
         for i in range(40)]


async def test_the_nli_estimator_computes_the_premise_budget_once_per_call(nli_model):
    """It was computed twice (tokenizing the answer twice) in two executor calls, each of which can wait behind a
    model batch on the shared workers."""
    scorer = CountingScorer(nli_model)
    blocking = RecordingBlocking(None)
    estimator = NliEstimator(scorer, blocking)
    scores = await estimator.score_prefixes(QUESTION, STEPS[:4], "drug 3", NO_DEADLINE)
    assert scorer.budgets == 1
    assert blocking.modules.count("server.backends.lm.nli_estimator") == 1  # one trip for the tokenizer work
    assert len(scores.nll) == 5 and all(v is not None for v in scores.nll)


async def test_an_nli_infogain_window_fits_only_the_two_contexts_it_scores(nli_model):
    """With a window, InfoGain asks for the last two L_i of each window, and the estimator fitted all W + 2 contexts
    (tokenizer calls for each) to keep two: a 256-step chain with a 255-step window tokenized ~65,000 contexts."""
    scorer = CountingScorer(nli_model)
    estimator = NliEstimator(scorer, Blocking(None))
    hypothesis = "The answer is drug 39."
    whole = estimator.fit_contexts(QUESTION, STEPS, hypothesis)
    assert estimator.fit_contexts(QUESTION, STEPS, hypothesis, last=2) == whole[-2:]
    scorer.counted_texts = 0
    windowed = await estimator.score_prefixes(QUESTION, STEPS, "drug 39", NO_DEADLINE, last=2)
    # the steps once (one call), the question and a few joined texts: not one per context of the 41
    assert scorer.counted_texts <= len(STEPS) + 10
    full = await estimator.score_prefixes(QUESTION, STEPS, "drug 39", NO_DEADLINE)
    assert windowed.nll == pytest.approx(full.nll[-2:], abs=1e-5)
    assert windowed.truncated == full.truncated[-2:]


# ---- the micro-batcher: requests gone while their batch waits for a worker ---------------------------------------

class Model:
    def __init__(self):
        self.calls: list[list[str]] = []

    def __call__(self, items):
        self.calls.append(list(items))
        return [f"out:{item}" for item in items]


async def test_a_request_cancelled_while_its_batch_waits_for_a_worker_is_not_computed():
    """The batch was taken from the queue, then waited for an executor worker (busy with other blocking work: a KB
    search, the other model): a request cancelled meanwhile still had its items computed, holding the model."""
    executor = ThreadPoolExecutor(1, thread_name_prefix="busy")
    gate = threading.Event()
    model = Model()
    b = MicroBatcher("test-model", model, Blocking(executor), max_batch_size=64, max_wait_ms=0)
    loop = asyncio.get_running_loop()
    try:
        held = loop.run_in_executor(executor, gate.wait, HANG_GUARD_S)  # the only worker is busy
        gone = asyncio.ensure_future(b.submit([f"gone{i}" for i in range(40)]))
        kept = asyncio.ensure_future(b.submit(["kept"]))
        while b.stats.batches < 1:  # both requests are in the batch waiting for the worker
            await asyncio.sleep(0.001)
        assert b.queued_items() == 0
        gone.cancel()
        with pytest.raises(asyncio.CancelledError):
            await gone
        gate.set()
        async with asyncio.timeout(HANG_GUARD_S):
            assert await kept == ["out:kept"]
            await held
        assert model.calls == [["kept"]]

        # every request of a batch gone: the model is not called at all
        gate.clear()
        held = loop.run_in_executor(executor, gate.wait, HANG_GUARD_S)
        alone = asyncio.ensure_future(b.submit(["alone"]))
        while b.stats.batches < 2:
            await asyncio.sleep(0.001)
        alone.cancel()
        with pytest.raises(asyncio.CancelledError):
            await alone
        gate.set()
        async with asyncio.timeout(HANG_GUARD_S):
            await held
            assert await b.submit(["after"]) == ["out:after"]  # the batcher still serves
        assert model.calls == [["kept"], ["after"]]
    finally:
        gate.set()
        executor.shutdown()


async def test_a_model_raising_stop_iteration_fails_its_request_and_the_batcher_serves_on():
    """An asyncio future refuses a StopIteration (TypeError in the executor's callback): the batch never finished,
    the collector waited on it forever, and every later request of that model ran into its deadline."""

    def model(items):
        if "bad" in items:
            next(iter(()))  # a model bug: StopIteration escapes
        return [f"out:{item}" for item in items]

    executor = ThreadPoolExecutor(1)
    b = MicroBatcher("test-model", model, Blocking(executor), max_batch_size=64, max_wait_ms=0)
    try:
        async with asyncio.timeout(HANG_GUARD_S):
            with pytest.raises(RuntimeError, match="StopIteration"):
                await b.submit(["bad"])
            assert await b.submit(["good"]) == ["out:good"]
    finally:
        executor.shutdown()
