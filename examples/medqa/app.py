"""Example medical QA service: an LLM answers, the kgverify sidecar checks the reasoning over a unix socket."""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

from client import VerifierClient, VerifierError

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
            fail_mode=env.get("MEDQA_FAIL_MODE", cls.fail_mode), min_ki=float(env.get("MEDQA_MIN_KI", cls.min_ki)))
        if config.fail_mode not in ("open", "closed"):
            raise ValueError(f"MEDQA_FAIL_MODE must be 'open' or 'closed', not {config.fail_mode!r}")
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
        token = config.verifier_token_file.read_text().strip() if config.verifier_token_file else ""
        metadata = (("authorization", f"Bearer {token}"),) if token else ()
        # One long-lived channel: a unix-socket call then costs well under a millisecond of transport.
        self.verifier = VerifierClient(config.verifier, timeout_s=config.verify_timeout_s, retries=1,
                                       metadata=metadata)
        headers = {"Authorization": f"Bearer {config.llm_api_key}"} if config.llm_api_key else {}
        self.llm = httpx.Client(base_url=config.llm_url, headers=headers, timeout=config.llm_timeout_s)

    def close(self) -> None:
        self.verifier.close()
        self.llm.close()

    def ask_llm(self, question: str) -> str:
        body = {"model": self.config.llm_model, "temperature": 0.0, "max_tokens": 1024,
                "messages": [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": question}]}
        if self.config.cache_salt:
            body["cache_salt"] = self.config.cache_salt
        try:
            response = self.llm.post("/chat/completions", json=body)
            response.raise_for_status()
            return response.json()["choices"][0]["message"]["content"]
        except (httpx.HTTPError, KeyError, IndexError, ValueError) as exc:
            raise LlmError(f"the QA model failed: {type(exc).__name__}") from None

    def verify(self, question: str, reasoning: str, answer: str) -> Decision:
        try:
            score = self.verifier.score_chain(question=question, reasoning=reasoning, answer=answer,
                                              metrics=("ki",), timeout_s=self.config.verify_timeout_s)
        except VerifierError as exc:
            return decide_on_failure(exc.code, self.config.fail_mode)
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
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if self.path == "/healthz":
                return self._send(200, {"status": "ok"})
            self._send(404, {"error": "not found"})

        def do_POST(self):
            if self.path != "/v1/answer":
                return self._send(404, {"error": "not found"})
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY_BYTES:
                return self._send(413, {"error": f"body over {MAX_BODY_BYTES} bytes"})
            try:
                question = json.loads(self.rfile.read(length) or b"{}").get("question")
            except (ValueError, AttributeError):
                question = None
            if not isinstance(question, str) or not question.strip():
                return self._send(400, {"error": "send {\"question\": \"...\"}"})
            try:
                self._send(*app.answer(question))
            except LlmError as exc:
                log.warning("no answer: %s", exc)
                self._send(502, {"status": "no_answer", "error": str(exc)})

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
    log.info("medqa on %s:%d, verifier %s, fail-%s", *server.server_address[:2], app.config.verifier,
             app.config.fail_mode)
    try:
        server.serve_forever()
    finally:
        app.close()


if __name__ == "__main__":
    main()
