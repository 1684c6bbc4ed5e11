"""Which services of a server a scoring request needs, and waiting until the server can score requests.

A command that scores on a server waits for these services only, not for the whole server: a server whose
knowledge base failed to load still scores chains against their own context passages, and one whose judge is
down still scores InfoGain."""

from __future__ import annotations

import time
from typing import Callable, Iterable

from kgverify.v1 import info_gain_service_pb2, knowledge_base_service_pb2

from . import requests
from .aio import CONNECT_TIMEOUT_S, KNOWLEDGE_SERVICE, AsyncVerifierClient

# Health service names, as the proto declares them.
KNOWLEDGE = KNOWLEDGE_SERVICE
INFO_GAIN = info_gain_service_pb2.DESCRIPTOR.services_by_name["InfoGainService"].full_name
KNOWLEDGE_BASE = knowledge_base_service_pb2.DESCRIPTOR.services_by_name["KnowledgeBaseService"].full_name


def uses_knowledge_base(request) -> bool:
    """Whether the server judges this ScoreChainRequest's KI against its KB (the server's rule: without context
    passages, unless the request says otherwise)."""
    if requests.METRICS["ki"] not in request.metrics:
        return False
    options = request.knowledge_options
    return options.use_knowledge_base if options.HasField("use_knowledge_base") else not request.context


def scoring_services(chain_requests: Iterable) -> tuple[str, ...]:
    """The services that score the requests: the knowledge service (ScoreChain and the stream are its calls),
    and the InfoGain service when a request asks for InfoGain (the knowledge base service: see
    uses_knowledge_base)."""
    info_gain = any(requests.METRICS["infogain"] in r.metrics for r in chain_requests)
    return (KNOWLEDGE,) + ((INFO_GAIN,) if info_gain else ())


# Judges that need no vLLM: a call naming one is served while the server waits for its default (vLLM) judge.
LOCAL_JUDGES = frozenset(requests.JUDGES[name] for name in ("nli", "baseline", "cascade"))


def _needs_default_judge(request) -> bool:
    return requests.METRICS["ki"] in request.metrics and request.knowledge_options.judge not in LOCAL_JUDGES


def serving_needed(chain_requests: Iterable) -> set[str]:
    """Of scoring_services, those that must be SERVING (their backend up): the knowledge service only when a
    request asks for KI with the server's judge or the vllm one; one that names a judge running in the server
    (nli, baseline, cascade) is served while the default vLLM judge waits, so the service need only take calls
    (a call the server still refuses NOT_READY, e.g. its default LLM decomposer down, is waited for and sent
    again: see retry_not_ready)."""
    chain_requests = list(chain_requests)
    ki = any(_needs_default_judge(r) for r in chain_requests)
    return {s for s in scoring_services(chain_requests) if s != KNOWLEDGE or ki}


async def retry_not_ready(client: AsyncVerifierClient, chain_requests: Iterable, deadline: float, call,
                          on_waiting: Callable[[str], None] | None = None):
    """await call(); when the server answers NOT_READY (the service takes calls, but not this one yet), waits
    until every scoring service it needs is SERVING, up to the monotonic deadline, and calls once more."""
    from .errors import VerifierError

    try:
        return await call()
    except VerifierError as exc:
        if exc.code != "UNAVAILABLE" or exc.reason != "NOT_READY":
            raise
    chain_requests = list(chain_requests)
    for service in scoring_services(chain_requests):
        await client.wait_ready(service, timeout_s=max(deadline - time.monotonic(), 0.0),
                                connect_timeout_s=CONNECT_TIMEOUT_S, on_waiting=on_waiting)
    return await call()


async def wait_until_ready(client: AsyncVerifierClient, chain_requests: Iterable, timeout_s: float, *,
                           on_waiting: Callable[[str], None] | None = None, knowledge_base: bool = True) -> None:
    """Waits, up to timeout_s in all, until the client's server can score the requests: their scoring services
    and, with knowledge_base, the knowledge base service when a request uses it. Raises VerifierError at once
    for a server that does not answer within CONNECT_TIMEOUT_S (SERVER_UNREACHABLE) or a service it needs that
    will not serve (SERVICE_LOAD_FAILED, KB_CORRUPT, KB_NOT_LOADED, ...), DEADLINE_EXCEEDED (NOT_READY) after
    timeout_s. on_waiting(message) is called at most once, when a service is not ready yet."""
    chain_requests = list(chain_requests)
    deadline = time.monotonic() + timeout_s
    said: list[str] = []

    def waiting(message: str) -> None:
        if on_waiting is not None and not said:
            said.append(message)
            on_waiting(message)

    serving = serving_needed(chain_requests)
    services = list(scoring_services(chain_requests))
    if knowledge_base and any(uses_knowledge_base(r) for r in chain_requests):
        services.append(KNOWLEDGE_BASE)
        serving.add(KNOWLEDGE_BASE)
    for service in services:
        await client.wait_ready(service, timeout_s=max(deadline - time.monotonic(), 0.0),
                                connect_timeout_s=CONNECT_TIMEOUT_S, on_waiting=waiting,
                                serving=service in serving)
