"""AsyncVerifierClient: the asyncio client (grpc.aio), retrying on UNAVAILABLE and on what the server asks to be
retried (RESOURCE_EXHAUSTED with RetryInfo), after the delay it asks for."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any, AsyncIterable, AsyncIterator, Callable

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from kgverify.v1 import info_gain_service_pb2, info_gain_service_pb2_grpc, knowledge_base_service_pb2
from kgverify.v1 import knowledge_base_service_pb2_grpc, knowledge_service_pb2, knowledge_service_pb2_grpc

from . import convert, requests
from .errors import AUTH_CODES, VerifierError
from .types import ChainScore, SearchHit, SplitResult

DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024
PROBE_INTERVAL_S = 2.0  # wait_ready: how often a NOT_SERVING service is asked whether its load failed
PROBE_METADATA = (("kgverify-probe", "wait_ready"),)  # the server's metrics keep these calls apart
CONNECT_TIMEOUT_S = 3.0  # the CLI's wait_ready: how long a server that never answers may take to answer once
KNOWLEDGE_SERVICE = knowledge_service_pb2.DESCRIPTOR.services_by_name["KnowledgeService"].full_name


def load_probes(knowledge, info_gain, kb, service: str) -> list[tuple[Any, Any]]:
    """(stub method, request) that tell whether `service` will not serve without an operator.

    The server answers a call to a service that is not ready before reading the request: NOT_READY while it
    loads, SERVICE_LOAD_FAILED (FAILED_PRECONDITION) once its load failed; a loaded service rejects the empty
    request (INVALID_ARGUMENT) and is only waiting for a backend. The knowledge base service is loaded once
    its load was tried: its info call fails with FAILED_PRECONDITION (KB_CORRUPT, KB_EMBEDDER_MISMATCH, ...)
    while no KB is served, until a reload repairs it."""
    probes = {
        "kgverify.v1.KnowledgeService": [(knowledge.SplitReasoning, knowledge_service_pb2.SplitReasoningRequest())],
        "kgverify.v1.InfoGainService": [(info_gain.ScoreInfoGain, info_gain_service_pb2.ScoreInfoGainRequest())],
        "kgverify.v1.KnowledgeBaseService": [
            (kb.GetKnowledgeBaseInfo, knowledge_base_service_pb2.GetKnowledgeBaseInfoRequest())],
    }
    return probes.get(service, []) if service else [p for group in probes.values() for p in group]


def never_serves(error: "VerifierError", service: str) -> bool:
    """Whether a load probe's error means `service` will not serve until an operator acts. A server run
    without a KB (KB_NOT_LOADED once loading is over) serves as a whole: only its KB service never does."""
    if error.code != "FAILED_PRECONDITION":
        return False
    return not (service == "" and error.reason == "KB_NOT_LOADED")


def unreachable_error(target: str, error: "VerifierError", waited_s: float) -> "VerifierError":
    """SERVER_UNREACHABLE (UNAVAILABLE) for a server that has not answered once: why, in a few words."""
    text = error.message
    causes = (("Connection refused", "connection refused"), ("No such file or directory", "no socket at that path"),
              ("Permission denied", "permission denied"), ("resolving", "host name not found"),
              ("handshake", "TLS handshake failed"), ("ssl", "TLS handshake failed"))
    why = next((short for marker, short in causes if marker.lower() in text.lower()), None)
    if why is None:
        why = f"no answer within {waited_s:.0f} s" if error.code == "DEADLINE_EXCEEDED" or not text else text
    return VerifierError("UNAVAILABLE", "SERVER_UNREACHABLE", f"cannot reach the kgverify server at {target} ({why})")


# Keepalive: while a call is open, the client pings a connection that has been silent for KEEPALIVE_TIME_MS and
# drops it when no answer comes within KEEPALIVE_TIMEOUT_MS, so the calls to a server that stopped answering
# without closing the connection (a frozen process or VM, a cut network) fail UNAVAILABLE (a batch run sends their
# rows again) instead of waiting for ever. The kgverify server takes a ping every 10 s on a connection it sends
# nothing on (grpc.http2.min_ping_interval_without_data_ms; gRPC's default is 5 minutes) and closes one that pings
# more often (too_many_pings): 30 s stays clear of it. No pings on an idle channel.
SERVER_MIN_PING_INTERVAL_MS = 10_000  # server.app.MIN_CLIENT_PING_INTERVAL_MS
KEEPALIVE_TIME_MS = 30_000
KEEPALIVE_TIMEOUT_MS = 20_000
# Reconnecting after an outage: gRPC's default backoff between connection attempts starts at 1 s and grows 1.6x up
# to 120 s, so once the server was back, calls kept failing UNAVAILABLE until the next attempt (measured: 13.9 s
# after a 30 s outage, 28.6 s after a 90 s one). Attempts at most RECONNECT_MAX_BACKOFF_MS apart: ~1 s.
RECONNECT_INITIAL_BACKOFF_MS = 200
RECONNECT_MAX_BACKOFF_MS = 1_000


def channel_options(max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> list[tuple[str, Any]]:
    return [("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS), ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
            # (gRPC core times a ping out after ping_timeout_ms, 1 minute unless set, whatever keepalive_timeout_ms)
            ("grpc.http2.ping_timeout_ms", KEEPALIVE_TIMEOUT_MS), ("grpc.keepalive_permit_without_calls", 0),
            ("grpc.http2.max_pings_without_data", 0),  # a server busy for minutes sends nothing: keep pinging
            ("grpc.initial_reconnect_backoff_ms", RECONNECT_INITIAL_BACKOFF_MS),
            ("grpc.min_reconnect_backoff_ms", RECONNECT_INITIAL_BACKOFF_MS),
            ("grpc.max_reconnect_backoff_ms", RECONNECT_MAX_BACKOFF_MS)]


def backoff_s(attempt: int, base_s: float = 0.1, cap_s: float = 2.0) -> float:
    """Exponential backoff with full jitter."""
    return random.uniform(0, min(cap_s, base_s * 2 ** attempt))


def _timeout(timeout_s: float | None, default_s: float) -> float:
    """A call's timeout: timeout_s, or the client's default when None (0 was the default too, silently)."""
    if timeout_s is None:
        return default_s
    if not timeout_s > 0:
        raise ValueError(f"timeout_s must be positive (or None for the client's default), not {timeout_s!r}")
    return timeout_s


def retry_pause_s(error: VerifierError, pause: float, cap_s: float = 2.0) -> float:
    """The pause before retrying after `error`: `pause` (a backoff_s), and at least the delay the server asked
    for in its RetryInfo (with up to 20% jitter, so the calls it shed together do not all come back together), but
    never more than cap_s for it."""
    if error.retry_delay_s:
        pause = max(pause, min(cap_s, error.retry_delay_s * random.uniform(1.0, 1.2)))
    return pause


_STUBS = {"knowledge": knowledge_service_pb2_grpc.KnowledgeServiceStub,
          "info_gain": info_gain_service_pb2_grpc.InfoGainServiceStub,
          "kb": knowledge_base_service_pb2_grpc.KnowledgeBaseServiceStub, "health": health_pb2_grpc.HealthStub}


class AsyncVerifierClient:
    """Calls every kgverify RPC; results are plain dataclasses, errors one VerifierError."""

    def __init__(self, target: str, *, timeout_s: float = 120.0, retries: int = 3,
                 credentials: grpc.ChannelCredentials | None = None, metadata: tuple = (),
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES):
        self.target = target
        self.timeout_s = timeout_s
        self.retries = retries
        self.metadata = tuple(metadata)
        self._credentials, self._options = credentials, channel_options(max_message_bytes)
        # The channel is made on the first call, in the event loop that runs it (a grpc.aio channel belongs to one
        # loop: a client built at module level failed its first call inside asyncio.run, "attached to a different
        # loop"); a later asyncio.run gets a new one once the old loop is closed.
        self._channel: grpc.aio.Channel | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    def _bound(self) -> grpc.aio.Channel:
        loop = asyncio.get_running_loop()
        if self._closed:
            raise VerifierError("CANCELLED", "CLIENT_CLOSED", "this client was closed: make a new one")
        if self._channel is None or self._loop is not loop:
            if self._channel is not None and not self._loop.is_closed():
                raise RuntimeError("this AsyncVerifierClient is in use by another event loop: make one client per "
                                   "event loop (or use VerifierClient from threads)")
            self._channel = (grpc.aio.secure_channel(self.target, self._credentials, self._options)
                             if self._credentials else grpc.aio.insecure_channel(self.target, self._options))
            self._loop = loop
            self._stubs = {name: stub(self._channel) for name, stub in _STUBS.items()}  # once per channel
        return self._channel

    def _stub(self, name: str):
        self._bound()
        return self._stubs[name]

    _knowledge = property(lambda self: self._stub("knowledge"))
    _info_gain = property(lambda self: self._stub("info_gain"))
    _kb = property(lambda self: self._stub("kb"))
    _health = property(lambda self: self._stub("health"))

    async def __aenter__(self) -> "AsyncVerifierClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        self._closed = True
        if self._channel is not None and not self._loop.is_closed():
            await self._channel.close()

    async def _call(self, method, request, timeout_s: float | None, retries: int | None = None):
        deadline = time.monotonic() + _timeout(timeout_s, self.timeout_s)
        retries = self.retries if retries is None else retries
        attempt = 0
        while True:
            remaining = deadline - time.monotonic()
            try:
                return await method(request, timeout=max(remaining, 0.001), metadata=self.metadata)
            except grpc.aio.AioRpcError as exc:
                error = VerifierError.from_rpc_error(exc)
                # the server's RetryInfo delay is waited in full while the deadline allows it (else no retry)
                pause = retry_pause_s(error, backoff_s(attempt), cap_s=max(deadline - time.monotonic(), 0.0))
                if not error.retryable or attempt >= retries or deadline - time.monotonic() <= pause:
                    raise error from None
            except grpc.aio.UsageError as exc:  # the channel was closed under the call
                raise VerifierError("CANCELLED", "CLIENT_CLOSED", f"the client's channel is closed ({exc})") from None
            attempt += 1
            await asyncio.sleep(pause)

    async def split(self, reasoning: str | None = None, *, steps=None, question: str = "",
                    splitter: str | None = None, timeout_s: float | None = None) -> SplitResult:
        request = requests.split_request(reasoning, steps, question, splitter)
        return convert.split_result(await self._call(self._knowledge.SplitReasoning, request, timeout_s))

    async def score_knowledge(self, *, timeout_s: float | None = None, **kwargs) -> ChainScore:
        response = await self._call(self._knowledge.ScoreKnowledge, requests.score_knowledge_request(kwargs), timeout_s)
        return convert.chain_score(response, None)

    async def score_info_gain(self, *, timeout_s: float | None = None, **kwargs) -> ChainScore:
        response = await self._call(self._info_gain.ScoreInfoGain, requests.score_info_gain_request(kwargs), timeout_s)
        return convert.chain_score(None, response)

    async def score_chain(self, *, timeout_s: float | None = None, **kwargs) -> ChainScore:
        response = await self._call(self._knowledge.ScoreChain, requests.score_chain_request(kwargs), timeout_s)
        return convert.chain_response(response)

    async def stream_chains(
        self, items: AsyncIterable[tuple[str, knowledge_service_pb2.ScoreChainRequest]],
        timeout_s: float | None = None,
    ) -> AsyncIterator[tuple[str, ChainScore | VerifierError]]:
        """Scores (id, request) items over one StreamScoreChains call; yields (id, result or error) as they finish.

        An exception raised while the items are read (by gRPC, in a task of its own, which then cancels the call)
        is raised here, where the stream is read, instead of the call's bare cancellation."""
        failed: list[Exception] = []

        async def outgoing():
            try:
                async for item_id, request in items:
                    yield knowledge_service_pb2.StreamScoreChainsRequest(id=item_id, chain=request)
            except Exception as exc:
                failed.append(exc)
                raise

        call = self._knowledge.StreamScoreChains(outgoing(), timeout=timeout_s, metadata=self.metadata)
        try:
            async for response in call:
                if response.status.code == 0:
                    yield response.id, convert.chain_response(response.result)
                else:
                    yield response.id, VerifierError.from_status(response.status)
        except grpc.aio.AioRpcError as exc:
            if failed:
                raise failed[0]
            raise VerifierError.from_rpc_error(exc) from None
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if failed and not (task is not None and task.cancelling()):  # the items failed, not this task
                raise failed[0] from None
            raise
        finally:
            call.cancel()  # a consumer that stops early (break, aclose, cancel) ends the server's work too
            # gRPC's task reading `items` is cancelled with the call, but not once the call has ended by itself (the
            # server went away): it would wait on `items` for good and be destroyed pending when the loop closes
            # ("Task was destroyed but it is pending!", "aclose(): asynchronous generator is already running").
            poller = getattr(call, "_async_request_poller", None)
            if poller is not None and not poller.done():
                poller.cancel()

    async def search(self, query: str, *, top_k: int = 0, mode: str | None = None,
                     timeout_s: float | None = None) -> list[SearchHit]:
        response = await self._call(self._kb.SearchKnowledgeBase, requests.search_request(query, top_k, mode), timeout_s)
        return convert.search_hits(response)

    async def kb_info(self, timeout_s: float | None = None) -> dict:
        request = knowledge_base_service_pb2.GetKnowledgeBaseInfoRequest()
        return convert.kb_info(await self._call(self._kb.GetKnowledgeBaseInfo, request, timeout_s))

    async def reload_kb(self, timeout_s: float | None = None) -> tuple[str, str]:
        request = knowledge_base_service_pb2.ReloadKnowledgeBaseRequest()
        # not retried: a reload whose answer was lost would be reported again as "nothing changed"
        response = await self._call(self._kb.ReloadKnowledgeBase, request, timeout_s, retries=0)
        return response.previous_kb_id, response.kb_id

    async def _raise_if_load_failed(self, service: str) -> bool:
        """Raises the error of a load probe that says `service` will not serve without an operator; returns
        whether the service takes calls (every probe got past the server's readiness check: loaded, though it
        may be waiting for a backend)."""
        takes_calls = True
        for method, request in load_probes(self._knowledge, self._info_gain, self._kb, service):
            try:
                await method(request, timeout=2.0, metadata=self.metadata + PROBE_METADATA)
            except grpc.aio.AioRpcError as exc:
                error = VerifierError.from_rpc_error(exc)
                if never_serves(error, service):
                    raise error from None
                if error.code in ("UNAVAILABLE", "DEADLINE_EXCEEDED"):  # NOT_READY: still loading
                    takes_calls = False
        return takes_calls

    async def check_access(self, service: str = KNOWLEDGE_SERVICE) -> None:
        """Raises the server's UNAUTHENTICATED or PERMISSION_DENIED when it refuses this client's calls to
        `service` (no bearer token, or one it does not accept); health checks cannot tell, being exempt from
        auth. One probe call, kept apart from real calls in the server's metrics."""
        for method, request in load_probes(self._knowledge, self._info_gain, self._kb, service):
            try:
                await method(request, timeout=5.0, metadata=self.metadata + PROBE_METADATA)
            except grpc.aio.AioRpcError as exc:
                error = VerifierError.from_rpc_error(exc)
                if error.code in AUTH_CODES:
                    raise error from None

    async def health(self, service: str = "", timeout_s: float = 5.0) -> str:
        """SERVING, NOT_SERVING, SERVICE_UNKNOWN or UNKNOWN for a service ("" = the whole server)."""
        try:
            response = await self._health.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout_s)
        except grpc.aio.AioRpcError as exc:
            raise VerifierError.from_rpc_error(exc) from None
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)

    async def wait_ready(self, service: str = "", timeout_s: float = 300.0, *,
                         connect_timeout_s: float | None = None,
                         on_waiting: Callable[[str], None] | None = None, serving: bool = True) -> None:
        """Waits until the server reports SERVING for the service (with serving=False, until the service takes
        calls: loaded, its backend perhaps down, as a KnowledgeService call that asks for InfoGain only needs).

        A service whose load failed at startup will never serve, nor will a knowledge base service without a
        KB until a reload repairs it: their FAILED_PRECONDITION (SERVICE_LOAD_FAILED, KB_CORRUPT, ... with the
        reason) is raised within PROBE_INTERVAL_S instead of waiting out the timeout. With connect_timeout_s,
        a server that has not answered once within it (connection refused, no such socket, unknown host, TLS
        handshake failure) raises SERVER_UNREACHABLE (UNAVAILABLE); without, it is waited for like a loading one.
        on_waiting(message) is called once when the server answers but the service is not SERVING yet."""
        started = time.monotonic()
        deadline = started + timeout_s
        probed_at = float("-inf")
        answered = False
        while True:
            try:
                status = await self.health(service, timeout_s=2.0)
                answered = True
                if status == "SERVING":
                    return
                if time.monotonic() - probed_at >= PROBE_INTERVAL_S:
                    probed_at = time.monotonic()
                    if await self._raise_if_load_failed(service) and not serving:
                        return
                if on_waiting is not None:
                    on_waiting(f"waiting for the server at {self.target} to become ready "
                               f"({service or 'all services'}: {status})…")
                    on_waiting = None
            except VerifierError as exc:
                if exc.code not in ("UNAVAILABLE", "DEADLINE_EXCEEDED"):
                    raise
                if (not answered and connect_timeout_s is not None
                        and time.monotonic() - started >= connect_timeout_s):
                    raise unreachable_error(self.target, exc, time.monotonic() - started) from None
            if time.monotonic() > deadline:
                raise VerifierError("DEADLINE_EXCEEDED", "NOT_READY", f"{self.target} not SERVING after {timeout_s} s")
            await asyncio.sleep(0.2)
