"""Composition root: settings -> backends -> grpc.aio server. The only place backends are built."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import socket
import stat
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from kgverify.v1 import info_gain_service_pb2, knowledge_base_service_pb2, knowledge_service_pb2
from kgverify.v1 import info_gain_service_pb2_grpc, knowledge_base_service_pb2_grpc, knowledge_service_pb2_grpc

from . import __version__, metrics, security
from .admission import Admission
from .backends import registry
from .config import Settings
from .context import deadline_of, server_deadline
from .health import INFO_GAIN, KNOWLEDGE, KNOWLEDGE_BASE, HealthState
from .interceptors import ClientGoneInterceptor, ServiceInterceptor, size_check
from .kb_holder import KbHolder
from .pipeline.deadline import Deadline
from .pipeline.deps import PipelineDeps
from .pipeline.errors import (
    BackendNotConfiguredError,
    KgverifyError,
    KnowledgeBaseUnavailableError,
    NotReadyError,
    ServiceLoadFailedError,
)
from .pipeline.runtime import Blocking
from .pipeline.types import Provenance, RetrievalMode
from .pipeline.validation import Limits
from .servicers.info_gain import InfoGainServicer
from .servicers.knowledge import KnowledgeServicer
from .servicers.knowledge_base import KnowledgeBaseServicer

log = logging.getLogger("kgverify.server")


class Runtime:
    """Backends and shared state behind the servicers."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.executor = ThreadPoolExecutor(settings.server.executor_workers, thread_name_prefix="kgv-work")
        self.blocking = Blocking(self.executor)
        # KB loads and the embedder's fetch: threads of the default executor, not request workers, but counted like
        # them, so that a shutdown leaves a reload still loading behind instead of waiting for it (serve's tail)
        self.background = Blocking(None)
        self._reload_lock = asyncio.Lock()
        self._reloading: asyncio.Task | None = None  # the reload whose load runs now
        self.ctx = registry.BackendContext(settings, self.blocking)
        self.health = HealthState(required=(KNOWLEDGE, INFO_GAIN) + ((KNOWLEDGE_BASE,) if settings.kb.enabled else ()))
        self.admission = Admission(settings.server.max_inflight)
        self.kb = KbHolder(settings.kb)
        self._built: dict[tuple[str, str], object] = {}
        self.load_failures: dict[str, BaseException] = {}  # service -> the error that kept it from loading
        self.load_done: set[str] = set()  # services whose load step finished (ready or waiting for a backend)
        # service -> its default backends (kind, name) found not up at the last check (what a waiting service waits on)
        self.waiting_on: dict[str, frozenset[tuple[str, str]]] = {}
        self._build_lock = asyncio.Lock()
        self._building: dict[tuple[str, str], asyncio.Task] = {}  # backends being built now
        self._embedding: tuple | None = None  # (embedder, its micro-batcher) once fetched
        self._embedding_fetch: asyncio.Future | None = None
        self.deps = PipelineDeps(
            limits=Limits(**settings.limits.model_dump()),
            blocking=self.blocking,
            splitter=self.splitter,
            judge=self.judge,
            estimator=self.estimator,
            knowledge_base=self.kb.get,
            embedder=self.ctx.embedder,
            default_top_k=settings.kb.top_k,
            default_retrieval_mode=RetrievalMode(settings.kb.retrieval_mode),
            provenance=Provenance(embedder=settings.embedder.model, server_version=__version__),
            embed=self.embed,
        )

    async def _get(self, table: dict, kind: str, name: str):
        key = (kind, name)
        if key not in self._built:
            # A task of its own, shared by every caller of the backend while it builds: a caller that leaves
            # (its deadline) cannot stop the build's thread, and the next one built it again in a second request
            # worker, which waited on the first build's model load (both default workers taken: every search and
            # model batch stalled), then threw the first one away.
            build = self._building.get(key)
            if build is None:
                build = self._building[key] = asyncio.ensure_future(self._build(table, kind, name))
                build.add_done_callback(lambda task: task.cancelled() or task.exception())  # its callers get it
            await asyncio.shield(build)
        return self._built[key]

    async def _build(self, table: dict, kind: str, name: str) -> None:
        key = (kind, name)
        try:
            async with self._build_lock:
                if key not in self._built:
                    built = await self.blocking.run(registry.build, table, kind, name, self.ctx)
                    self._built[key] = metrics.instrument(kind, built)
        finally:
            self._building.pop(key, None)

    async def embed(self, texts, deadline: Deadline):
        """Embeddings of request texts through the embedder's micro-batcher (rows in order)."""
        import numpy as np

        embedder, batcher = self._embedding or await self._fetch_embedding()
        rows = await batcher.submit(list(texts), deadline)
        return np.stack(rows) if rows else np.zeros((0, embedder.dim), dtype=np.float32)

    async def _fetch_embedding(self):
        """The embedder and its micro-batcher, fetched once off the event loop: the registry hands them out under a
        thread lock that a model load holds (the judge's, for seconds at startup; a backend built on first use),
        and waiting for it on the event loop froze every call of the server, health checks included."""
        if self._embedding_fetch is None or self._embedding_fetch.done():  # first use, or a failed fetch retried
            self._embedding_fetch = asyncio.ensure_future(
                self.background.run(lambda: (self.ctx.embedder(), self.ctx.embedding_batcher())))
            self._embedding_fetch.add_done_callback(lambda task: task.cancelled() or task.exception())
        self._embedding = await asyncio.shield(self._embedding_fetch)
        return self._embedding

    async def judge(self, name: str | None):
        return await self._get(registry.JUDGES, "judge", name or self.settings.judge.backend)

    async def splitter(self, name: str | None):
        return await self._get(registry.SPLITTERS, "splitter", name or self.settings.splitter.backend)

    async def estimator(self, name: str | None):
        configured = self.settings.lm.backend
        if name == "lm":
            if configured not in registry.LM_BACKENDS:
                raise BackendNotConfiguredError(
                    "no causal LM is configured for InfoGain; set KGV_LM__BACKEND=transformers (with "
                    "KGV_LM__MODEL) or vllm (with KGV_LM__BASE_URL), or use the nli estimator")
            name = configured
        return await self._get(registry.ESTIMATORS, "estimator", name or configured)

    def call_deadline(self, context) -> Deadline:
        """A unary call's deadline: the client's, cut to KGV_SERVER__MAX_CALL_S."""
        return deadline_of(context, self.settings.server.max_call_s)

    def item_deadline(self, stream_deadline: Deadline) -> Deadline:
        """A stream item's deadline: KGV_SERVER__MAX_CALL_S from its start, or the stream's when that is sooner."""
        return server_deadline(self.settings.server.max_call_s).earliest(stream_deadline)

    async def reload_kb(self) -> tuple[str, str]:
        if not self.kb.enabled:
            raise KnowledgeBaseUnavailableError("this server runs without a knowledge base (KGV_KB__ENABLED=false)")
        # A task of its own: a caller that leaves (its deadline, its client) cannot stop the load's thread, and the
        # load that goes on must still publish its outcome (health stayed NOT_SERVING after a repaired KB loaded)
        # and keep later reloads waiting until it is done. A reload still waiting for its turn then never starts.
        reload = asyncio.ensure_future(self._reload())
        reload.add_done_callback(lambda task: task.cancelled() or task.exception())  # a caller gone: logged there
        try:
            return await asyncio.shield(reload)
        except asyncio.CancelledError:
            if self._reloading is not reload:
                reload.cancel()
            raise

    async def _reload(self) -> tuple[str, str]:
        async with self._reload_lock:  # one reload at a time; later callers wait here, holding no thread
            self._reloading = asyncio.current_task()
            previous = self.kb.current.info.kb_id if self.kb.current else ""
            try:
                # on a thread of its own, not the request executor: a load of seconds (hashing a large KB)
                # must not take a worker from searches, embeddings and the judge; the embedder too (its first
                # use loads the model, or waits for the startup load building it)
                await self.background.run(contextvars.copy_context().run, lambda: self.kb.load(self.ctx.embedder()))
            finally:
                await self._publish_kb_health()
                self._reloading = None
            return previous, self.kb.current.info.kb_id

    async def _publish_kb_health(self) -> None:
        """KB service health after a load or reload: SERVING while a KB is served (a repaired KB serves again,
        a failed reload keeps the old one); loaded either way, so calls get the KB's own error."""
        serving = self.kb.current is not None
        if serving:
            self.load_failures.pop(KNOWLEDGE_BASE, None)
        if KNOWLEDGE_BASE in self.health.loaded and serving != self.health.serving[KNOWLEDGE_BASE]:
            log.warning("%s is now %s", KNOWLEDGE_BASE, "SERVING" if serving else "NOT_SERVING")
        await self.health.set(KNOWLEDGE_BASE, serving, loaded=True)

    async def load(self) -> None:
        """Loads backends in dependency order, flipping each service to SERVING when it is ready."""
        steps = [
            (KNOWLEDGE_BASE, self._load_kb),
            (KNOWLEDGE, self._load_knowledge),
            (INFO_GAIN, self._load_info_gain),
        ]
        for service, step in steps:
            try:
                await step()
                self.load_done.add(service)
            except KgverifyError as exc:
                self.load_failures[service] = exc
                log.error("%s not ready: %s", service, exc.message)
            except Exception as exc:
                self.load_failures[service] = exc
                log.exception("%s failed to load", service)
        loaded = [service for service, _ in steps if service in self.load_done]
        failed = [service for service, _ in steps if service in self.load_failures]
        log.info("loading done: %s loaded%s", ", ".join(loaded) or "nothing",
                 f"; {', '.join(failed)} failed (their calls answer FAILED_PRECONDITION)" if failed else "")

    @property
    def load_errors(self) -> dict[str, str]:
        """service -> why it did not become ready, in full (for logs and the embedded client)."""
        return {service: exc.message if isinstance(exc, KgverifyError) else f"{type(exc).__name__}: {exc}"
                for service, exc in self.load_failures.items()}

    def waiting_for_backend(self, service: str) -> bool:
        """Whether the service loaded everything but its backend is not up yet (e.g. a vLLM judge not serving)."""
        return service in self.load_done and service not in self.load_failures and not self.health.ready(service)

    def avoids_waited_backends(self, service: str, asked: dict[str, str | None]) -> bool:
        """Whether a call of a service waiting for a default backend names only other backends (kind -> name, None
        for the default): a ScoreKnowledge asking for the nli judge while the default vLLM judge is still loading
        is served (the named backend is built on first use like any other, and answers with its own errors)."""
        waited = self.waiting_on.get(service)
        if not waited or not self.waiting_for_backend(service):
            return False
        defaults = {"judge": self.settings.judge.backend, "splitter": self.settings.splitter.backend,
                    "estimator": self.settings.lm.backend}
        for kind, name in asked.items():
            resolved = defaults[kind] if name is None or (kind == "estimator" and name == "lm") else name
            if (kind, resolved) in waited:
                return False
        return True

    def not_ready_error(self, service: str) -> KgverifyError:
        """UNAVAILABLE (NOT_READY, retryable) while a service loads; FAILED_PRECONDITION once its load failed
        (unexpected errors' details stay in the log)."""
        failure = self.load_failures.get(service)
        if self.waiting_for_backend(service):
            return NotReadyError(f"{service} is waiting for its backend (unreachable, or not serving the configured "
                                 "model: see the server log); retry shortly")
        if failure is None:
            return NotReadyError(f"{service} is still loading its models; retry shortly")
        shown = failure.message if isinstance(failure, KgverifyError) else "an unexpected error; see the server log"
        return ServiceLoadFailedError(f"{service} failed to load at startup: {shown}")

    async def _load_kb(self) -> None:
        try:
            embedder = await self.blocking.run(self.ctx.embedder)
            await self._fetch_embedding()  # requests then embed without waiting for a model load (the judge's)
        except Exception as exc:  # KB calls get the embedder's reason, not "no knowledge base loaded"
            if self.settings.kb.enabled:
                shown = exc.message if isinstance(exc, KgverifyError) else "an unexpected error; see the server log"
                self.kb.error = ServiceLoadFailedError(f"{KNOWLEDGE_BASE} failed to load at startup: {shown}")
            await self._publish_kb_health()
            raise
        try:
            if self.settings.kb.enabled:
                await self.blocking.run(self.kb.load, embedder)
        finally:
            await self._publish_kb_health()

    async def _load_knowledge(self) -> None:
        await self.blocking.run(self.ctx.embedder)  # ranks context passages: no embedder, no knowledge scoring
        await self.splitter(None)
        await self.judge(None)
        await self.health.set(KNOWLEDGE, await self._knowledge_ready())

    async def _knowledge_ready(self) -> bool:
        """The judge is up, and so is the default splitter's backend when it has one (the LLM decomposer)."""
        judge_key = ("judge", self.settings.judge.backend)
        splitter_key = ("splitter", self.settings.splitter.backend)
        judge, splitter = self._built.get(judge_key), self._built.get(splitter_key)
        down = set()
        if judge is None or not await judge.ready():
            down.add(judge_key)
        splitter_ready = getattr(splitter, "ready", None)
        if splitter_ready is not None and not await splitter_ready():
            down.add(splitter_key)
        self.waiting_on[KNOWLEDGE] = frozenset(down)
        return not down

    async def _estimator_ready(self) -> bool:
        key = ("estimator", self.settings.lm.backend)
        estimator = self._built.get(key)
        up = estimator is not None and await estimator.ready()
        self.waiting_on[INFO_GAIN] = frozenset(() if up else (key,))
        return up

    async def _load_info_gain(self) -> None:
        await self.estimator(None)
        await self.health.set(INFO_GAIN, await self._estimator_ready())

    async def monitor(self) -> None:
        """Re-checks backend health periodically (a judge outage flips only the knowledge service)."""
        while True:
            await asyncio.sleep(self.settings.server.health_interval_s)
            for service, kind, name, check in (
                (KNOWLEDGE, "judge", self.settings.judge.backend, self._knowledge_ready),
                (INFO_GAIN, "estimator", self.settings.lm.backend, self._estimator_ready),
            ):
                if (kind, name) not in self._built:
                    continue
                try:
                    # asyncio.timeout, not wait_for: on 3.11 wait_for swallows a cancel that lands as
                    # ready() finishes, and stop() would then wait on this loop forever.
                    async with asyncio.timeout(5.0):
                        ok = await check()
                except Exception:
                    ok = False
                if ok != self.health.serving[service]:
                    log.warning("%s is now %s", service, "SERVING" if ok else "NOT_SERVING")
                    await self.health.set(service, ok)

    async def close(self) -> None:
        for backend in self._built.values():
            closer = getattr(backend, "aclose", None)
            if closer is not None:
                try:
                    await closer()
                except Exception:
                    log.exception("closing %s failed", backend)
        self.executor.shutdown(wait=False, cancel_futures=True)


