"""Example medical QA service: an LLM answers, the kgverify sidecar checks the reasoning over a unix socket."""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

from client import VerifierClient, VerifierError
from client.security import read_token_file

from .policy import Decision, decide_on_failure, decide_on_score

log = logging.getLogger("medqa")
MAX_BODY_BYTES = 64 * 1024
SYSTEM_PROMPT = ("You answer medical exam questions. Think step by step, one step per line as 'Step N: ...', "
                 "stating the medical facts you rely on. End with a line 'Answer: <the answer>'.")


@dataclass(frozen=True)
class Config:
    listen: str = "0.0.0.0:8080"
    llm_url: str = "http://vllm:8000/v1"
    llm_model: str = "qa"
    llm_api_key: str | None = None
    llm_timeout_s: float = 30.0
    cache_salt: str | None = None  # this tenant's salt for vLLM's prefix cache
    verifier: str = "unix:///run/kgverify/kgverify.sock"
    verifier_token_file: Path | None = None
    verify_timeout_s: float = 2.0
    fail_mode: str = "closed"  # closed: no unverified answer leaves the service; open: it leaves, marked
    min_ki: float = 0.5
    max_question_chars: int = 20_000  # the verifier's KGV_LIMITS__MAX_QUESTION_CHARS: longer is refused up front

    @property
    def drain_timeout_s(self) -> float:
        """The longest one answer may take (LLM, then verifier), plus a second: what a shutdown waits for."""
        return self.llm_timeout_s + self.verify_timeout_s + 1.0

    @classmethod
    def from_env(cls) -> "Config":
        env = os.environ
        token_file = env.get("MEDQA_VERIFIER_TOKEN_FILE")
        config = cls(
            listen=env.get("MEDQA_LISTEN", cls.listen), llm_url=env.get("MEDQA_LLM_URL", cls.llm_url),
            llm_model=env.get("MEDQA_LLM_MODEL", cls.llm_model), llm_api_key=env.get("MEDQA_LLM_API_KEY") or None,
            llm_timeout_s=float(env.get("MEDQA_LLM_TIMEOUT_S", cls.llm_timeout_s)),
            cache_salt=env.get("MEDQA_CACHE_SALT") or None, verifier=env.get("MEDQA_VERIFIER", cls.verifier),
            verifier_token_file=Path(token_file) if token_file else None,
            verify_timeout_s=float(env.get("MEDQA_VERIFY_TIMEOUT_S", cls.verify_timeout_s)),
            fail_mode=env.get("MEDQA_FAIL_MODE", cls.fail_mode), min_ki=float(env.get("MEDQA_MIN_KI", cls.min_ki)),
            max_question_chars=int(env.get("MEDQA_MAX_QUESTION_CHARS", cls.max_question_chars)))
        if config.fail_mode not in ("open", "closed"):
            raise ValueError(f"MEDQA_FAIL_MODE must be 'open' or 'closed', not {config.fail_mode!r}")
        for name, seconds in (("MEDQA_LLM_TIMEOUT_S", config.llm_timeout_s),
                              ("MEDQA_VERIFY_TIMEOUT_S", config.verify_timeout_s)):
            # 0 would cut every call at once (every answer a 503); NaN and inf never end
            if not 0 < seconds < math.inf:
                raise ValueError(f"{name} must be a positive number of seconds, not {seconds!r}")
        if not 0 <= config.min_ki <= 1:  # NaN compares false: nothing would ever be flagged
            raise ValueError(f"MEDQA_MIN_KI must be between 0 and 1, not {config.min_ki!r}")
        if config.max_question_chars < 1:
            raise ValueError(f"MEDQA_MAX_QUESTION_CHARS must be at least 1, not {config.max_question_chars!r}")
        return config


class LlmError(RuntimeError):
    """The QA model could not answer (unreachable, or output without an 'Answer:' line)."""


def split_answer(text: str) -> tuple[str, str]:
    """(reasoning, answer) from the model's output; the answer is what follows the last 'Answer:'."""
    head, sep, tail = text.rpartition("Answer:")
    if not sep or not tail.strip() or not head.strip():
        raise LlmError("the model's output has no reasoning followed by an 'Answer:' line")
    return head.strip(), tail.strip().splitlines()[0].strip()


