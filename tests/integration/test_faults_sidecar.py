"""The medical QA example beside a real verifier on a unix socket: content policy, fail-open and fail-closed."""

import asyncio
import logging
import threading

import httpx
import pytest

from examples.medqa.app import Config, create_server
from server.app import start_server
from server.backends import registry
from server.pipeline.types import Judgement, Verdict
from tests.conftest import make_settings
from tests.fakes.backends import FakeJudge
from tests.fakes.vllm_server import ChatReply, FakeVllmServer

GOOD = "Step 1: Heparin is an anticoagulant.\nStep 2: Protamine sulfate neutralizes heparin.\nAnswer: Protamine sulfate"
WRONG = "Step 1: Heparin is an anticoagulant.\nStep 2: Vitamin K neutralizes heparin.\nAnswer: Vitamin K"
SECRET = "Mrs Jane Roe, born 1950-02-03"


def _reply(body):
    question = body["messages"][-1]["content"]
    return ChatReply(WRONG if "wrong" in question else GOOD)


@pytest.fixture(scope="module")
def qa_llm():
    with FakeVllmServer(model="qa", chat=_reply) as fake:
        yield fake


@pytest.fixture
async def sidecar(cache_dir, demo_kb_path, monkeypatch, tmp_path):
    """The verifier on a unix socket with a fake judge that contradicts 'Vitamin K neutralizes heparin'."""
    judge = FakeJudge(contradict="Vitamin K neutralizes")
    monkeypatch.setitem(registry.JUDGES, "nli", lambda ctx: judge)
    sock = tmp_path / "kgverify.sock"
    server = await start_server(make_settings(cache_dir), [f"unix://{sock}"])
    await server.wait_ready(300)
    yield judge, f"unix://{sock}"
    await server.stop(0)


@pytest.fixture
def medqa(qa_llm):
    """Starts the QA service in threads; returns its base URL."""
    started = []

    def start(verifier, **options):
        config = Config(listen="127.0.0.1:0", llm_url=qa_llm.base_url, llm_model="qa", verifier=verifier,
                        cache_salt="tenant-medqa", **options)
        server, app = create_server(config)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        started.append((server, app))
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server, app in started:
        server.shutdown()
        server.server_close()
        app.close()


async def _ask(base_url, question):
    response = await asyncio.to_thread(httpx.post, f"{base_url}/v1/answer", json={"question": question}, timeout=30)
    return response.status_code, response.json()


async def test_a_supported_answer_is_released_and_a_contradicted_one_withheld(sidecar, medqa, qa_llm):
    _, socket = sidecar
    url = medqa(socket)
    status, body = await _ask(url, f"{SECRET} bleeds on heparin. Which drug reverses heparin?")
    assert status == 200 and body["status"] == "verified" and body["answer"] == "Protamine sulfate"
    assert body["verification"]["knowledge_index"] == 1.0
    chat = [b for path, b in qa_llm.requests if path == "/v1/chat/completions"]
    assert chat[-1]["cache_salt"] == "tenant-medqa"

    status, body = await _ask(url, "A wrong one: which drug reverses heparin?")
    assert status == 200 and body["status"] == "withheld" and body["answer"] is None
    (step,) = body["verification"]["contradicted_steps"]
    assert step["step"] == 1 and step["end"] > step["start"]


@pytest.mark.parametrize("fail_mode", ["closed", "open"])
async def test_verifier_down_follows_the_fail_mode_within_the_deadline(medqa, tmp_path, fail_mode):
    url = medqa(f"unix://{tmp_path / 'no-such.sock'}", fail_mode=fail_mode, verify_timeout_s=1.0)
    status, body = await _ask(url, "Which drug reverses heparin?")
    assert body["status"] == "unverified" and body["verification"]["reason"] == "UNAVAILABLE"
    assert body["verify_ms"] < 1000 + 500
    if fail_mode == "closed":
        assert status == 503 and body["answer"] is None and body["reasoning"] is None
    else:
        assert status == 200 and body["answer"] == "Protamine sulfate"


async def test_a_slow_verifier_is_cut_at_the_deadline(sidecar, medqa):
    judge, socket = sidecar
    judge.delay_s = 5.0
    url = medqa(socket, fail_mode="closed", verify_timeout_s=0.5)
    status, body = await _ask(url, "Which drug reverses heparin?")
    assert status == 503 and body["verification"]["reason"] == "DEADLINE_EXCEEDED"
    assert body["verify_ms"] < 500 + 500


async def test_no_question_text_in_any_log(sidecar, medqa, caplog):
    for name in ("", "medqa", "kgverify", "server"):
        caplog.set_level(logging.DEBUG, logger=name)
    _, socket = sidecar
    url = medqa(socket)
    assert (await _ask(url, f"{SECRET}: which drug reverses heparin?"))[0] == 200
    assert any(r.name == "medqa" for r in caplog.records)
    assert SECRET not in caplog.text and "Protamine" not in caplog.text


class _ErrorOnJudge(FakeJudge):
    """Judges like FakeJudge, but gives the ERROR verdict (a reachable judge with unusable output) to claims
    containing `error_on`."""

    def __init__(self, error_on: str):
        super().__init__()
        self.error_on = error_on

    async def judge(self, items, deadline):
        judged = await super().judge(items, deadline)
        return [Judgement(Verdict.ERROR, None, j.tier, error="unusable output") if self.error_on in item.claim else j
                for item, j in zip(items, judged)]


@pytest.mark.parametrize("fail_mode", ["closed", "open"])
async def test_a_partially_judged_chain_follows_the_fail_mode(cache_dir, demo_kb_path, monkeypatch, tmp_path, medqa,
                                                              fail_mode):
    """The real server marks the chain `partial`; the QA service treats the unjudged steps as a verifier failure."""
    monkeypatch.setitem(registry.JUDGES, "nli", lambda ctx: _ErrorOnJudge("Protamine"))
    sock = tmp_path / "kgverify.sock"
    server = await start_server(make_settings(cache_dir), [f"unix://{sock}"])
    try:
        await server.wait_ready(300)
        url = medqa(f"unix://{sock}", fail_mode=fail_mode)
        status, body = await _ask(url, "Which drug reverses heparin?")
    finally:
        await server.stop(0)
    assert body["status"] == "unverified" and body["verification"]["reason"] == "PARTIAL"
    assert body["verification"]["knowledge_index"] == 1.0  # the judged step, reported beside the reason
    if fail_mode == "closed":
        assert status == 503 and body["answer"] is None and body["reasoning"] is None
    else:
        assert status == 200 and body["answer"] == "Protamine sulfate"