class ListenError(ValueError):
    """A listen address that is malformed, in use, or cannot be bound."""


def _unix_path(address: str) -> str:
    return address.removeprefix("unix://").removeprefix("unix:")


def check_listen_address(address: str) -> None:
    """`host:port` with a port in 0..65535 (0 = any free port), or `unix:PATH` / `unix:///abs/path`.

    gRPC itself takes "0.0.0.0" as port 443 and wraps "host:99999" to another port, silently."""
    if address.startswith("unix:"):
        path = _unix_path(address)
        if not path:
            raise ListenError(f"listen address {address!r} names no socket path")
        if len(os.fsencode(os.path.abspath(path))) > MAX_SOCKET_PATH:  # (gRPC's error read "address in use")
            raise ListenError(f"listen address {address!r}: a unix socket path may have at most {MAX_SOCKET_PATH} "
                              "bytes on this system; name a shorter one")
        return
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ListenError(f"listen address {address!r} is not host:port with a port from 0 to 65535 "
                          "(e.g. 127.0.0.1:50051, [::]:50051) or unix:///path/to.sock")


MAX_SOCKET_PATH = 107 if sys.platform.startswith("linux") else 103  # sockaddr_un.sun_path, less its NUL


def _prepare_unix_socket(address: str) -> None:
    path = Path(_unix_path(address))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a parent that is a file, a directory this user may not write: one line, not a traceback
        raise ListenError(f"cannot listen on {address}: cannot create the directory {path.parent} "
                          f"({exc.strerror or exc})") from None
    if path.exists() and not stat.S_ISSOCK(path.stat().st_mode):  # gRPC said "Address already in use"
        raise ListenError(f"cannot listen on {address}: {path} exists and is not a socket (a file or directory "
                          "there is never replaced: name another path)")
    if path.exists() and stat.S_ISSOCK(path.stat().st_mode):
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink()  # nobody answers: a stale socket from a previous run
            return
        finally:
            probe.close()
        raise ListenError(f"cannot listen on {address}: a running server already listens on that socket "
                          "(taking it over would leave that server unreachable)")


