"""The LLM decomposer against the fake vLLM server: structured output, offsets, and explicit errors."""

from __future__ import annotations

import asyncio
import json

import pytest

from server.backends.splitters.llm_decomposer import SCHEMA, LlmDecomposer, _parse
from server.backends.vllm_client import VllmClient
from server.pipeline.deadline import Deadline
from server.pipeline.errors import BackendResponseError, BackendTimeoutError, BackendUnavailableError
from server.pipeline.runtime import Blocking
from tests.fakes.vllm_server import ChatReply, FakeVllmServer

QUESTION = "A patient on warfarin has a high INR. Which agent reverses warfarin?"
CHAIN = (
    "<think>\nOkay, the question is about reversing warfarin.\n\n"
    "Warfarin is a vitamin K antagonist, so vitamin K reverses its effect. "
    "Protamine reverses heparin, not warfarin.\n</think>\n\n"
    "So the answer is vitamin K."
)
PIECES = [
    ("find what reverses warfarin", "", "Okay, the question is about reversing warfarin."),
    ("recall the mechanism", "Warfarin is a vitamin K antagonist.",
     "Warfarin is a vitamin K antagonist, so vitamin K reverses its effect."),
    ("rule out protamine", "Protamine reverses heparin.", "Protamine reverses heparin, not warfarin."),
    ("answer", "", "So the answer is vitamin K."),
]


def constrained(body: dict) -> bool:
    """What vLLM >= 0.12 honours: response_format json_schema or structured_outputs.json (not guided_json)."""
    fmt = body.get("response_format") or {}
    return (fmt.get("type") == "json_schema" and "schema" in fmt.get("json_schema", {})) or \
        "json" in (body.get("structured_outputs") or {})


class FakeDecomposerModel:
    """Answers with the given steps as JSON when the request constrains the output, else with chatter."""

    def __init__(self, pieces=PIECES, raw: str | None = None):
        self.pieces = pieces
        self.raw = raw

    def __call__(self, body: dict) -> ChatReply:
        if self.raw is not None:
            return ChatReply(self.raw)
        if not constrained(body):
            return ChatReply("Sure! Here is how I would split it: first the question, then the facts.")
        steps = [{"planning": p, "knowledge": k, "step_text": t} for p, k, t in self.pieces]
        return ChatReply(json.dumps({"steps": steps}))


@pytest.fixture
def fake():
    with FakeVllmServer(chat=FakeDecomposerModel()) as server:
        yield server


@pytest.fixture
async def decomposer(fake):
    dec = LlmDecomposer(VllmClient(fake.base_url, max_retries=0), "judge", Blocking(None))
    yield dec
    await dec.aclose()


async def test_steps_come_back_with_exact_offsets_planning_and_knowledge(decomposer):
    result = await decomposer.asplit(CHAIN, QUESTION)
    assert result.splitter == "llm/1:judge" and result.llm_calls == 1
    assert [s.text for s in result.steps] == [
        "<think>\nOkay, the question is about reversing warfarin.",
        "Warfarin is a vitamin K antagonist, so vitamin K reverses its effect.",
        "Protamine reverses heparin, not warfarin.\n</think>",
        "So the answer is vitamin K.",
    ]
    for step in result.steps:
        assert CHAIN[step.start:step.end] == step.text
        assert all(CHAIN[c.start:c.end] == c.text for c in step.claims)
    assert [s.planning for s in result.steps] == [p for p, _, _ in PIECES]
    assert [s.knowledge for s in result.steps] == [k for _, k, _ in PIECES]
    assert [s.no_knowledge for s in result.steps] == [True, False, False, True]


async def test_request_constrains_the_output_with_the_json_schema(fake, decomposer):
    await decomposer.asplit(CHAIN, QUESTION)
    path, body = fake.requests[-1]
    assert path == "/v1/chat/completions" and body["model"] == "judge" and body["temperature"] == 0
    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["schema"] == SCHEMA
    assert not any(key.startswith("guided_") for key in body)  # ignored by vLLM >= 0.12
    assert QUESTION in body["messages"][-1]["content"] and CHAIN in body["messages"][-1]["content"]


async def test_unconstrained_chatter_is_an_error_not_a_score(fake, decomposer):
    fake.chat = lambda body: FakeDecomposerModel()({k: v for k, v in body.items() if k != "response_format"})
    with pytest.raises(BackendResponseError, match="malformed JSON"):
        await decomposer.asplit(CHAIN, QUESTION)


