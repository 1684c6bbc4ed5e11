"""VerifierClient: the blocking client, retrying on UNAVAILABLE and on what the server asks to be retried
(RESOURCE_EXHAUSTED with RetryInfo), after the delay it asks for."""

from __future__ import annotations

import time
from typing import Callable, Iterable, Iterator

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from kgverify.v1 import info_gain_service_pb2_grpc, knowledge_base_service_pb2, knowledge_base_service_pb2_grpc
from kgverify.v1 import knowledge_service_pb2, knowledge_service_pb2_grpc

from . import convert, requests
from .aio import (DEFAULT_MAX_MESSAGE_BYTES, PROBE_INTERVAL_S, PROBE_METADATA, backoff_s, channel_options, load_probes,
                  never_serves, retry_pause_s, unreachable_error, _timeout)
from .errors import VerifierError
from .types import ChainScore, SearchHit, SplitResult


class VerifierClient:
    """Calls every kgverify RPC; results are plain dataclasses, errors one VerifierError."""

    def __init__(self, target: str, *, timeout_s: float = 120.0, retries: int = 3,
                 credentials: grpc.ChannelCredentials | None = None, metadata: tuple = (),
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES):
        self.target = target
        self.timeout_s = timeout_s
        self.retries = retries
        self.metadata = tuple(metadata)
        options = channel_options(max_message_bytes)
        self._channel = (grpc.secure_channel(target, credentials, options) if credentials
                         else grpc.insecure_channel(target, options))
        self._knowledge = knowledge_service_pb2_grpc.KnowledgeServiceStub(self._channel)
        self._info_gain = info_gain_service_pb2_grpc.InfoGainServiceStub(self._channel)
        self._kb = knowledge_base_service_pb2_grpc.KnowledgeBaseServiceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    def __enter__(self) -> "VerifierClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def _call(self, method, request, timeout_s: float | None, retries: int | None = None):
        deadline = time.monotonic() + _timeout(timeout_s, self.timeout_s)
        retries = self.retries if retries is None else retries
        attempt = 0
        while True:
            try:
                return method(request, timeout=max(deadline - time.monotonic(), 0.001), metadata=self.metadata)
            except grpc.RpcError as exc:
                error = VerifierError.from_rpc_error(exc)
                # the server's RetryInfo delay is waited in full while the deadline allows it (else no retry)
                pause = retry_pause_s(error, backoff_s(attempt), cap_s=max(deadline - time.monotonic(), 0.0))
                if not error.retryable or attempt >= retries or deadline - time.monotonic() <= pause:
                    raise error from None
            except ValueError as exc:
                if "closed channel" not in str(exc):
                    raise
                raise VerifierError("CANCELLED", "CLIENT_CLOSED", "this client was closed: make a new one") from None
            attempt += 1
            time.sleep(pause)

    def split(self, reasoning: str | None = None, *, steps=None, question: str = "",
              splitter: str | None = None, timeout_s: float | None = None) -> SplitResult:
        request = requests.split_request(reasoning, steps, question, splitter)
        return convert.split_result(self._call(self._knowledge.SplitReasoning, request, timeout_s))

    def score_knowledge(self, *, timeout_s: float | None = None, **kwargs) -> ChainScore:
        response = self._call(self._knowledge.ScoreKnowledge, requests.score_knowledge_request(kwargs), timeout_s)
        return convert.chain_score(response, None)

    def score_info_gain(self, *, timeout_s: float | None = None, **kwargs) -> ChainScore:
        response = self._call(self._info_gain.ScoreInfoGain, requests.score_info_gain_request(kwargs), timeout_s)
        return convert.chain_score(None, response)

    def score_chain(self, *, timeout_s: float | None = None, **kwargs) -> ChainScore:
        response = self._call(self._knowledge.ScoreChain, requests.score_chain_request(kwargs), timeout_s)
        return convert.chain_response(response)

    def stream_chains(self, items: Iterable[tuple[str, knowledge_service_pb2.ScoreChainRequest]],
                      timeout_s: float | None = None) -> Iterator[tuple[str, ChainScore | VerifierError]]:
        """Scores (id, request) items over one StreamScoreChains call; yields results as they finish.

        An exception raised while the items are read (by gRPC, in a thread of its own, which then ends the call as
        UNKNOWN "Exception iterating requests!") is raised here, where the stream is read."""
        failed: list[Exception] = []

        def outgoing():
            try:
                for item_id, request in items:
                    yield knowledge_service_pb2.StreamScoreChainsRequest(id=item_id, chain=request)
            except Exception as exc:
                failed.append(exc)
                raise

        call = self._knowledge.StreamScoreChains(outgoing(), timeout=timeout_s, metadata=self.metadata)
        try:
            for response in call:
                if response.status.code == 0:
                    yield response.id, convert.chain_response(response.result)
                else:
                    yield response.id, VerifierError.from_status(response.status)
        except grpc.RpcError as exc:
            if failed:
                raise failed[0] from None
            raise VerifierError.from_rpc_error(exc) from None
        finally:
            call.cancel()  # a consumer that stops early (break, close) ends the server's work too

    def search(self, query: str, *, top_k: int = 0, mode: str | None = None,
               timeout_s: float | None = None) -> list[SearchHit]:
        response = self._call(self._kb.SearchKnowledgeBase, requests.search_request(query, top_k, mode), timeout_s)
        return convert.search_hits(response)

    def kb_info(self, timeout_s: float | None = None) -> dict:
        request = knowledge_base_service_pb2.GetKnowledgeBaseInfoRequest()
        return convert.kb_info(self._call(self._kb.GetKnowledgeBaseInfo, request, timeout_s))

    def reload_kb(self, timeout_s: float | None = None) -> tuple[str, str]:
        # not retried: a reload whose answer was lost would be reported again as "nothing changed"
        response = self._call(self._kb.ReloadKnowledgeBase, knowledge_base_service_pb2.ReloadKnowledgeBaseRequest(),
                              timeout_s, retries=0)
        return response.previous_kb_id, response.kb_id

    def _raise_if_load_failed(self, service: str) -> bool:
        """Raises the error of a load probe that says `service` will not serve without an operator; returns
        whether the service takes calls (see aio)."""
        takes_calls = True
        for method, request in load_probes(self._knowledge, self._info_gain, self._kb, service):
            try:
                method(request, timeout=2.0, metadata=self.metadata + PROBE_METADATA)
            except grpc.RpcError as exc:
                error = VerifierError.from_rpc_error(exc)
                if never_serves(error, service):
                    raise error from None
                if error.code in ("UNAVAILABLE", "DEADLINE_EXCEEDED"):  # NOT_READY: still loading
                    takes_calls = False
        return takes_calls

    def health(self, service: str = "", timeout_s: float = 5.0) -> str:
        try:
            response = self._health.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout_s)
        except grpc.RpcError as exc:
            raise VerifierError.from_rpc_error(exc) from None
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)

    def wait_ready(self, service: str = "", timeout_s: float = 300.0, *, connect_timeout_s: float | None = None,
                   on_waiting: Callable[[str], None] | None = None, serving: bool = True) -> None:
        """Waits until the server reports SERVING for the service (with serving=False, until the service takes
        calls: loaded, its backend perhaps down); raises at once when it will not serve, and after
        connect_timeout_s when it has not answered once (see aio)."""
        started = time.monotonic()
        deadline = started + timeout_s
        probed_at = float("-inf")
        answered = False
        while True:
            try:
                status = self.health(service, timeout_s=2.0)
                answered = True
                if status == "SERVING":
                    return
                if time.monotonic() - probed_at >= PROBE_INTERVAL_S:
                    probed_at = time.monotonic()
                    if self._raise_if_load_failed(service) and not serving:
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
            time.sleep(0.2)