@dataclass
class VerifierServer:
    server: grpc.aio.Server
    runtime: Runtime
    addresses: list[str]
    _tasks: list[asyncio.Task]
    metrics_address: str | None = None  # host:port of /metrics when enabled
    _metrics_httpd: object = None

    async def wait_ready(self, timeout_s: float | None = None) -> None:
        # asyncio.timeout, not wait_for: on 3.11 wait_for swallows a cancel that lands as the load finishes (an
        # embedded server's command interrupted then went on as if never cancelled)
        async with asyncio.timeout(timeout_s):
            await asyncio.shield(self._tasks[0])

    async def stop(self, grace_s: float | None = None) -> None:
        await self.runtime.health.shutdown()
        await self.server.stop(self.runtime.settings.server.grace_period_s if grace_s is None else grace_s)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.runtime.close()
        if self._metrics_httpd is not None:
            self._metrics_httpd.shutdown()
            self._metrics_httpd.server_close()


MIN_CLIENT_PING_INTERVAL_MS = 10_000  # keepalive pings from clients: at most one per 10 s on a silent connection


def _options(settings: Settings) -> list[tuple[str, int]]:
    size = settings.server.max_message_bytes
    # gRPC core cancels calls beyond 1,000 waiting to be picked up (measured: 715 of 3,000 concurrent health
    # checks came back CANCELLED, which no client retries); with room for more, every call reaches the server,
    # which answers or sheds it (RESOURCE_EXHAUSTED) itself.
    return [("grpc.max_receive_message_length", size), ("grpc.max_send_message_length", size),
            ("grpc.so_reuseport", 0), ("grpc.server.max_pending_requests", 10_000),
            ("grpc.server.max_pending_requests_hard_limit", 20_000),
            # Clients may ping a connection that sends nothing every 10 s (gRPC's default allows one ping per 5
            # minutes and closes the connection with "too_many_pings" after that): the kgverify clients ping a
            # silent call every 30 s to notice a server that stopped answering without closing its connection.
            ("grpc.http2.min_ping_interval_without_data_ms", MIN_CLIENT_PING_INTERVAL_MS)]