@pytest.mark.parametrize("raw, message", [
    ('{"steps": [{"planning": "x", "knowledge": "", "step_text": "Okay', "malformed JSON"),
    ('{"steps": []}', "no `steps` list"),
    ('{"steps": [{"planning": "x", "knowledge": ""}]}', "does not follow the schema"),
    ('[1, 2]', "no `steps` list"),
])
async def test_output_that_breaks_the_schema_is_an_error(fake, decomposer, raw, message):
    fake.chat = FakeDecomposerModel(raw=raw)
    with pytest.raises(BackendResponseError, match=message):
        await decomposer.asplit(CHAIN, QUESTION)


def test_output_cut_off_at_the_token_limit_is_an_error():
    data = {"choices": [{"message": {"content": '{"steps": [{"plan'}, "finish_reason": "length"}]}
    with pytest.raises(BackendResponseError, match="cut off"):
        _parse(data)


async def test_lightly_rewritten_steps_are_aligned(fake, decomposer):
    fake.chat = FakeDecomposerModel([
        ("a", "", "okay,  the QUESTION is about reversing warfarin."),  # case and spacing
        ("b", "k", "Warfarin is a vitamin K antagonist so vitamin K reverses the effect."),  # reworded
        ("c", "k", "Protamine reverses heparin, not warfarin."),
        ("d", "", "So the answer is vitamin K."),
    ])
    result = await decomposer.asplit(CHAIN, QUESTION)
    assert [CHAIN[s.start:s.start + 9] for s in result.steps] == ["<think>\nO", "Warfarin ", "Protamine", "So the an"]


async def test_text_the_model_invented_is_an_error(fake, decomposer):
    fake.chat = FakeDecomposerModel([("a", "k", "Dabigatran is reversed by idarucizumab in every patient.")])
    with pytest.raises(BackendResponseError, match="rewrote the chain"):
        await decomposer.asplit(CHAIN, QUESTION)


async def test_text_the_model_skipped_stays_in_the_step_before(fake, decomposer):
    fake.chat = FakeDecomposerModel([PIECES[0], PIECES[1], PIECES[3]])
    result = await decomposer.asplit(CHAIN, QUESTION)
    assert result.steps[1].text.endswith("Protamine reverses heparin, not warfarin.\n</think>")
    assert "".join(CHAIN[s.start:s.end] for s in result.steps).replace(" ", "").replace("\n", "") == \
        CHAIN.replace(" ", "").replace("\n", "")


async def test_pre_split_steps_make_no_llm_call(fake, decomposer):
    result = decomposer.split_steps(["Warfarin is a vitamin K antagonist.", "So the answer is B."], QUESTION)
    assert result.llm_calls == 0 and len(result.steps) == 2 and fake.requests == []


async def test_unreachable_decomposer_is_unavailable():
    server = FakeVllmServer(chat=FakeDecomposerModel()).start()
    url = server.base_url
    server.stop()
    dec = LlmDecomposer(VllmClient(url, max_retries=0), "judge", Blocking(None))
    try:
        with pytest.raises(BackendUnavailableError):
            await dec.asplit(CHAIN, QUESTION)
    finally:
        await dec.aclose()


async def test_a_slow_decomposer_respects_the_deadline(fake, decomposer):
    fake.faults.delay_s = 2.0
    with pytest.raises(BackendTimeoutError):
        await decomposer.asplit(CHAIN, QUESTION, Deadline.after(0.2))


def test_blocking_split_uses_its_own_client(fake):
    dec = LlmDecomposer(VllmClient(fake.base_url), "judge", Blocking(None),
                        client_factory=lambda: VllmClient(fake.base_url))
    result = dec.split(CHAIN, QUESTION)
    assert len(result.steps) == 4 and result.llm_calls == 1


def test_a_server_without_vllm_settings_is_not_configured_for_the_decomposer(tmp_path):
    from server.backends.splitters.llm_decomposer import decomposer_from_settings
    from server.pipeline.errors import BackendNotConfiguredError
    from tests.conftest import make_settings

    with pytest.raises(BackendNotConfiguredError, match="KGV_SPLITTER__BASE_URL"):
        decomposer_from_settings(make_settings(tmp_path), Blocking(None))
    configured = decomposer_from_settings(make_settings(tmp_path, splitter={"backend": "llm"}), Blocking(None))
    assert configured.client.base_url == "http://127.0.0.1:8000/v1" and configured.model == "judge"
    asyncio.run(configured.aclose())
