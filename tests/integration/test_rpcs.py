"""Every RPC through the real clients against the real server, on TCP and on a unix socket."""

import asyncio
import logging

import grpc
import pytest
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from client import AsyncVerifierClient, VerifierClient, VerifierError
from client import requests as rq
from kgverify.v1 import common_pb2 as pb
from kgverify.v1 import knowledge_service_pb2 as kpb
from kgverify.v1 import knowledge_service_pb2_grpc as kgrpc

CHAIN = {
    "question": "Which drug is the usual first choice for type 2 diabetes?",
    "reasoning": "Let's think step by step.\n\nMetformin is the usual first-line drug for type 2 diabetes.\n\n"
                 "So the answer is metformin.",
    "answer": "Metformin",
}


@pytest.mark.parametrize("which", ["tcp", "unix"])
async def test_every_rpc_through_the_async_client(verifier, which):
    address = verifier.addresses[0 if which == "tcp" else 1]
    async with AsyncVerifierClient(address) as client:
        for service in ("", "kgverify.v1.KnowledgeService", "kgverify.v1.InfoGainService",
                        "kgverify.v1.KnowledgeBaseService"):
            assert await client.health(service) == "SERVING"

        split = await client.split(CHAIN["reasoning"], question=CHAIN["question"])
        assert [s.text for s in split.steps][1] == "Metformin is the usual first-line drug for type 2 diabetes."
        assert all(split.chain_text[s.start:s.end] == s.text for s in split.steps)

        ki = await client.score_knowledge(question=CHAIN["question"], reasoning=CHAIN["reasoning"])
        assert ki.knowledge_index is not None and ki.info_gain is None
        knowledge_step = ki.steps[1]
        assert knowledge_step.verdict == "supported" and knowledge_step.evidence
        assert abs(sum(vars(knowledge_step.probabilities).values()) - 1) < 1e-6
        assert ki.steps[0].verdict == "no_knowledge" and ki.steps[0].probabilities is None
        assert ki.provenance["kb_id"].startswith("kb-")

        ig = await client.score_info_gain(**CHAIN)
        assert ig.knowledge_index is None and ig.estimator == "nli" and ig.target == "answer"
        assert len([s for s in ig.steps if s.gain is not None]) == 3
        assert ig.info_gain == pytest.approx(sum(s.gain for s in ig.steps) / 3)

        both = await client.score_chain(**CHAIN, gold_answer="Metformin")
        assert both.knowledge_index is not None and both.info_gain is not None and both.target == "gold_answer"
        assert [s.verdict for s in both.steps] == [s.verdict for s in ki.steps]

        hits = await client.search("first-line drug for type 2 diabetes", top_k=3)
        assert len(hits) == 3 and hits[0].score >= hits[1].score >= hits[2].score
        info = await client.kb_info()
        assert info["num_facts"] >= 300 and info["kb_id"] == ki.provenance["kb_id"]
        previous, current = await client.reload_kb()
        assert previous == current == info["kb_id"]


async def test_stream_results_each_have_a_status_and_a_bad_item_does_not_end_the_stream(verifier):
    good = rq.chain_request(CHAIN)
    bad = rq.chain_request({"question": "q", "reasoning": "x", "steps": ["y"]})

    async def items():
        yield "a", good
        yield "b", bad
        yield "", good  # missing id
        yield "c", rq.chain_request({**CHAIN, "answer": ""}, metrics=("ki",))

    async with AsyncVerifierClient(verifier.addresses[0]) as client:
        results = {item_id: result async for item_id, result in client.stream_chains(items())}
    assert set(results) == {"a", "b", "", "c"}
    assert results["a"].knowledge_index is not None and results["a"].info_gain is not None
    assert isinstance(results["b"], VerifierError) and results["b"].code == "INVALID_ARGUMENT"
    assert isinstance(results[""], VerifierError) and ("id", "is required") in results[""].field_violations
    assert results["c"].info_gain is None and results["c"].knowledge_index is not None