async def start_server(settings: Settings, listen: list[str] | None = None) -> VerifierServer:
    """Starts serving at once (health NOT_SERVING) and loads backends in the background."""
    for address in listen or settings.server.listen:
        check_listen_address(address)
    if settings.server.torch_threads:
        import torch

        torch.set_num_threads(settings.server.torch_threads)
    runtime = Runtime(settings)
    # Outermost first: stream responses written by kgverify (a client gone mid-write ends as CANCELLED), metrics
    # see every outcome, auth refuses before any work, then the service interceptor.
    auth = security.auth_interceptor(settings.security)

    def stopping() -> bool:  # calls cancelled while shutting down end UNAVAILABLE for their clients
        return runtime.health.shutting_down

    interceptors = [ClientGoneInterceptor(), metrics.MetricsInterceptor(stopping), *([auth] if auth else []),
                    ServiceInterceptor(runtime.admission, runtime.health.ready, runtime.not_ready_error,
                                       settings.server.log_request_text, stopping, runtime.waiting_for_backend,
                                       precheck=size_check(runtime.deps.limits),
                                       avoids_waited_backends=runtime.avoids_waited_backends)]
    credentials = security.server_credentials(settings.security)
    server = grpc.aio.server(interceptors=interceptors, options=_options(settings))
    knowledge_service_pb2_grpc.add_KnowledgeServiceServicer_to_server(KnowledgeServicer(runtime), server)
    info_gain_service_pb2_grpc.add_InfoGainServiceServicer_to_server(InfoGainServicer(runtime), server)
    knowledge_base_service_pb2_grpc.add_KnowledgeBaseServiceServicer_to_server(KnowledgeBaseServicer(runtime), server)
    health_pb2_grpc.add_HealthServicer_to_server(runtime.health.servicer, server)
    if settings.server.reflection:
        names = [
            knowledge_service_pb2.DESCRIPTOR.services_by_name["KnowledgeService"].full_name,
            info_gain_service_pb2.DESCRIPTOR.services_by_name["InfoGainService"].full_name,
            knowledge_base_service_pb2.DESCRIPTOR.services_by_name["KnowledgeBaseService"].full_name,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ]
        reflection.enable_server_reflection(names, server)
    addresses: list[str] = []
    try:
        for address in listen or settings.server.listen:
            if address.startswith("unix:"):
                _prepare_unix_socket(address)
            # Unix sockets stay plaintext: only processes that may open the file reach them.
            unix = address.startswith("unix:")
            try:
                port = server.add_secure_port(address, credentials) if credentials and not unix \
                    else server.add_insecure_port(address)
            except RuntimeError as exc:  # grpcio: "Failed to bind to address ..."
                raise ListenError(f"cannot listen on {address}: the address is in use (another server?) or not "
                                  "available on this machine") from exc
            if not port:
                raise ListenError(f"cannot listen on {address}")
            addresses.append(address if unix else f"{address.rsplit(':', 1)[0]}:{port}")
        try:  # before serving, so a taken metrics port stops the start like a taken gRPC port
            httpd, metrics_address = metrics.start_endpoint(settings.metrics)
        except OSError as exc:
            raise ListenError(f"cannot serve metrics on {settings.metrics.host}:{settings.metrics.port}: "
                              f"{exc.strerror or exc} (KGV_METRICS__PORT)") from exc
    except ListenError:
        for address in addresses:  # sockets this start created; nobody will serve them
            if address.startswith("unix:"):
                Path(_unix_path(address)).unlink(missing_ok=True)
        raise
    await runtime.health.start()
    await server.start()
    log.info("kgverify %s listening on %s (pid %d)", __version__, ", ".join(addresses), os.getpid())
    metrics.track_queue_depth(lambda: runtime.admission.inflight)
    tasks = [asyncio.create_task(runtime.load()), asyncio.create_task(runtime.monitor())]
    return VerifierServer(server, runtime, addresses, tasks, metrics_address, httpd)


