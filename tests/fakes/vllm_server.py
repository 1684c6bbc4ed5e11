"""The one fake vLLM server: a real HTTP server on 127.0.0.1 answering in vLLM's documented shapes.

Shapes follow vLLM's OpenAI-compatible server as of v0.12 (see
../shared/docs/FIELD_NOTES.md section 1): /health, /v1/models, /tokenize,
/v1/chat/completions (structured outputs via `structured_outputs` or
`response_format`; the removed `guided_*` fields are ignored, as vLLM >= 0.12
does) and /v1/completions with token-id prompts and `prompt_logprobs`
(first entry null, keys are token ids as strings, -inf clamped to -9999.0),
`logprobs` at the generated position (with `logprob_token_ids` and
`return_tokens_as_token_ids`), and optionally vLLM V1's prefix cache
(block-granular hits, no cache reads for prompt_logprobs requests,
`usage.prompt_tokens_details.cached_tokens` of the last prompt).

Behaviour is injected per test: `chat` decides the reply to a chat request,
`scorer` gives prompt log-probabilities, `tokenizer` encodes text. Faults
(delay, HTTP errors, malformed bodies, a dead engine) are switched on the
instance at any time.
"""

from __future__ import annotations

import json
import math
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

VLLM_VERSION = "0.12.0"
LOGPROB_FLOOR = -9999.0


@dataclass
class ChatReply:
    """What the fake model generates: the text, and the logprobs of the first generated token's candidates."""

    text: str
    first_token_logprobs: dict[str, float] | None = None


def label_choice_reply(probabilities: dict[str, float]) -> ChatReply:
    """A reply that picks the most likely label and reports log-probabilities for each label token."""
    best = max(probabilities, key=probabilities.get)
    return ChatReply(best, {k: math.log(v) if v > 0 else float("-inf") for k, v in probabilities.items()})


def _clamp(value: float) -> float:
    return max(value, LOGPROB_FLOOR) if not math.isnan(value) else LOGPROB_FLOOR


@dataclass
class Faults:
    delay_s: float = 0.0  # sleep before answering
    http_status: int | None = None  # answer every generation request with this status
    error_body: Any = None  # with http_status: this JSON body (bytes: sent raw) instead of vLLM's error shape
    retry_after: str | None = None  # with http_status: a Retry-After header (as a gateway's 429 or 503 carries)
    fail_times: int | None = None  # with http_status: only the first this many generation requests fail
    malformed_body: bool = False  # 200 with a body that is not JSON
    dead_engine: bool = False  # /health answers 503; generation answers HTTP 500 with an empty body (vLLM 0.12)
    unconstrained: bool = False  # structured outputs not applied (as vLLM >= 0.12 treats the removed guided_*)
    # A chat generation that ends with this finish_reason before its first token: "abort" (vLLM's
    # POST /pause?mode=abort, a shutdown), "length" (a V0 scheduler ignoring a prompt over its token limit).
    # HTTP 200, content "", logprobs.content [] when asked, usage.completion_tokens 0.
    finish_before_first_token: str | None = None
    models_status: int | None = None  # answer GET /v1/models with this status (a gateway throttling it: 429)