async def test_sync_client(verifier):
    def calls():
        with VerifierClient(verifier.addresses[1]) as client:
            assert client.health() == "SERVING"
            score = client.score_chain(**CHAIN)
            streamed = dict(client.stream_chains([("x", rq.chain_request(CHAIN))]))
            with pytest.raises(VerifierError) as info:
                client.score_knowledge(reasoning="")
            return score, streamed, info.value

    score, streamed, error = await asyncio.to_thread(calls)
    assert score.knowledge_index is not None and streamed["x"].knowledge_index == score.knowledge_index
    assert error.code == "INVALID_ARGUMENT" and error.reason == "INVALID_ARGUMENT"


async def test_context_passages_are_the_only_evidence_unless_the_kb_is_asked_for(verifier):
    context = ["Metformin lowers hepatic glucose production and is first-line for type 2 diabetes."]
    async with AsyncVerifierClient(verifier.addresses[0]) as client:
        only_context = await client.score_knowledge(reasoning=CHAIN["reasoning"], context=context)
        both = await client.score_knowledge(reasoning=CHAIN["reasoning"], context=context, use_knowledge_base=True)
    origins = {e.origin for s in only_context.steps for c in s.claims for e in c.evidence}
    assert origins == {"context"} and "kb_id" not in only_context.provenance
    origins = {e.origin for s in both.steps for c in s.claims for e in c.evidence}
    assert origins == {"context", "knowledge_base"} and both.provenance["kb_id"]


BAD_REQUESTS = {
    "empty chain": kpb.ScoreKnowledgeRequest(question="q"),
    "reasoning and steps": kpb.ScoreKnowledgeRequest(reasoning="a.", steps=["b"]),
    "oversize text": kpb.ScoreKnowledgeRequest(reasoning="word " * 30_000),
    "too many steps": kpb.ScoreKnowledgeRequest(steps=["step"] * 300),
    "unknown enum value": kpb.ScoreKnowledgeRequest(reasoning="a.", options=kpb.KnowledgeOptions(judge=42)),
    "negative top_k": kpb.ScoreKnowledgeRequest(reasoning="a.", options=kpb.KnowledgeOptions(top_k=-1)),
    "malformed context": kpb.ScoreKnowledgeRequest(reasoning="a.", context=[{"id": "p", "text": "  "}]),
    "empty step": kpb.ScoreKnowledgeRequest(steps=["a", ""]),
    "a split step over the step limit": kpb.ScoreKnowledgeRequest(reasoning="A" * 99_999),  # was judged, 1 step
    "passage source over its limit": kpb.ScoreKnowledgeRequest(
        reasoning="a.", context=[{"id": "p", "text": "t", "source": "s" * 5_000_000}]),
}


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
async def test_bad_input_is_invalid_argument_with_a_reason(verifier, case):
    async with grpc.aio.insecure_channel(verifier.addresses[0]) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await kgrpc.KnowledgeServiceStub(channel).ScoreKnowledge(BAD_REQUESTS[case], timeout=30)
    error = VerifierError.from_rpc_error(info.value)
    assert error.code == "INVALID_ARGUMENT", error
    assert error.reason == "INVALID_ARGUMENT" and error.field_violations and error.metadata["request_id"]


