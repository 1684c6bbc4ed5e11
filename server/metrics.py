"""Prometheus metrics: the one aio interceptor (RPC latency by method and code), backend calls, cache hits,
queue depth, micro-batches."""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from typing import Any, Callable

import grpc
from google.protobuf.message import Message
from prometheus_client import Counter, Gauge, Histogram, start_http_server

from .config import MetricsSettings

log = logging.getLogger("kgverify.metrics")
# Latency buckets from a 1 ms shed answer to a long LLM-judged chain.
BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
CODE_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}

RPC_SECONDS = Histogram("kgverify_rpc_duration_seconds", "RPC latency by method and final status code",
                        ["method", "code"], buckets=BUCKETS_S)
STREAM_ITEMS = Counter("kgverify_stream_items_total", "StreamScoreChains items answered, by item status code",
                       ["code"])
BACKEND_CALLS = Counter("kgverify_backend_calls_total", "Calls to judge / InfoGain / splitter backends by outcome",
                        ["kind", "backend", "outcome"])
BACKEND_SECONDS = Histogram("kgverify_backend_call_duration_seconds", "Backend call latency",
                            ["kind", "backend"], buckets=BUCKETS_S)
CACHE_LOOKUPS = Counter("kgverify_cache_lookups_total", "Cache lookups by cache and result (hit, miss)",
                        ["cache", "result"])
QUEUE_DEPTH = Gauge("kgverify_inflight", "Calls and stream items admitted and running (load shedding starts at "
                    "KGV_SERVER__MAX_INFLIGHT)")
BATCHES = Counter("kgverify_batches_total", "Model calls run by the micro-batcher that returned their results, "
                  "by model", ["model"])
BATCH_ITEMS = Counter("kgverify_batch_items_total", "Items (pairs, texts) scored through the micro-batcher, by model",
                      ["model"])
BATCH_FAILURES = Counter("kgverify_batch_failures_total", "Micro-batched model calls that raised (out of memory "
                         "included), by model; their items are not counted as scored", ["model"])
BATCH_SIZE = Histogram("kgverify_batch_size_items", "Items per micro-batched model call, by model", ["model"],
                       buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512))
BATCH_QUEUE_SECONDS = Histogram("kgverify_batch_queue_wait_seconds",
                                "Time a request's first items waited in the micro-batcher's queue, by model",
                                ["model"], buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                                    1, 2.5, 5, 10))
MODEL_OUT_OF_MEMORY = Counter("kgverify_model_out_of_memory_total",
                              "Micro-batched model calls that ran out of GPU or host memory (their requests got "
                              "RESOURCE_EXHAUSTED / DEVICE_OUT_OF_MEMORY), by model", ["model"])
# Backend methods that do the work worth counting; everything else passes through untouched.
INSTRUMENTED_METHODS = ("judge", "score_prefixes", "paper_perplexities")


def record_backend_call(kind: str, backend: str, outcome: str, seconds: float | None = None) -> None:
    """Counts one backend call (outcome: "ok" or a status code name such as "UNAVAILABLE")."""
    BACKEND_CALLS.labels(kind, backend, outcome).inc()
    if seconds is not None:
        BACKEND_SECONDS.labels(kind, backend).observe(seconds)


def record_cache_lookup(cache: str, hit: bool, count: int = 1) -> None:
    """Counts cache lookups (e.g. the judge's verdict cache, the embedding cache)."""
    if count:
        CACHE_LOOKUPS.labels(cache, "hit" if hit else "miss").inc(count)


def record_batch(model: str, items: int, queue_waits_s) -> None:
    """Counts one micro-batched model call that returned its results (a batching.BatchObserver)."""
    BATCHES.labels(model).inc()
    BATCH_ITEMS.labels(model).inc(items)
    BATCH_SIZE.labels(model).observe(items)
    for wait in queue_waits_s:
        BATCH_QUEUE_SECONDS.labels(model).observe(wait)


def record_batch_failure(model: str) -> None:
    """Counts one micro-batched model call that raised (a batching.MicroBatcher on_failure callback)."""
    BATCH_FAILURES.labels(model).inc()


def record_out_of_memory(model: str) -> None:
    """Counts one model call that ran out of memory (a batching.MicroBatcher on_out_of_memory callback)."""
    MODEL_OUT_OF_MEMORY.labels(model).inc()


def track_queue_depth(current: Callable[[], int]) -> None:
    """Reports current() as the queue depth at every scrape (one server per process)."""
    QUEUE_DEPTH.set_function(current)


class InstrumentedBackend:
    """Wraps a backend's async work methods with call counts, outcomes and latency; the rest passes through."""

    def __init__(self, kind: str, inner: Any):
        self._inner = inner
        self._kind = kind
        self._label = str(getattr(inner, "name", type(inner).__name__))
        for method in INSTRUMENTED_METHODS:
            if inspect.iscoroutinefunction(getattr(inner, method, None)):
                setattr(self, method, self._wrap(getattr(inner, method)))

    def _wrap(self, method):
        async def call(*args, **kwargs):
            started, outcome = time.perf_counter(), "ok"
            try:
                result = await method(*args, **kwargs)
            except asyncio.CancelledError:
                outcome = "CANCELLED"
                raise
            except Exception as exc:
                outcome = getattr(exc, "code", "INTERNAL")
                raise
            finally:
                record_backend_call(self._kind, self._label, outcome, time.perf_counter() - started)
            return result

        return call

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def _count_verdict_lookups(hits: int, misses: int) -> None:
    record_cache_lookup("judge_verdicts", True, hits)
    record_cache_lookup("judge_verdicts", False, misses)