@dataclass
class FakeVllmServer:
    model: str = "judge"
    max_model_len: int = 2048
    root: str | None = None  # /v1/models' `root` (the weights' path; vLLM lists the model path); None: the name
    chat: Callable[[dict], ChatReply] | None = None
    scorer: Callable[[list[int]], list[float]] | None = None  # logprob of token t | tokens < t, for t >= 1
    tokenizer: Callable[[str, bool], list[int]] | None = None
    decode: Callable[[int], str] = str
    vllm_version: str = VLLM_VERSION
    faults: Faults = field(default_factory=Faults)
    requests: list[tuple[str, dict]] = field(default_factory=list)
    generate: Callable[[list[int]], int] | None = None  # the generated token; default: repeat the last prompt token
    prefix_cache_block: int = 0  # >0: model vLLM V1's prefix cache with this block size (vLLM's default is 16)
    prompt_tokens_details: bool = False  # report usage.prompt_tokens_details (--enable-prompt-tokens-details)
    api_key: str | None = None  # like --api-key: /v1/* needs "Authorization: Bearer <key>" (401 otherwise)

    def __post_init__(self) -> None:
        self._blocks: set[int] = set()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle -------------------------------------------------------------------------
    def start(self) -> "FakeVllmServer":
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep test output quiet
                pass

            def do_GET(self):
                fake._dispatch(self, "GET", None)

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    fake._send(self, 400, _error("request body is not valid JSON", "BadRequestError"))
                    return
                fake._dispatch(self, "POST", body)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="fake-vllm", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> "FakeVllmServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._httpd is not None, "server not started"
        return self._httpd.server_address[1]

    @property
    def root_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.root_url}/v1"

    def paths(self) -> list[str]:
        return [p for p, _ in self.requests]

    # ---- HTTP plumbing ---------------------------------------------------------------------
    def _send(self, handler, status: int, payload: Any, raw: bytes | None = None,
              headers: dict[str, str] | None = None) -> None:
        data = raw if raw is not None else json.dumps(payload).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(data)))
        try:
            handler.end_headers()
            handler.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (its deadline): as vLLM, carry on
            handler.close_connection = True

    def _dispatch(self, handler, method: str, body: dict | None) -> None:
        path = handler.path.split("?", 1)[0]
        self.requests.append((path, body or {}))
        # vLLM's AuthenticationMiddleware guards only /v1 (and /v2, /inference...): /health and /tokenize stay open.
        if self.api_key is not None and path.startswith("/v1") \
                and handler.headers.get("Authorization") != f"Bearer {self.api_key}":
            self._send(handler, 401, {"error": "Unauthorized"})
            return
        if path == "/health":
            self._send(handler, 503 if self.faults.dead_engine else 200, None, raw=b"")
            return
        if method == "GET" and path == "/v1/models":
            if self.faults.models_status is not None:
                self._send(handler, self.faults.models_status,
                           _error("injected failure", "RateLimitError", code=self.faults.models_status))
                return
            self._send(handler, 200, self._models())
            return
        if method == "POST" and path == "/tokenize":
            self._send(handler, *self._tokenize(body))
            return
        if method == "POST" and path in ("/v1/chat/completions", "/v1/completions"):
            if self.faults.delay_s:
                time.sleep(self.faults.delay_s)
            if self.faults.dead_engine and self.faults.http_status is None:
                # vLLM 0.12's launcher runtime_exception_handler: once EngineDeadError is raised it answers the
                # request with an empty HTTP 500 (and /health with 503) before the server shuts down.
                self._send(handler, 500, None, raw=b"")
                return
            failing = self.faults.fail_times is None or self.faults.fail_times > 0
            if self.faults.http_status is not None and failing:
                if self.faults.fail_times is not None:
                    self.faults.fail_times -= 1
                body = self.faults.error_body
                if body is None:
                    body = _error("injected failure", "InternalServerError", code=self.faults.http_status)
                headers = {"Retry-After": self.faults.retry_after} if self.faults.retry_after is not None else None
                self._send(handler, self.faults.http_status, body, raw=body if isinstance(body, bytes) else None,
                           headers=headers)
                return
            if self.faults.malformed_body:
                self._send(handler, 200, None, raw=b'{"id": "cmpl-1", "choices": [')
                return
            route = self._chat if path.endswith("chat/completions") else self._completions
            self._send(handler, *route(body))
            return
        self._send(handler, 404, {"detail": "Not Found"})

    # ---- endpoints -------------------------------------------------------------------------
    def _models(self) -> dict:
        return {"object": "list", "data": [{
            "id": self.model, "object": "model", "created": int(time.time()), "owned_by": "vllm",
            "root": self.root or self.model, "parent": None, "max_model_len": self.max_model_len, "permission": [],
        }]}

    def _tokenize(self, body: dict) -> tuple[int, dict]:
        if self.tokenizer is None:
            return 500, _error("fake server has no tokenizer", "InternalServerError", code=500)
        tokens = self.tokenizer(body.get("prompt", ""), bool(body.get("add_special_tokens", True)))
        return 200, {"count": len(tokens), "max_model_len": self.max_model_len, "tokens": tokens}

    def _check_model(self, body: dict) -> tuple[int, dict] | None:
        if body.get("model") not in (None, self.model):
            return 404, _error(f"The model `{body.get('model')}` does not exist.", "NotFoundError", code=404)
        return None

    def _chat(self, body: dict) -> tuple[int, dict]:
        problem = self._check_model(body)
        if problem:
            return problem
        if self.chat is None:
            return 500, _error("fake server has no chat behaviour", "InternalServerError", code=500)
        if self.faults.finish_before_first_token is not None:
            return 200, self._chat_response({
                "index": 0, "message": {"role": "assistant", "content": "", "reasoning_content": None, "tool_calls": []},
                "logprobs": {"content": []} if body.get("logprobs") else None,
                "finish_reason": self.faults.finish_before_first_token, "stop_reason": None}, completion_tokens=0)
        reply = self.chat(body)
        text = reply.text
        constraint = None if self.faults.unconstrained else (body.get("structured_outputs") or {}).get("choice")
        if constraint is not None and text not in constraint:
            # Constrained decoding can only emit an allowed choice: take the likeliest allowed one.
            scored = reply.first_token_logprobs or {}
            text = max(constraint, key=lambda c: scored.get(c, LOGPROB_FLOOR))
        choice: dict[str, Any] = {
            "index": 0,
            "message": {"role": "assistant", "content": text, "reasoning_content": None, "tool_calls": []},
            "logprobs": None, "finish_reason": "stop", "stop_reason": None,
        }
        if body.get("logprobs"):
            top_n = int(body.get("top_logprobs") or 0)
            candidates = dict(reply.first_token_logprobs or {text: 0.0})
            first_token = text if constraint is not None or text in candidates else text[:1]
            candidates.setdefault(first_token, LOGPROB_FLOOR)
            ranked = sorted(candidates.items(), key=lambda kv: -kv[1])[:top_n]
            # vLLM always returns exactly top_logprobs entries (the rest of the vocabulary): pad with other tokens.
            ranked += [(f"<tok{k}>", LOGPROB_FLOOR) for k in range(top_n - len(ranked))]
            choice["logprobs"] = {"content": [{
                "token": first_token, "logprob": _clamp(candidates[first_token]),
                "bytes": list(first_token.encode()),
                "top_logprobs": [{"token": t, "logprob": _clamp(lp), "bytes": list(t.encode())} for t, lp in ranked],
            }]}
        return 200, self._chat_response(choice)

    def _chat_response(self, choice: dict[str, Any], completion_tokens: int = 1) -> dict:
        return {
            "id": f"chatcmpl-{len(self.requests)}", "object": "chat.completion", "created": int(time.time()),
            "model": self.model, "choices": [choice],
            "usage": {"prompt_tokens": 0, "completion_tokens": completion_tokens, "total_tokens": completion_tokens,
                      "prompt_tokens_details": None},
            "prompt_logprobs": None, "kv_transfer_params": None,
        }

    def _completions(self, body: dict) -> tuple[int, dict]:
        problem = self._check_model(body)
        if problem:
            return problem
        if body.get("stream") and body.get("prompt_logprobs") is not None:
            return 400, _error("`prompt_logprobs` are not available when `stream=True`.", "BadRequestError",
                               param="prompt_logprobs")
        prompts = body.get("prompt")
        if isinstance(prompts, str) or (isinstance(prompts, list) and prompts and isinstance(prompts[0], int)):
            prompts = [prompts]
        if not isinstance(prompts, list) or not prompts:
            return 400, _error("prompt must be a string, a list of token ids, or a list of those", "BadRequestError",
                               param="prompt")
        max_tokens = body.get("max_tokens")
        max_tokens = 16 if max_tokens is None else int(max_tokens)
        choices, prompt_tokens = [], 0
        for index, prompt in enumerate(prompts):
            ids = self.tokenizer(prompt, bool(body.get("add_special_tokens", True))) if isinstance(prompt, str) \
                else list(prompt)
            if len(ids) + max(max_tokens, 1) > self.max_model_len:
                return 400, _error(
                    f"This model's maximum context length is {self.max_model_len} tokens. However, you requested "
                    f"{len(ids) + max_tokens} tokens ({len(ids)} in the messages, {max_tokens} in the completion). "
                    "Please reduce the length of the messages or completion.", "BadRequestError", param="prompt")
            prompt_tokens += len(ids)
            choice: dict[str, Any] = {"index": index, "text": " ", "logprobs": None, "finish_reason": "length",
                                      "stop_reason": None, "prompt_logprobs": None, "prompt_token_ids": None,
                                      "token_ids": None}
            k = body.get("prompt_logprobs")
            if k is not None:
                if self.scorer is None:
                    return 500, _error("fake server has no scorer", "InternalServerError", code=500)
                values = self.scorer(ids)
                entries: list[Any] = [None]
                for position, token in enumerate(ids[1:], start=1):
                    entries.append({str(token): {"logprob": _clamp(values[position - 1]), "rank": 1,
                                                 "decoded_token": self.decode(token)}})
                choice["prompt_logprobs"] = entries
            if body.get("return_token_ids"):
                choice["prompt_token_ids"] = ids
                choice["token_ids"] = [0]
            if body.get("logprob_token_ids") and body.get("logprobs") is None:
                return 400, _error("`logprob_token_ids` requires `logprobs` to be set.", "BadRequestError",
                                   param="logprob_token_ids")
            if body.get("logprobs") is not None:
                if self.scorer is None:
                    return 500, _error("fake server has no scorer", "InternalServerError", code=500)
                choice["text"], choice["logprobs"] = self._generated_logprobs(ids, body)
            # Requests that ask for prompt logprobs skip reading the prefix cache (vLLM V1), but still fill it.
            cached = self._prefix_cache(ids, read=body.get("prompt_logprobs") is None)
            choices.append(choice)
        details = {"cached_tokens": cached} if self.prompt_tokens_details else None  # vLLM reports the last prompt's
        return 200, {
            "id": f"cmpl-{len(self.requests)}", "object": "text_completion", "created": int(time.time()),
            "model": self.model, "choices": choices,
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": len(choices),
                      "total_tokens": prompt_tokens + len(choices), "prompt_tokens_details": details},
        }

    def _generated_logprobs(self, ids: list[int], body: dict) -> tuple[str, dict]:
        """One generated token's logprobs block; with `logprob_token_ids`, those ids join the sampled token."""
        sampled = self.generate(ids) if self.generate else ids[-1]
        as_ids = bool(body.get("return_tokens_as_token_ids"))
        name = (lambda t: f"token_id:{t}") if as_ids else self.decode
        wanted = [sampled, *(body.get("logprob_token_ids") or [])]
        top = {name(t): _clamp(self.scorer(ids + [t])[-1]) for t in wanted}
        return self.decode(sampled), {"text_offset": [0], "token_logprobs": [top[name(sampled)]],
                                      "tokens": [name(sampled)], "top_logprobs": [top]}

    def _prefix_cache(self, ids: list[int], read: bool) -> int:
        """Cached prompt tokens: leading full blocks seen before, never the last token (vLLM V1's rule)."""
        size = self.prefix_cache_block
        if size <= 0:
            return 0
        hits, chain, hashes = 0, 0, []
        for end in range(size, len(ids) + 1, size):
            chain = hash((chain, tuple(ids[end - size:end])))
            hashes.append((end, chain))
        if read:
            for end, h in hashes:
                if end >= len(ids) or h not in self._blocks:
                    break
                hits = end
        self._blocks.update(h for _, h in hashes)
        return hits


def _error(message: str, kind: str, param: str | None = None, code: int = 400) -> dict:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}