@pytest.mark.parametrize("raw", [b"\x0a\x05ab\xed\xa0\x80", b"\xff\xff\xff", b"\x0a\x10short"])
async def test_bytes_that_are_not_a_request_are_invalid_argument_and_a_stream_goes_on(verifier, raw):
    """Invalid protobuf or a string that is not UTF-8 (what a C++ client can send): a clear error, not UNKNOWN."""
    async with grpc.aio.insecure_channel(verifier.addresses[0]) as channel:
        split = channel.unary_unary("/kgverify.v1.KnowledgeService/SplitReasoning",
                                    request_serializer=lambda b: b, response_deserializer=lambda b: b)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await split(raw, timeout=30)
        error = VerifierError.from_rpc_error(info.value)
        assert error.code == "INVALID_ARGUMENT" and error.reason == "UNDECODABLE_MESSAGE", error
        assert "kgverify.v1.SplitReasoningRequest" in error.message and error.metadata["request_id"]
        assert error.message.startswith("invalid request: the bytes are not a valid"), error.message  # no ": :"

        stream = channel.stream_stream("/kgverify.v1.KnowledgeService/StreamScoreChains",
                                       request_serializer=lambda b: b,
                                       response_deserializer=kpb.StreamScoreChainsResponse.FromString)
        good = [kpb.StreamScoreChainsRequest(id=i, chain=rq.chain_request(CHAIN, metrics=("ki",))).SerializeToString()
                for i in ("a", "b")]
        answers = [r async for r in stream(iter([good[0], raw, good[1]]), timeout=60)]
    by_id = {r.id: r for r in answers}
    assert len(answers) == 3 and set(by_id) == {"a", "b", ""}
    assert by_id["a"].status.code == by_id["b"].status.code == 0 and by_id["a"].HasField("result")
    assert by_id[""].status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]


async def test_a_request_with_hundreds_of_violations_is_still_a_readable_invalid_argument(verifier):
    """Every violation listed would overflow the 8 KiB trailer clients accept (they saw RESOURCE_EXHAUSTED)."""
    request = kpb.ScoreKnowledgeRequest(steps=["x" * 8001] * 256)
    async with AsyncVerifierClient(verifier.addresses[0], retries=0) as client, \
            grpc.aio.insecure_channel(verifier.addresses[0]) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await kgrpc.KnowledgeServiceStub(channel).ScoreKnowledge(request, timeout=30)
        with pytest.raises(VerifierError) as via_client:
            await client.score_knowledge(steps=["y" * 8001] * 256)
    error = VerifierError.from_rpc_error(info.value)
    assert error.code == via_client.value.code == "INVALID_ARGUMENT", error
    assert len(error.field_violations) == 9 and error.field_violations[-1][1].endswith("more violations")
    assert error.field_violations[0][0] == "steps[0]"


@pytest.mark.parametrize("judge", [pb.JUDGE_BACKEND_VLLM, pb.JUDGE_BACKEND_CASCADE])
async def test_llm_judges_on_a_server_without_vllm_are_failed_precondition(verifier, judge):
    request = kpb.ScoreKnowledgeRequest(reasoning="Aspirin inhibits COX-1.", options=kpb.KnowledgeOptions(judge=judge))
    async with grpc.aio.insecure_channel(verifier.addresses[0]) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await kgrpc.KnowledgeServiceStub(channel).ScoreKnowledge(request, timeout=30)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION, info.value
    assert "KGV_JUDGE__BASE_URL" in info.value.details()


async def test_messages_over_the_transport_limit_are_resource_exhausted(verifier):
    async with AsyncVerifierClient(verifier.addresses[0], retries=0) as client:
        with pytest.raises(VerifierError) as info:
            await client.score_knowledge(reasoning="x" * (17 * 1024 * 1024))
    assert info.value.code == "RESOURCE_EXHAUSTED"


async def test_a_result_too_big_for_one_message_fails_that_call_or_item_only_with_a_reason(verifier):
    """40 claims x 50 passages of 10,000 characters of evidence each: a 40 MB result from a 0.5 MB request."""
    passage = ("Aspirin irreversibly inhibits cyclooxygenase-1 in platelets. " * 170)[:10_000]
    big = {"question": "q", "steps": [f"Aspirin inhibits COX-1 ({i})." for i in range(40)],
           "context": [{"id": f"p{i}", "text": passage} for i in range(50)]}
    async with AsyncVerifierClient(verifier.addresses[0], retries=0) as client:
        with pytest.raises(VerifierError) as info:
            await client.score_knowledge(**big, top_k=50)
        assert info.value.code == "RESOURCE_EXHAUSTED" and info.value.reason == "RESPONSE_TOO_LARGE"
        assert "MB" in info.value.message and "top_k" in info.value.message

        async def items():
            yield "small-1", rq.chain_request(CHAIN, metrics=("ki",))
            yield "big", rq.chain_request(big, metrics=("ki",), knowledge=kpb.KnowledgeOptions(top_k=50))
            yield "small-2", rq.chain_request(CHAIN, metrics=("ki",))

        results = {item_id: result async for item_id, result in client.stream_chains(items())}
    assert results["big"].reason == "RESPONSE_TOO_LARGE"  # the stream goes on
    assert results["small-1"].knowledge_index is not None and results["small-2"].knowledge_index is not None


