"""The medical QA example answers every request, whatever the client, the LLM or the verifier client does, and
drains on SIGTERM (it is PID 1 of its container)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest

from examples.medqa.app import Config, create_server
from tests.conftest import REPO
from tests.fakes.vllm_server import ChatReply, Faults, FakeVllmServer

GOOD = "Step 1: Heparin is an anticoagulant.\nStep 2: Protamine sulfate neutralizes heparin.\nAnswer: Protamine sulfate"


def _llm_answering(content_json: str) -> httpx.MockTransport:
    """An OpenAI-style chat endpoint whose message content is the given raw JSON value."""
    body = '{"choices": [{"index": 0, "message": {"role": "assistant", "content": %s}}]}' % content_json
    return httpx.MockTransport(lambda request: httpx.Response(200, content=body.encode(),
                                                              headers={"Content-Type": "application/json"}))


@pytest.fixture
def medqa(tmp_path):
    """Starts the QA service (verifier: a socket that does not exist) with a mock LLM; returns (host, port, app)."""
    started = []

    def start(content_json: str = json.dumps(GOOD), **options):
        config = Config(listen="127.0.0.1:0", verifier=f"unix://{tmp_path / 'no-such.sock'}", verify_timeout_s=1.0,
                        **options)
        server, app = create_server(config)
        app.llm.close()
        app.llm = httpx.Client(base_url="http://llm.invalid/v1", transport=_llm_answering(content_json))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        started.append((server, app))
        return "127.0.0.1", server.server_address[1], app

    yield start
    for server, app in started:
        server.shutdown()
        server.server_close()
        app.close()


def _raw(host: str, port: int, request: bytes, timeout_s: float = 5.0) -> bytes:
    """Sends raw bytes, keeps the connection open, returns what comes back before the server closes or pauses."""
    with socket.create_connection((host, port), timeout=timeout_s) as conn:
        conn.sendall(request)
        received = b""
        try:
            while chunk := conn.recv(65536):
                received += chunk
                if b"\r\n\r\n" in received:
                    head, _, rest = received.partition(b"\r\n\r\n")
                    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                                   if line.lower().startswith(b"content-length:")), 0)
                    if len(rest) >= length:
                        break
        except TimeoutError:
            pytest.fail(f"no answer within {timeout_s} s (got {received!r})")
        return received


@pytest.mark.parametrize("length", ["-1", "abc"])
def test_a_bad_content_length_is_answered_400_not_waited_on(medqa, length):
    host, port, _ = medqa()
    # The client keeps its connection open, as HTTP/1.1 clients do: read(-1) would wait for it to close.
    answer = _raw(host, port, f"POST /v1/answer HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n\r\n".encode())
    assert answer.startswith(b"HTTP/1.1 400 "), answer
    assert b"Content-Length" in answer


def test_a_refused_body_is_not_read_as_the_next_request(medqa):
    host, port, _ = medqa()
    # The body is never read, so the connection must close (its bytes would otherwise parse as a request).
    answer = _raw(host, port, b"POST /v1/answer HTTP/1.1\r\nHost: x\r\nContent-Length: 70000\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 413 ") and b"Connection: close" in answer


@pytest.mark.parametrize("content", ["null", "42", '[{"type": "text", "text": "Answer: x"}]'])
def test_an_llm_message_without_text_is_a_502_no_answer(medqa, content):
    host, port, _ = medqa(content)
    response = httpx.post(f"http://{host}:{port}/v1/answer", json={"question": "Which drug reverses heparin?"},
                          timeout=10)
    assert response.status_code == 502 and response.json()["status"] == "no_answer"


@pytest.mark.parametrize("fail_mode", ["closed", "open"])
def test_a_verifier_client_failure_outside_grpc_follows_the_fail_mode(medqa, fail_mode, caplog):
    # A lone surrogate (valid JSON, "\ud83d") cannot be encoded into the request: the client raises
    # UnicodeEncodeError, not VerifierError. That is still "no verdict".
    host, port, _ = medqa(json.dumps(GOOD.replace("anticoagulant", "anticoagulant \ud83d")), fail_mode=fail_mode)
    response = httpx.post(f"http://{host}:{port}/v1/answer", json={"question": "Which drug reverses heparin?"},
                          timeout=10)
    body = response.json()
    assert body["status"] == "unverified" and body["verification"]["reason"] == "INTERNAL"
    if fail_mode == "closed":
        assert response.status_code == 503 and body["answer"] is None and body["reasoning"] is None
    else:
        assert response.status_code == 200 and body["answer"] == "Protamine sulfate"
    assert "anticoagulant" not in caplog.text


@pytest.mark.parametrize("variable, value", [
    ("MEDQA_VERIFY_TIMEOUT_S", "0"), ("MEDQA_VERIFY_TIMEOUT_S", "-1"), ("MEDQA_VERIFY_TIMEOUT_S", "nan"),
    ("MEDQA_LLM_TIMEOUT_S", "0"), ("MEDQA_LLM_TIMEOUT_S", "inf"), ("MEDQA_MIN_KI", "nan"), ("MEDQA_MIN_KI", "50"),
    ("MEDQA_MAX_QUESTION_CHARS", "0"),
])
def test_settings_that_would_silently_defeat_the_policy_stop_the_start(monkeypatch, variable, value):
    # MEDQA_VERIFY_TIMEOUT_S=0 cuts every verification at once (all answers 503); MEDQA_MIN_KI=nan never flags.
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValueError, match=variable):
        Config.from_env()


def test_the_default_settings_load(monkeypatch):
    for name in list(os.environ):
        if name.startswith("MEDQA_"):
            monkeypatch.delenv(name)
    assert Config.from_env() == Config()


def test_a_question_the_verifier_would_refuse_is_a_400_before_the_llm_runs(medqa):
    from server.config import LimitsSettings

    host, port, app = medqa()
    assert app.config.max_question_chars == LimitsSettings().max_question_chars
    asked = []
    transport = _llm_answering(json.dumps(GOOD))
    app.llm = httpx.Client(base_url="http://llm.invalid/v1",
                           transport=httpx.MockTransport(lambda r: asked.append(r) or transport.handle_request(r)))
    # Before, it went to the LLM, then came back 503 "unverified" (INVALID_ARGUMENT): retrying never helps.
    response = httpx.post(f"http://{host}:{port}/v1/answer", json={"question": "x" * 20_001}, timeout=10)
    assert response.status_code == 400 and "20000 characters" in response.json()["error"] and not asked
    response = httpx.post(f"http://{host}:{port}/v1/answer", json={"question": "x" * 20_000}, timeout=10)
    assert response.status_code != 400 and asked


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_medqa(llm, tmp_path) -> tuple[subprocess.Popen, int]:
    """`python -m examples.medqa.app` as compose runs it, once it answers /healthz."""
    port = _free_port()
    env = {**os.environ, "MEDQA_LISTEN": f"127.0.0.1:{port}", "MEDQA_LLM_URL": llm.base_url,
           "MEDQA_VERIFIER": f"unix://{tmp_path / 'no-such.sock'}", "MEDQA_VERIFY_TIMEOUT_S": "1",
           "MEDQA_FAIL_MODE": "closed"}
    proc = subprocess.Popen([sys.executable, "-m", "examples.medqa.app"], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while True:
        try:
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
            return proc, port
        except httpx.TransportError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"medqa did not start: {proc.stderr.read()}")
            time.sleep(0.1)


def test_a_second_signal_exits_at_once(tmp_path):
    with FakeVllmServer(model="qa", chat=lambda body: ChatReply(GOOD), faults=Faults(delay_s=10)) as llm:
        proc, port = _start_medqa(llm, tmp_path)
        try:
            def ask():  # the forced exit drops this request: that is the point
                with contextlib.suppress(httpx.TransportError):
                    httpx.post(f"http://127.0.0.1:{port}/v1/answer", json={"question": "q?"}, timeout=30)

            asker = threading.Thread(target=ask, daemon=True)
            asker.start()
            deadline = time.monotonic() + 20
            while not any(path == "/v1/chat/completions" for path, _ in llm.requests):
                assert time.monotonic() < deadline
                time.sleep(0.05)
            proc.send_signal(signal.SIGTERM)
            time.sleep(0.5)
            assert proc.poll() is None  # draining the request in flight
            started = time.monotonic()
            proc.send_signal(signal.SIGINT)
            assert proc.wait(5) == 128 + signal.SIGINT and time.monotonic() - started < 5
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_sigterm_lets_the_request_in_flight_finish_then_exits_0(tmp_path):
    with FakeVllmServer(model="qa", chat=lambda body: ChatReply(GOOD), faults=Faults(delay_s=1.5)) as llm:
        proc, port = _start_medqa(llm, tmp_path)
        try:
            deadline = time.monotonic() + 60
            result = {}

            def ask():
                try:
                    result["response"] = httpx.post(f"http://127.0.0.1:{port}/v1/answer",
                                                    json={"question": "Which drug reverses heparin?"}, timeout=20)
                except httpx.TransportError as exc:
                    result["error"] = exc

            asker = threading.Thread(target=ask)
            asker.start()
            while not any(path == "/v1/chat/completions" for path, _ in llm.requests):
                assert time.monotonic() < deadline
                time.sleep(0.05)
            proc.send_signal(signal.SIGTERM)  # while the LLM is still answering
            asker.join(20)
            rc = proc.wait(20)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert "response" in result, f"the request in flight was cut: {result.get('error')!r}"
        response = result["response"]
        assert response.status_code == 503 and response.json()["verification"]["reason"] == "UNAVAILABLE"
        assert rc == 0, proc.stderr.read()
        with pytest.raises(httpx.TransportError):  # nothing accepted after the shutdown
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