LOAD_FAILURE_EXIT_STATUS = 3
SHUTDOWN_TAIL_S = 2.0  # after the grace: how long blocking work of cancelled calls may hold up the exit


def _exit_now(status: int) -> None:
    """Ends the process without waiting for worker threads (log lines flushed first)."""
    logging.shutdown()
    os._exit(status)


async def serve(settings: Settings, listen: list[str] | None = None) -> None:
    """Runs until SIGTERM/SIGINT, then shuts down gracefully; with `exit_on_load_failure`, also when a service
    failed to load (then SystemExit(3))."""
    import signal

    verifier = await start_server(settings, listen)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        if not stop.is_set():
            stop.set()
            return
        # A second signal while draining: the operator wants out now (in-flight calls are dropped).
        log.warning("%s again while shutting down: exiting now", signal.Signals(signum).name)
        _exit_now(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    load_failed: list[str] = []

    async def exit_if_load_fails() -> None:
        await verifier.wait_ready()
        if verifier.runtime.load_failures:
            load_failed.extend(sorted(verifier.runtime.load_failures))
            log.error("exiting with status %d: %s failed to load (KGV_SERVER__EXIT_ON_LOAD_FAILURE=true)",
                      LOAD_FAILURE_EXIT_STATUS, ", ".join(load_failed))
            stop.set()

    watcher = asyncio.create_task(exit_if_load_fails()) if settings.server.exit_on_load_failure else None
    await stop.wait()
    if watcher is not None:
        watcher.cancel()
    log.info("shutting down: health NOT_SERVING, %.1f s grace for in-flight calls",
             settings.server.grace_period_s)
    await verifier.runtime.health.shutdown()
    await asyncio.sleep(min(0.5, settings.server.grace_period_s))
    await verifier.stop()
    status = LOAD_FAILURE_EXIT_STATUS if load_failed else 0
    # Calls past the grace are cancelled, but a model batch or KB load (a reload) they started runs on in its thread,
    # and the interpreter would wait for it at exit: give it a moment, then leave without it.
    runtime = verifier.runtime

    def idle() -> bool:
        until = time.monotonic() + SHUTDOWN_TAIL_S
        return all([jobs.wait_idle(max(0.0, until - time.monotonic()))
                    for jobs in (runtime.blocking, runtime.background)])

    if not await asyncio.to_thread(idle):
        log.warning("exiting with %d blocking job(s) of cancelled calls and %d KB or model load(s) still running",
                    runtime.blocking.running, runtime.background.running)
        _exit_now(status)
    if status:
        raise SystemExit(status)