async def test_reflection_lists_the_services(verifier):
    def services():
        with grpc.insecure_channel(verifier.addresses[0]) as channel:
            return set(ProtoReflectionDescriptorDatabase(channel).get_services())

    names = await asyncio.to_thread(services)
    assert {"kgverify.v1.KnowledgeService", "kgverify.v1.InfoGainService", "kgverify.v1.KnowledgeBaseService",
            "grpc.health.v1.Health"} <= names


async def test_thousands_of_concurrent_calls_are_answered_not_cancelled(verifier):
    """gRPC core cancels calls beyond 1,000 waiting to be picked up unless the server leaves room for more."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    async with grpc.aio.insecure_channel(verifier.addresses[0]) as channel:
        health = health_pb2_grpc.HealthStub(channel)

        async def check():
            try:
                await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=120)
                return "OK"
            except grpc.aio.AioRpcError as exc:
                return exc.code().name

        outcomes = await asyncio.gather(*(check() for _ in range(3000)))
    assert set(outcomes) == {"OK"}, {o: outcomes.count(o) for o in set(outcomes)}


INVISIBLE = ("\u200b", "\x00", "\ufeff", "\u2060")


@pytest.mark.parametrize("text", INVISIBLE)
async def test_text_without_a_visible_character_is_invalid_argument_in_every_rpc(verifier, text):
    """It was scored: a chain of zero-width spaces got knowledge_index_paper 1.0 and InfoGain for target "\u200b"."""
    from kgverify.v1 import info_gain_service_pb2 as igpb
    from kgverify.v1 import info_gain_service_pb2_grpc as iggrpc
    from kgverify.v1 import knowledge_base_service_pb2 as kbpb
    from kgverify.v1 import knowledge_base_service_pb2_grpc as kbgrpc

    good = "Metformin is the usual first-line drug for type 2 diabetes."
    async with grpc.aio.insecure_channel(verifier.addresses[0]) as channel:
        knowledge, info_gain = kgrpc.KnowledgeServiceStub(channel), iggrpc.InfoGainServiceStub(channel)
        calls = {
            "question steps[0] answer": (knowledge.ScoreChain,
                                      kpb.ScoreChainRequest(question=text, steps=[text], answer=text)),
            "steps[1]": (knowledge.ScoreKnowledge, kpb.ScoreKnowledgeRequest(steps=[good, text])),
            "reasoning": (knowledge.SplitReasoning, kpb.SplitReasoningRequest(reasoning=text)),
            "context[0].text": (knowledge.ScoreKnowledge, kpb.ScoreKnowledgeRequest(
                steps=[good], context=[pb.Passage(id="p", text=text * 2)])),
            "question": (info_gain.ScoreInfoGain, igpb.ScoreInfoGainRequest(question=text, steps=[good], answer="m")),
            "answer": (info_gain.ScoreInfoGain, igpb.ScoreInfoGainRequest(question="q", steps=[good], answer=text)),
            "query": (kbgrpc.KnowledgeBaseServiceStub(channel).SearchKnowledgeBase,
                      kbpb.SearchKnowledgeBaseRequest(query=text)),
        }
        for fields, (method, request) in calls.items():
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await method(request, timeout=60)
            error = VerifierError.from_rpc_error(info.value)
            assert error.code == "INVALID_ARGUMENT", (fields, error)
            assert set(fields.split()) <= {field for field, _ in error.field_violations}, (fields, error)


def _item(item_id, chain=None):
    return kpb.StreamScoreChainsRequest(id=item_id, chain=chain or rq.chain_request(CHAIN, metrics=("ki",)))


async def test_a_repeated_stream_item_id_gets_its_own_error_and_is_not_scored(verifier):
    """Results come back in any order: two results with one id could not be told apart."""
    bad_chain = rq.chain_request({"question": "q", "reasoning": "x", "steps": ["y"]})
    items = [_item("a"), _item("a"), _item("b", bad_chain), _item("b"), _item(""), _item(""), _item("c"), _item("a")]
    async with grpc.aio.insecure_channel(verifier.addresses[0]) as channel:
        results = [r async for r in kgrpc.KnowledgeServiceStub(channel).StreamScoreChains(iter(items), timeout=120)]
    assert len(results) == len(items)
    by_id: dict[str, list] = {}
    for result in results:
        by_id.setdefault(result.id, []).append(result)
    scored = [r for r in results if r.HasField("result")]
    assert sorted(r.id for r in scored) == ["a", "c"]  # the first "a" only
    errors = {item_id: [VerifierError.from_status(r.status) for r in rs if not r.HasField("result")]
              for item_id, rs in by_id.items()}
    assert [e.reason for e in errors["a"]] == ["DUPLICATE_ID", "DUPLICATE_ID"]
    assert all(("id" in dict(e.field_violations)) and e.code == "INVALID_ARGUMENT" for e in errors["a"])
    assert sorted(e.reason for e in errors["b"]) == ["DUPLICATE_ID", "INVALID_ARGUMENT"]  # the first is validated
    assert [e.field_violations for e in errors[""]] == [[("id", "is required")]] * 2  # empty ids: required, twice


async def test_an_over_long_stream_item_id_is_echoed_in_full_never_cut_into_a_valid_id(verifier):
    """A 257-character id's error came back under its first 256 characters: the id of the valid item beside it."""
    limit = verifier.runtime.settings.limits.max_id_chars
    valid, too_long = "i" * limit, "i" * (limit + 1)
    async with grpc.aio.insecure_channel(verifier.addresses[0]) as channel:
        results = [r async for r in kgrpc.KnowledgeServiceStub(channel).StreamScoreChains(
            iter([_item(valid), _item(too_long), _item("é" * (limit + 40))]), timeout=120)]
    by_id = {r.id: r for r in results}
    assert set(by_id) == {valid, too_long, "é" * (limit + 40)}
    assert by_id[valid].HasField("result") and by_id[valid].status.code == 0
    error = VerifierError.from_status(by_id[too_long].status)
    assert error.code == "INVALID_ARGUMENT" and not by_id[too_long].HasField("result")
    assert error.field_violations[0][0] == "id" and "KGV_LIMITS__MAX_ID_CHARS" in error.field_violations[0][1]


@pytest.mark.parametrize("path, raw", [
    ("/grpc.health.v1.Health/Check", b"\x0a\x02\xff\xfe"),
    ("/grpc.health.v1.Health/Check", b"\xff"),
    ("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", b"\x0a\x02\xff\xfe"),
])
async def test_undecodable_health_and_reflection_requests_are_invalid_argument(verifier, path, raw, caplog):
    """Health needs no token: its parse errors were UNKNOWN with Python's exception text and an ERROR traceback in
    the server log, per call."""
    async with grpc.aio.insecure_channel(verifier.addresses[0]) as channel:
        if "Reflection" in path:
            call = channel.stream_stream(path, request_serializer=lambda b: b, response_deserializer=lambda b: b)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                async for _ in call(iter([raw]), timeout=30):
                    pass
        else:
            call = channel.unary_unary(path, request_serializer=lambda b: b, response_deserializer=lambda b: b)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await call(raw, timeout=30)
    error = VerifierError.from_rpc_error(info.value)
    assert error.code == "INVALID_ARGUMENT" and error.reason == "UNDECODABLE_MESSAGE", error
    assert error.message.startswith("invalid request: the bytes are not a valid grpc."), error.message
    assert "Unexpected" not in error.message and "<class" not in error.message
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
