"""A result whose text alone is over the message limit is refused before its message is built.

Repeated claims are judged once, but each occurrence carries its top_k passages in the response: a 0.3 MB
request (12 steps of one sentence repeated ~270 times, 30 passages of 8,000 characters, top_k 30) made the server
build a 790 MB message on its event loop (health checks waited up to 8 s) only to refuse it, and a message over
protobuf's 2 GiB could not be measured at all (EncodeError: INTERNAL instead of RESPONSE_TOO_LARGE)."""

from __future__ import annotations

import pytest
from google.protobuf.message import EncodeError

from client import AsyncVerifierClient, VerifierError
from server.app import start_server
from server.pipeline import types as t
from server.pipeline.errors import ResponseTooLargeError
from server.servicers import convert
from tests.conftest import make_settings

HANG_GUARD_S = 120  # only catches a hang; nothing here depends on timing

PASSAGE = ("Heparin is neutralized by protamine sulfate, which binds it ionically in the blood. " * 100)[:8000]
REPEATED = {"question": "What reverses heparin?",
            "steps": ["Protamine sulfate reverses heparin. " * 40 for _ in range(4)],
            "context": [{"id": f"p{i}", "text": PASSAGE} for i in range(30)]}


@pytest.fixture
def built(monkeypatch):
    """The response messages the servicers build, by kind."""
    seen: list[str] = []
    for name in ("knowledge_response", "chain_response", "info_gain_response"):
        real = getattr(convert, name)

        def counting(result, _real=real, _name=name):
            seen.append(_name)
            return _real(result)

        monkeypatch.setattr(convert, name, counting)
    return seen


async def test_repeated_claims_over_the_limit_are_refused_without_building_the_response(cache_dir, demo_kb_path,
                                                                                       built):
    limit = 2 * 1024 * 1024
    server = await start_server(make_settings(cache_dir, judge={"backend": "baseline"},
                                              server={"max_message_bytes": limit}), ["127.0.0.1:0"])
    try:
        await server.wait_ready(300)
        async with AsyncVerifierClient(server.addresses[0], retries=0) as client:
            for call in (client.score_knowledge(**REPEATED, top_k=30, timeout_s=HANG_GUARD_S),
                         client.score_chain(**REPEATED, metrics=("ki",), top_k=30, timeout_s=HANG_GUARD_S)):
                with pytest.raises(VerifierError) as info:
                    await call
                assert info.value.code == "RESOURCE_EXHAUSTED" and info.value.reason == "RESPONSE_TOO_LARGE"
                assert "would be over" in info.value.message and "2.1 MB message limit" in info.value.message
                assert "top_k" in info.value.message
            assert built == []  # refused from the result's text: no message was built for either
            small = await client.score_knowledge(**{**REPEATED, "steps": REPEATED["steps"][:1]}, top_k=2,
                                                 timeout_s=HANG_GUARD_S)
            assert small.steps and built == ["knowledge_response"]
    finally:
        await server.stop(0)


def _result(text: str, evidence_text: str, claims: int) -> t.KnowledgeResult:
    evidence = tuple(t.Evidence(f"f{i}", evidence_text, "src", "title", 0.5, t.EvidenceOrigin.KNOWLEDGE_BASE)
                     for i in range(3))
    claim = t.Claim(text, 0, len(text))
    step = t.Step(index=0, text=text, start=0, end=len(text), claims=(claim,) * claims)
    probs = t.LabelProbs(0.8, 0.1, 0.1)
    claim_results = tuple(t.ClaimResult(claim, t.Verdict.SUPPORTED, probs, t.Tier.EMBEDDED, evidence)
                          for _ in range(claims))
    steps = (t.StepResult(step, t.Verdict.SUPPORTED, probs, t.Tier.EMBEDDED, evidence, claim_results),)
    return t.KnowledgeResult(text, steps, 1.0, 1.0, 1.0, t.VerdictCounts(supported=1), 0, -1, t.ChainStatus.OK, 0,
                             t.Provenance())


@pytest.mark.parametrize("text, evidence", [("Heparin is reversed by protamine.", "Protamine binds heparin."),
                                            ("Гепарин нейтрализуется протамином 肝素", "鱼精蛋白中和肝素 ✓ " * 20)])
def test_the_text_floor_never_exceeds_the_serialized_size(text, evidence):
    for claims in (1, 7):
        result = _result(text, evidence, claims)
        floor = convert.text_floor(result)
        assert 0 < floor <= convert.knowledge_response(result).ByteSize()
        chain = t.ChainResult(result, None)
        assert convert.text_floor(chain) == floor <= convert.chain_response(chain).ByteSize()


def test_a_message_protobuf_cannot_measure_is_too_large_not_an_internal_error():
    class Over2GiB:
        def ByteSize(self):
            raise EncodeError("Message kgverify.v1.ScoreKnowledgeResponse exceeds maximum protobuf size of 2GB")

    with pytest.raises(ResponseTooLargeError, match="would be over 2147.5 MB"):
        convert.fitting(Over2GiB(), 16 * 1024 * 1024)
