"""`TransformersCausalLm`: a local transformers causal LM scoring jobs in packed forward passes.

Each job's n+1 sequences go through one packed pass (ancestor mask, restarted
position ids) under a token budget per pass; small jobs from concurrent
requests share passes; a job over the budget is cut into chunks that reuse a
KV cache. Models that ignore custom 4D masks are detected at load time by a
probe and scored with a KV-cache prefix walk instead.
"""

from __future__ import annotations

import inspect
import logging
import threading
from typing import Callable, Sequence

import numpy as np

from ...batching import Abandoned, MicroBatcher
from ...metrics import record_batch, record_batch_failure, record_out_of_memory
from ...pipeline.deadline import Deadline
from ...pipeline.errors import BackendNotConfiguredError, BackendTimeoutError
from ...pipeline.runtime import Blocking
from .causal_lm import JobLogprobs, ScoringJob
from .packing import Layout, build_layout, pass_inputs, plan_passes

log = logging.getLogger(__name__)
STRATEGIES = ("auto", "packed", "walk")
ENCODE_CHARS = 1 << 20  # characters per tokenizer call (encode)
_POSITION_TABLES = ("wpe", "embed_positions", "position_embeddings")
_CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length", "n_ctx")


class TransformersCausalLm:
    """A local causal LM (path or cached name), loaded once; forward passes run on the executor."""

    def __init__(self, model_name: str, blocking: Blocking, device: str = "cpu", dtype: str = "auto",
                 max_tokens_per_pass: int = 4096, strategy: str = "auto", timeout_s: float = 60.0,
                 batching=None):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if strategy not in STRATEGIES:
            raise BackendNotConfiguredError(f"unknown LM strategy {strategy!r} (one of {', '.join(STRATEGIES)})")
        self.device = _device(device, torch)
        self.dtype = _dtype(dtype, self.device, torch)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(model_name)
            self.model = AutoModelForCausalLM.from_pretrained(model_name, dtype=self.dtype).to(self.device).eval()
        except (OSError, ValueError) as exc:
            raise BackendNotConfiguredError(f"cannot load the causal LM {model_name!r}: {exc}") from exc
        self.name = f"transformers:{model_name}"
        self.budget = max_tokens_per_pass
        self.timeout_s = timeout_s
        self._blocking = blocking
        self._torch = torch
        self._lock = threading.Lock()  # one forward at a time: passes already use every core
        # One job (a chain's n+1 sequences) per item; the token budget, not the item count, sizes each pass.
        self.batcher = MicroBatcher(self.name, self.score_jobs, blocking, length=_job_tokens, on_batch=record_batch,
                                    on_out_of_memory=record_out_of_memory, on_failure=record_batch_failure,
                                    stoppable=True,
                                    **({} if batching is None else batching.model_dump()))
        params = inspect.signature(self.model.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"
        self._keep_logits = "logits_to_keep" in params
        self.max_context = _context_length(self.model.config)
        # A table of learned positions (GPT-2's wpe, OPT's embed_positions) has no row past the context: a longer
        # sequence fails the forward (on CUDA it can take the device context down), so KGV_LM__MAX_CONTEXT_TOKENS
        # can only lower it, as with vLLM. Rotary or ALiBi positions may be run past it.
        self.context_is_hard = self.max_context is not None and _learned_positions(self.model)
        self.forward_passes = 0
        self.local_window = _local_attention_window(self.model.config)
        if self.local_window is not None and self.max_context is not None and self.local_window >= self.max_context:
            self.local_window = None  # a window as long as the context changes nothing
        if self.local_window is not None and strategy != "walk":
            # One custom 4D mask is used as it is by every layer, so packed passes would let the layers that see
            # only the last W tokens see the whole prefix: wrong values on any sequence longer than W, which a
            # short probe never shows. The walk leaves the masks to the model.
            log.warning("this model's attention is local (a window of %d tokens) in some layers; packed passes "
                        "would ignore the window, so InfoGain uses the KV-cache walk", self.local_window)
            strategy = "walk"
        self.strategy = self._probe() if strategy == "auto" else strategy
        log.info("causal LM %s on %s (%s), strategy %s, context %s", model_name, self.device, self.dtype,
                 self.strategy, self.max_context)

    # ---- the CausalLm port -------------------------------------------------------------------
    async def tokenize(self, texts: Sequence[str], add_special_tokens: bool, deadline: Deadline) -> list[list[int]]:
        return await self._blocking.run(encode, self.tokenizer, texts, add_special_tokens)

    async def context_tokens(self, deadline: Deadline) -> int | None:
        return self.max_context

    async def score(self, job: ScoringJob, deadline: Deadline) -> JobLogprobs:
        """Queues the job; jobs of concurrent requests are scored together (the micro-batcher)."""
        timeout = deadline.timeout(self.timeout_s)
        if timeout <= 0:
            raise BackendTimeoutError("no time left in the deadline for the causal LM")
        return (await self.batcher.submit([job], Deadline.after(timeout)))[0]

    async def ready(self) -> bool:
        return True

    async def aclose(self) -> None:
        return None

    # ---- blocking work ---------------------------------------------------------------------
    def score_jobs(self, jobs: Sequence[ScoringJob], strategy: str | None = None,
                   stop: Callable[[], bool] | None = None) -> list[JobLogprobs]:
        """Scores jobs with the packed passes or the KV walk (blocking; thread-safe).

        stop: checked before every forward pass; when it returns true the work is dropped (Abandoned)."""
        layouts = [build_layout(j.sequences, j.starts) for j in jobs]
        with self._lock, self._torch.inference_mode():
            if (strategy or self.strategy) == "walk":
                values = [self._walk(layout, stop) for layout in layouts]
            else:
                values = self._packed(layouts, stop)
        return [JobLogprobs(tuple(tuple(v.tolist()) for v in lay.split(vals)), prefill_tokens=lay.size)
                for lay, vals in zip(layouts, values)]

    def _packed(self, layouts: list[Layout], stop: Callable[[], bool] | None = None) -> list[np.ndarray]:
        torch = self._torch
        out = [np.zeros(len(lay.read_node), dtype=np.float64) for lay in layouts]
        caches: dict[int, tuple[object, np.ndarray]] = {}  # job: its KV cache, and the nodes in it
        passes = plan_passes(layouts, self.budget)
        last = {p.chunks[0].job: i for i, p in enumerate(passes) if p.cached}
        for i, p in enumerate(passes):
            _check(stop)
            cache = cache_nodes = None
            if p.cached:
                cache, cache_nodes = caches.get(p.chunks[0].job) or (self._new_cache(), p.nodes[:0])
            tokens, positions, allowed = pass_inputs(layouts, p, cache_nodes)
            # Which scored tokens this pass predicts: pass-local index of the predicting node.
            reads = []
            at = 0
            for c in p.chunks:
                lay = layouts[c.job]
                if p.cached:
                    index = np.full(lay.size, -1, dtype=np.int64)
                    index[p.nodes] = np.arange(len(p.nodes))
                    slot = index[lay.read_node]
                else:
                    slot = np.where((lay.read_node >= c.start) & (lay.read_node < c.end), lay.read_node - c.start, -1)
                hit = np.flatnonzero(slot >= 0)
                reads.append((c.job, hit, slot[hit] + at, lay.read_target[hit]))
                at += p.size if p.cached else c.end - c.start
            mask = torch.zeros(allowed.shape, dtype=self.dtype, device=self.device)
            mask.masked_fill_(torch.from_numpy(~allowed).to(self.device), torch.finfo(self.dtype).min)
            del allowed
            values = self._forward(tokens, positions, mask[None, None], cache, np.concatenate([r[2] for r in reads]),
                                   np.concatenate([r[3] for r in reads]))
            del mask
            done = 0
            for job, hit, _, _ in reads:
                out[job][hit] = values[done:done + len(hit)]
                done += len(hit)
            if p.cached:
                # Keep the stem; the pass's branches are never attended to again.
                _crop_to(cache, p.keep)
                caches[p.chunks[0].job] = (cache, np.concatenate([cache_nodes, p.nodes])[:p.keep])
                if last[p.chunks[0].job] == i:
                    caches.pop(p.chunks[0].job)
        return out

    def _walk(self, lay: Layout, stop: Callable[[], bool] | None = None) -> np.ndarray:
        """KV-cache prefix walk: extend the stem, run each branch on the cache, then crop the branch away."""
        out = np.zeros(len(lay.read_node), dtype=np.float64)
        cache = self._new_cache()
        node_order = np.argsort(lay.read_node, kind="stable")
        is_stem = lay.segment == 0
        start = 0
        while start < lay.size:
            end = start + 1
            while end < lay.size and lay.segment[end] == lay.segment[start]:
                end += 1
            stem_len = cache.get_seq_length()
            for a in range(start, end, self.budget):
                b = min(end, a + self.budget)
                _check(stop)
                wanted = node_order[np.searchsorted(lay.read_node[node_order], a):
                                    np.searchsorted(lay.read_node[node_order], b)]
                out[wanted] = self._forward(lay.tokens[a:b], lay.position[a:b], None, cache,
                                            lay.read_node[wanted] - a, lay.read_target[wanted])
            if not is_stem[start]:
                _crop_to(cache, stem_len)
            start = end
        return out

    def _forward(self, tokens, positions, mask, cache, local: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """log p(targets[r] | the pass's node local[r]) for every read r.

        Logits are computed once per predicting node: in paper mode a stem token predicts the next token of every
        sequence that holds it, and logits per read were (n+1) x the pass's tokens x vocabulary floats (128k rows
        for a 120-step chain, 66 GB with a 128k vocabulary)."""
        torch = self._torch
        rows, inverse = np.unique(local, return_inverse=True)
        kwargs = {"input_ids": torch.as_tensor(tokens, device=self.device)[None],
                  "position_ids": torch.as_tensor(positions, device=self.device)[None]}
        if mask is not None:
            kwargs["attention_mask"] = mask
        if cache is not None:
            kwargs[self._cache_kw] = cache
            kwargs["use_cache"] = True
        else:
            kwargs["use_cache"] = False
        keep = torch.as_tensor(rows, dtype=torch.long, device=self.device)
        if self._keep_logits:
            kwargs["logits_to_keep"] = keep
        self.forward_passes += 1
        logits = self.model(**kwargs).logits[0]
        if not self._keep_logits:
            logits = logits[keep]
        logp = torch.log_softmax(logits.float(), dim=-1)
        return _gather(logp, inverse, targets, torch)

    def _new_cache(self):
        from transformers import DynamicCache

        return DynamicCache()

    def _probe(self) -> str:
        """Packed passes when this model honours custom 4D masks (packed == walk on a probe job), else walk."""
        rng = np.random.default_rng(0)
        vocab = int(getattr(self.model.config, "vocab_size", 0) or len(self.tokenizer))
        stem = rng.integers(1, vocab, 24).tolist()
        job = ScoringJob((tuple(stem[:9] + stem[:5]), tuple(stem[:16] + stem[:5]), tuple(stem)), (9, 16, 12))
        try:
            packed = self.score_jobs([job], "packed")[0].logprobs
        except Exception as exc:  # a model that rejects custom masks outright
            log.warning("packed scoring failed on a probe (%s); using the KV-cache walk", exc)
            return "walk"
        walk = self.score_jobs([job], "walk")[0].logprobs
        tolerance = 1e-3 if self.dtype == self._torch.float32 else 5e-2
        worst = max(abs(a - b) for pa, pw in zip(packed, walk) for a, b in zip(pa, pw))
        if not worst <= tolerance:
            log.warning("this model ignores custom attention masks (probe diff %.3g); using the KV-cache walk", worst)
            return "walk"
        return "packed"


def _check(stop: Callable[[], bool] | None) -> None:
    """Drops the work when no request waits for it any more (MicroBatcher, stoppable)."""
    if stop is not None and stop():
        raise Abandoned("no request waits for this causal LM work any more")


def _job_tokens(job: ScoringJob) -> int:
    return sum(len(sequence) for sequence in job.sequences)


def encode(tokenizer, texts: Sequence[str], add_special_tokens: bool) -> list[list[int]]:
    """Token ids of each text with a Hugging Face tokenizer (blocking: long chains take a while).

    The texts go to the tokenizer in calls of at most ENCODE_CHARS characters (a longer text alone): a fast
    tokenizer holds every token's string, offsets and masks of a call until it returns, and the n+1 contexts of
    a chain at the request limits (14M characters, 6.5M tokens) in one call took 0.9 GB at once."""
    out: list[list[int]] = []
    start = 0
    while start < len(texts):
        end, size = start + 1, len(texts[start])
        while end < len(texts) and size + len(texts[end]) <= ENCODE_CHARS:
            size += len(texts[end])
            end += 1
        batch = tokenizer(list(texts[start:end]), add_special_tokens=add_special_tokens)["input_ids"]
        out.extend(list(ids) for ids in batch)
        start = end
    return out


def _gather(logp, rows: np.ndarray, targets, torch) -> np.ndarray:
    row = torch.as_tensor(np.asarray(rows), dtype=torch.long, device=logp.device)
    col = torch.as_tensor(np.asarray(targets), dtype=torch.long, device=logp.device)
    return logp[row, col].double().cpu().numpy()


def _crop_to(cache, length: int) -> None:
    extra = cache.get_seq_length() - length
    if extra > 0:
        cache.crop(-extra)  # a negative value removes that many tokens (all supported versions)


def _device(device: str, torch) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise BackendNotConfiguredError(f"KGV_LM__DEVICE={device} but no CUDA device is available")
    return device


def _dtype(dtype: str, device: str, torch):
    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    value = getattr(torch, dtype, None)
    if not isinstance(value, torch.dtype) or not value.is_floating_point:
        raise BackendNotConfiguredError(f"unknown torch dtype {dtype!r} (e.g. auto, float32, bfloat16, float16)")
    return value


def _local_attention_window(config) -> int | None:
    """The window of a model with sliding-window (local, chunked) attention in any layer, or None when every
    layer attends to the whole prefix (Mistral's sliding_window, Gemma's sliding layers, GPT-Neo's local ones)."""
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    types = getattr(config, "layer_types", None) or getattr(config, "attention_layers", None)
    if types is not None and all(t in ("full_attention", "global") for t in types):
        return None
    for key in ("sliding_window", "window_size", "attention_chunk_size"):
        value = getattr(config, key, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def _learned_positions(model) -> bool:
    import torch

    return any(isinstance(module, torch.nn.Embedding) and name.rsplit(".", 1)[-1] in _POSITION_TABLES
               for name, module in model.named_modules())


def _context_length(config) -> int | None:
    # A multimodal model's causal LM (Gemma-3 loads as Gemma3ForConditionalGeneration) keeps its context length
    # in the text config: at the top level none was found, and no prefix was ever reported as overflowing.
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    for key in _CONTEXT_KEYS:
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def estimator_from_settings(lm, blocking: Blocking, batching=None):
    """The `lm` estimator on a local transformers model (KGV_LM__MODEL), loaded now."""
    from .causal_lm import LmEstimator

    if not lm.model:
        raise BackendNotConfiguredError("KGV_LM__BACKEND=transformers needs KGV_LM__MODEL (a local path or name)")
    causal = TransformersCausalLm(lm.model, blocking, device=lm.device, dtype=lm.dtype,
                                  max_tokens_per_pass=lm.max_tokens_per_pass, strategy=lm.strategy,
                                  timeout_s=lm.timeout_s, batching=batching)
    return LmEstimator(causal, lm.max_context_tokens, blocking)
