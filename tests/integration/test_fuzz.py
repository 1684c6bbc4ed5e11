"""Hypothesis-generated requests (valid and invalid) against a live server: no crash, hang or INTERNAL."""

import asyncio
import collections

import grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kgverify.v1 import common_pb2 as pb
from kgverify.v1 import info_gain_service_pb2 as igpb
from kgverify.v1 import info_gain_service_pb2_grpc as iggrpc
from kgverify.v1 import knowledge_base_service_pb2 as kbpb
from kgverify.v1 import knowledge_base_service_pb2_grpc as kbgrpc
from kgverify.v1 import knowledge_service_pb2 as kpb
from kgverify.v1 import knowledge_service_pb2_grpc as kgrpc

BATCH = 100
EXAMPLES = 100  # x BATCH requests = 10,000
ALLOWED = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION,
           grpc.StatusCode.RESOURCE_EXHAUSTED}
WORDS = ["aspirin", "inhibits", "COX", "metformin", "is", "first-line", "for", "diabetes", "the", "answer",
         "Let's", "think.", "2.5 mg/kg", "$x^2$", "Step 1:", "\n\n", "\n", "- ", "1.", "e.g.", "heparin", "?"]

words = st.lists(st.sampled_from(WORDS[:12]), min_size=1, max_size=12).map(" ".join)
text = st.one_of(words, words, words, words, st.lists(st.sampled_from(WORDS), max_size=30).map(" ".join),
                 st.text(max_size=60), st.just(""))
def enum(*valid: int):
    """Mostly valid enum values, sometimes unknown ones."""
    return st.one_of(st.sampled_from((0,) + valid), st.sampled_from((0,) + valid), st.integers(-2, 9))


def maybe(strategy, otherwise):
    return st.one_of(strategy, strategy, strategy, st.just(otherwise))
passage = st.builds(lambda i, t, s: pb.Passage(id=i, text=t, source=s), st.text(max_size=8), maybe(words, ""),
                    st.text(max_size=8))
steps = st.one_of(st.lists(words, min_size=1, max_size=6), st.lists(text, max_size=6))
chain_text = st.one_of(st.tuples(text, st.just([])), st.tuples(text, st.just([])), st.tuples(st.just(""), steps),
                       st.tuples(text, steps))
k_options = st.builds(
    lambda top_k, judge, mode, use_kb, splitter: kpb.KnowledgeOptions(
        top_k=top_k, judge=judge, retrieval_mode=mode, splitter=splitter,
        **({} if use_kb is None else {"use_knowledge_base": use_kb})),
    maybe(st.integers(0, 10), -1), enum(1, 2), enum(1), st.none() | st.none() | st.booleans(), enum(1))
ig_options = st.builds(
    lambda est, mode, units, window, per_token: igpb.InfoGainOptions(
        estimator=est, mode=mode, units=units, window=window, per_token=per_token),
    enum(2), enum(1, 2), enum(1, 2), maybe(st.integers(0, 3), -1), st.booleans())

split = st.builds(lambda rs, q, sp: ("split", kpb.SplitReasoningRequest(reasoning=rs[0], steps=rs[1], question=q,
                                                                          splitter=sp)),
                  chain_text, text, enum(1))
knowledge = st.builds(lambda q, rs, c, o: ("ki", kpb.ScoreKnowledgeRequest(question=q, reasoning=rs[0], steps=rs[1],
                                                                          context=c, options=o)),
                      text, chain_text, st.lists(passage, max_size=3), k_options)
info_gain = st.builds(lambda q, rs, a, g, ch, o: ("ig", igpb.ScoreInfoGainRequest(
    question=q, reasoning=rs[0], steps=rs[1], answer=a, gold_answer=g, choices=ch, options=o)),
    text, chain_text, maybe(text, ""), text, st.lists(text, max_size=4), ig_options)
chain = st.builds(lambda q, rs, a, c, m, ko, io: ("chain", kpb.ScoreChainRequest(
    question=q, reasoning=rs[0], steps=rs[1], answer=a, context=c, metrics=m, knowledge_options=ko,
    info_gain_options=io)),
    text, chain_text, maybe(text, ""), st.lists(passage, max_size=2), st.one_of(st.just([]), st.just([]), st.lists(st.integers(-1, 3), max_size=2)),
    k_options, ig_options)
search = st.builds(lambda q, k, m: ("search", kbpb.SearchKnowledgeBaseRequest(query=q, top_k=k, mode=m)),
                   text, maybe(st.integers(0, 20), -1), enum(1))
request = st.one_of(split, split, split, split, search, search, search, knowledge, info_gain, chain)

COUNTS: collections.Counter = collections.Counter()


async def _send(stubs, kind, message) -> grpc.StatusCode:
    method = {"split": stubs["k"].SplitReasoning, "ki": stubs["k"].ScoreKnowledge, "chain": stubs["k"].ScoreChain,
              "ig": stubs["ig"].ScoreInfoGain, "search": stubs["kb"].SearchKnowledgeBase}[kind]
    try:
        await method(message, timeout=120)
        return grpc.StatusCode.OK
    except grpc.aio.AioRpcError as exc:
        return exc.code()


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
@given(batch=st.lists(request, min_size=BATCH, max_size=BATCH))
async def test_generated_requests_never_crash_hang_or_fail_internally(verifier, batch):
    async with grpc.aio.insecure_channel(verifier.addresses[0]) as channel:
        stubs = {"k": kgrpc.KnowledgeServiceStub(channel), "ig": iggrpc.InfoGainServiceStub(channel),
                 "kb": kbgrpc.KnowledgeBaseServiceStub(channel)}
        codes = await asyncio.gather(*(_send(stubs, kind, message) for kind, message in batch))
    for (kind, message), code in zip(batch, codes):
        COUNTS[(kind, code.name)] += 1
        assert code in ALLOWED, f"{kind} got {code.name} for {message}"


async def test_the_fuzzed_server_is_still_healthy_and_saw_both_valid_and_invalid_requests(verifier):
    from client import AsyncVerifierClient

    async with AsyncVerifierClient(verifier.addresses[0]) as client:
        assert await client.health() == "SERVING"
    if COUNTS:  # the fuzz test ran in this session
        assert sum(COUNTS.values()) >= 10_000
        assert sum(v for (_, code), v in COUNTS.items() if code == "OK") >= 1_000
        assert sum(v for (_, code), v in COUNTS.items() if code == "INVALID_ARGUMENT") >= 1_000