def instrument(kind: str, backend: Any) -> Any:
    """The backend wrapped for metrics when it has work methods; splitters and others are returned as they are.

    A judge's verdict cache reports its own lookups: the pipeline asks the cache first, so the judge itself
    sees only the misses (counting its results counted no hit, ever)."""
    cache = getattr(backend, "verdict_cache", None)
    if cache is not None and getattr(cache, "on_lookups", False) is None:
        cache.on_lookups = _count_verdict_lookups
    if any(inspect.iscoroutinefunction(getattr(backend, m, None)) for m in INSTRUMENTED_METHODS):
        return InstrumentedBackend(kind, backend)
    return backend


def ended_code(context, stopping: bool) -> str:
    """The code of a call that was cut off (its handler cancelled): UNAVAILABLE when the server is shutting down (the
    client sees that), DEADLINE_EXCEEDED when the call's deadline has passed (gRPC cancels the handler then, e.g.
    while a stream result waits to be sent), else CANCELLED (the client went away)."""
    if stopping:
        return "UNAVAILABLE"
    try:
        remaining = context.time_remaining()
    except Exception:
        remaining = None
    return "DEADLINE_EXCEEDED" if remaining is not None and remaining <= DEADLINE_SLACK_S else "CANCELLED"


# The client ends a call at its own deadline (RST_STREAM), which it counts from sending; the server counts its copy
# from the call's arrival, so it learns of the end while its own deadline is still that transit time away (a loaded
# machine: tens of ms). A call cut off this close to its deadline is taken as the deadline's, as its client saw it.
DEADLINE_SLACK_S = 0.25


def _code_of(context) -> str:
    code = context.code()
    if code is None:
        return "OK"
    if isinstance(code, grpc.StatusCode):
        return code.name
    return CODE_NAMES.get(code, str(code))


def _failed_code(context) -> str:
    return _code_of(context) if context.code() is not None else "UNKNOWN"


class _Timed:
    """Times one RPC into RPC_SECONDS by method and final code (set `code` on success; failures are read)."""

    def __init__(self, method: str, context, stopping=lambda: False):
        self.method, self.context, self.code, self.stopping = method, context, "OK", stopping

    def __enter__(self) -> "_Timed":
        self.started = time.perf_counter()
        return self

    def __exit__(self, kind, exc, tb) -> None:
        if kind is not None:
            # by the client, its deadline, or a shutdown; GeneratorExit: a stream closed while it still had results
            # to give (gRPC closes the generator instead of cancelling it at times), as the service interceptor reads it
            if issubclass(kind, (asyncio.CancelledError, GeneratorExit)):
                self.code = ended_code(self.context, self.stopping())
            else:
                self.code = _failed_code(self.context)
        RPC_SECONDS.labels(self.method, self.code).observe(time.perf_counter() - self.started)


def _observed_unary(method: str, behavior, stopping, probe: bool = False):
    async def unary(request, context):
        # a probe is an empty request: the header alone does not move a real call out of its method's series
        label = method + "#probe" if probe and _is_empty(request) else method
        with _Timed(label, context, stopping) as timed:
            response = await behavior(request, context)
            timed.code = _code_of(context)
            return response

    return unary


def _observed_stream(method: str, behavior, stopping):
    async def stream(request_iterator, context):
        with _Timed(method, context, stopping) as timed:
            async for response in behavior(request_iterator, context):
                status = getattr(response, "status", None)
                if status is not None and hasattr(status, "code"):  # a stream item with its own status
                    STREAM_ITEMS.labels(CODE_NAMES.get(status.code, str(status.code))).inc()
                yield response
            timed.code = _code_of(context)

    return stream


PROBE_METADATA_KEY = "kgverify-probe"  # set by the clients' wait_ready on their load probes


def _is_probe(metadata) -> bool:
    return any(key == PROBE_METADATA_KEY for key, _ in metadata or ())


def _is_empty(request) -> bool:
    return isinstance(request, Message) and request.ByteSize() == 0


class MetricsInterceptor(grpc.aio.ServerInterceptor):
    """Observes every unary and bidi-streaming call: latency by method and final code, stream item codes.

    The clients' readiness probes (empty unary requests with the probe header, sent while they wait for a service;
    answered with INVALID_ARGUMENT by a loaded one) are labelled `<method>#probe`, apart from real calls."""

    def __init__(self, stopping=lambda: False):
        self._stopping = stopping  # () -> bool: the server is shutting down (its cancels count as UNAVAILABLE)

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        if handler is None:
            return None
        method = details.method
        serializers = {"request_deserializer": handler.request_deserializer,
                       "response_serializer": handler.response_serializer}
        if handler.unary_unary is not None:
            probe = _is_probe(details.invocation_metadata)
            return grpc.unary_unary_rpc_method_handler(
                _observed_unary(method, handler.unary_unary, self._stopping, probe), **serializers)
        if handler.stream_stream is not None:
            return grpc.stream_stream_rpc_method_handler(
                _observed_stream(method, handler.stream_stream, self._stopping), **serializers)
        return handler  # health Watch and other server-streaming calls live for as long as the client likes


def start_endpoint(cfg: MetricsSettings):
    """Serves /metrics over HTTP when a port is configured; returns (http server, "host:port") or (None, None)."""
    if cfg.port is None:
        return None, None
    httpd, _thread = start_http_server(cfg.port, addr=cfg.host)
    host, port = httpd.server_address[:2]
    log.info("Prometheus metrics on http://%s:%d/metrics", host, port)
    return httpd, f"{host}:{port}"