class MedQa:
    """Answers a question with the LLM, verifies the reasoning, applies the policy."""

    def __init__(self, config: Config):
        self.config = config
        token = read_token_file(config.verifier_token_file) if config.verifier_token_file else ""
        metadata = (("authorization", f"Bearer {token}"),) if token else ()
        # One long-lived channel: a unix-socket call then costs well under a millisecond of transport.
        self.verifier = VerifierClient(config.verifier, timeout_s=config.verify_timeout_s, retries=1,
                                       metadata=metadata)
        headers = {"Authorization": f"Bearer {config.llm_api_key}"} if config.llm_api_key else {}
        self.llm = httpx.Client(base_url=config.llm_url, headers=headers, timeout=config.llm_timeout_s)
        self._inflight = 0
        self._idle = threading.Condition()

    def close(self) -> None:
        self.verifier.close()
        self.llm.close()

    @contextmanager
    def in_flight(self):
        """Counts a request from its arrival until its response is written (see drain)."""
        with self._idle:
            self._inflight += 1
        try:
            yield
        finally:
            with self._idle:
                self._inflight -= 1
                self._idle.notify_all()

    def drain(self, timeout_s: float) -> bool:
        """Waits until no request is in flight; False when timeout_s passed first."""
        with self._idle:
            return self._idle.wait_for(lambda: self._inflight == 0, timeout_s)

    def ask_llm(self, question: str) -> str:
        body = {"model": self.config.llm_model, "temperature": 0.0, "max_tokens": 1024,
                "messages": [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": question}]}
        if self.config.cache_salt:
            body["cache_salt"] = self.config.cache_salt
        try:
            response = self.llm.post("/chat/completions", json=body)
            response.raise_for_status()
            content = response.json()["choices"][0]["message"]["content"]
        except (httpx.HTTPError, KeyError, IndexError, TypeError, ValueError) as exc:
            raise LlmError(f"the QA model failed: {type(exc).__name__}") from None
        if not isinstance(content, str):  # e.g. null: a reasoning parser put everything in reasoning_content
            raise LlmError("the QA model's message has no text content")
        return content

    def verify(self, question: str, reasoning: str, answer: str) -> Decision:
        try:
            score = self.verifier.score_chain(question=question, reasoning=reasoning, answer=answer,
                                              metrics=("ki",), timeout_s=self.config.verify_timeout_s)
        except VerifierError as exc:
            return decide_on_failure(exc.code, self.config.fail_mode)
        except Exception as exc:  # failed in the client (text protobuf cannot encode, ...): no verdict either
            log.warning("verification failed in the client: %s", type(exc).__name__)  # never the text
            return decide_on_failure("INTERNAL", self.config.fail_mode)
        return decide_on_score(score, self.config.min_ki, self.config.fail_mode)

    def answer(self, question: str) -> tuple[int, dict]:
        started = time.perf_counter()
        reasoning, answer = split_answer(self.ask_llm(question))
        verify_started = time.perf_counter()
        decision = self.verify(question, reasoning, answer)
        verify_ms = (time.perf_counter() - verify_started) * 1e3
        # Counts and codes only: questions and answers may identify a patient.
        log.info("answer %s (%s) in %.0f ms, verifier %.0f ms", decision.status,
                 decision.verification.get("reason", "checked"), (time.perf_counter() - started) * 1e3, verify_ms)
        body = {"status": decision.status, "answer": answer if decision.release else None,
                "reasoning": reasoning if decision.release else None, "verification": decision.verification,
                "fail_mode": self.config.fail_mode, "verify_ms": round(verify_ms, 1)}
        return decision.http_status, body


def make_handler(app: MedQa):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # the default access log would be fine, but keep one log format
            pass

        def _send(self, status: int, payload: dict) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if self.path == "/healthz":
                return self._send(200, {"status": "ok"})
            self._send(404, {"error": "not found"})

        def _refuse(self, status: int, error: str) -> None:
            """An answer sent without reading the body: the connection closes, or its bytes would be read as the
            next request."""
            self.close_connection = True
            self._send(status, {"error": error})

        def do_POST(self):
            with app.in_flight():
                self._post()

        def _post(self):
            if self.path != "/v1/answer":
                return self._refuse(404, "not found")
            if self.headers.get("Transfer-Encoding"):
                return self._refuse(411, "send the body with a Content-Length")
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                length = -1
            if length < 0:  # rfile.read(-1) would wait for the client to close the connection
                return self._refuse(400, "Content-Length must be a non-negative integer")
            if length > MAX_BODY_BYTES:
                return self._refuse(413, f"body over {MAX_BODY_BYTES} bytes")
            try:
                question = json.loads(self.rfile.read(length) or b"{}").get("question")
            except (ValueError, AttributeError):
                question = None
            if not isinstance(question, str) or not question.strip():
                return self._send(400, {"error": "send {\"question\": \"...\"}"})
            if len(question) > app.config.max_question_chars:  # the verifier would refuse it after the LLM ran
                return self._send(400, {"error": f"question over {app.config.max_question_chars} characters"})
            try:
                status, payload = app.answer(question)
            except LlmError as exc:
                log.warning("no answer: %s", exc)
                status, payload = 502, {"status": "no_answer", "error": str(exc)}
            except Exception as exc:  # answered, never a dropped connection; nothing is released
                log.error("request failed: %s", type(exc).__name__)  # the type only: messages may quote text
                status, payload = 500, {"status": "error", "error": "internal error"}
            self._send(status, payload)

    return Handler


def create_server(config: Config) -> tuple[ThreadingHTTPServer, MedQa]:
    host, port = config.listen.rsplit(":", 1)
    app = MedQa(config)
    server = ThreadingHTTPServer((host, int(port)), make_handler(app))
    server.daemon_threads = True
    return server, app


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    server, app = create_server(Config.from_env())

    stopping = []

    def stop(signum, frame):  # shutdown() waits for serve_forever, which runs in this (the main) thread
        if stopping:  # a second signal: no more waiting
            os._exit(128 + signum)
        stopping.append(signum)
        log.info("%s: no new requests; draining (a second signal exits at once)", signal.Signals(signum).name)
        threading.Thread(target=server.shutdown, daemon=True).start()

    # A handler for SIGTERM is required, not only tidy: as PID 1 of its container, Python would ignore the
    # SIGTERM of `docker stop` (pid_namespaces(7)) and be killed after the grace period, mid-request.
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("medqa on %s:%d, verifier %s, fail-%s", *server.server_address[:2], app.config.verifier,
             app.config.fail_mode)
    try:
        server.serve_forever()
    finally:
        server.server_close()  # closes the listening socket: nothing new is accepted
        if not app.drain(app.config.drain_timeout_s):
            log.warning("requests still in flight after %.0f s; exiting", app.config.drain_timeout_s)
        app.close()


if __name__ == "__main__":
    main()
