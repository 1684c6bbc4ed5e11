"""The one client of vLLM's OpenAI-compatible server, shared by every feature that talks to vLLM.

Bounded concurrency, timeouts inside the RPC deadline, retries on transient
failures only, and vLLM failures mapped to domain errors:
unreachable (refused, or no connection within the timeout), rate-limiting (HTTP 429 after retries, Retry-After
honoured), or not serving the requested model or route (HTTP 404) -> BackendUnavailableError,
too slow -> BackendTimeoutError, answered but unusable -> BackendResponseError.
"""

from __future__ import annotations

import asyncio
import datetime
import email.utils
import json
import logging
from typing import Any

import httpx
from pydantic import SecretStr

from ..pipeline.deadline import NO_DEADLINE, Deadline
from ..pipeline.errors import BackendRateLimitedError, BackendResponseError, BackendTimeoutError, BackendUnavailableError

log = logging.getLogger(__name__)
TRANSIENT_STATUS = {502, 503, 504, 408}  # 408: a gateway or proxy in front of vLLM timed out the request: send it again
RATE_LIMITED = 429  # from vLLM behind a gateway or rate limiter (nginx, an API gateway, LiteLLM): transient too
MAX_RETRY_AFTER_S = 30.0  # a longer Retry-After is not waited for: the call gives up at once
VLLM_LOGPROB_FLOOR = -9999.0  # vLLM clamps -inf to this value


class VllmClient:
    def __init__(
        self,
        base_url: str,
        api_key: str | SecretStr | None = None,
        timeout_s: float = 30.0,
        max_concurrency: int = 16,
        max_retries: int = 2,
        backoff_s: float = 0.2,
        transport: httpx.AsyncBaseTransport | None = None,
        cache_salt: str | None = None,
    ):
        self.base_url = base_url.rstrip("/")
        # vLLM's prefix cache is shared by every client of the server: a salt keeps this client's entries (and
        # their timing) apart from other tenants'. Added to every generation request that has none.
        self.cache_salt = cache_salt
        self.root_url = self.base_url.removesuffix("/v1")
        self.timeout_s = timeout_s
        self.max_concurrency = max_concurrency
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        if isinstance(api_key, SecretStr):  # as the settings hold it (masked in `kgverify config` and logs)
            api_key = api_key.get_secret_value()
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.AsyncClient(
            headers=headers,
            timeout=timeout_s,
            limits=httpx.Limits(max_connections=max_concurrency, max_keepalive_connections=max_concurrency),
            transport=transport,
        )
        # Health probes get their own small pool: with every generation connection busy (vLLM loaded, not
        # down) a probe sharing that pool would wait for a connection and report vLLM unreachable.
        self._probe_http = httpx.AsyncClient(
            headers=headers,
            timeout=timeout_s,
            limits=httpx.Limits(max_connections=2, max_keepalive_connections=2),
            transport=transport,
        )
        self._semaphore: asyncio.Semaphore | None = None
        self._model_problems: dict[str, str | None] = {}  # model -> why it is not served (last logged)
        self.calls = 0

    def _slot(self) -> asyncio.Semaphore:
        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(self.max_concurrency)
        return self._semaphore

    async def chat_completions(self, body: dict[str, Any], deadline: Deadline = NO_DEADLINE) -> dict[str, Any]:
        return await self._post(f"{self.base_url}/chat/completions", self._salted(body), deadline)

    def _salted(self, body: dict[str, Any]) -> dict[str, Any]:
        return {**body, "cache_salt": self.cache_salt} if self.cache_salt and "cache_salt" not in body else body

    async def completions(self, body: dict[str, Any], deadline: Deadline = NO_DEADLINE) -> dict[str, Any]:
        return await self._post(f"{self.base_url}/completions", self._salted(body), deadline)

    async def tokenize(self, prompt: str, add_special_tokens: bool, model: str | None = None,
                       deadline: Deadline = NO_DEADLINE) -> list[int]:
        body: dict[str, Any] = {"prompt": prompt, "add_special_tokens": add_special_tokens}
        if model:
            body["model"] = model
        data = await self._post(f"{self.root_url}/tokenize", body, deadline)
        tokens = data.get("tokens")
        if not isinstance(tokens, list) or not all(isinstance(t, int) for t in tokens):
            raise BackendResponseError("vLLM /tokenize returned no token list")
        return tokens

    async def models(self, deadline: Deadline = NO_DEADLINE) -> list[dict[str, Any]]:
        data = await self._request("GET", f"{self.base_url}/models", None, deadline)
        models = data.get("data")
        if not isinstance(models, list):
            raise BackendResponseError("vLLM /v1/models returned no model list")
        return models

    async def health(self, timeout_s: float = 2.0) -> bool:
        """True when vLLM answers /health with 200 (it is up and its engine is not dead)."""
        return await self._health_problem(timeout_s) is None

    async def _health_problem(self, timeout_s: float) -> str | None:
        """Why vLLM's /health is not 200 (unreachable, starting, engine dead), or None."""
        try:
            response = await self._probe_http.get(f"{self.root_url}/health", timeout=timeout_s)
        except httpx.HTTPError as exc:
            return f"vLLM at {self.root_url} is unreachable ({type(exc).__name__}: {str(exc) or 'no detail'})"
        if response.status_code != 200:
            return (f"vLLM at {self.root_url} answers /health with HTTP {response.status_code} "
                    "(still starting, or its engine died)")
        return None

    async def serves(self, model: str, timeout_s: float = 2.0) -> bool:
        """True when vLLM is up (/health) and serves `model` under that name (/v1/models).

        A server that is up with another model (a wrong KGV_*__MODEL, or vLLM's --served-model-name) would
        answer every request with HTTP 404; reporting it here keeps the service NOT_SERVING instead of
        SERVING requests that can only fail. The reason (unreachable, not healthy, model not served) is logged
        when it first appears and when it changes, and the recovery once."""
        problem = await self._health_problem(timeout_s)
        if problem is None:
            response, cards = await self._probe_models(timeout_s)
            served = [card.get("id") for card in cards] \
                if cards is not None and all(isinstance(card, dict) for card in cards) else None
            if response is not None and response.status_code in REFUSED_KEY:
                problem = _refused_key(self.base_url, response.status_code, on="/v1/models")
            elif served is None:
                problem = f"vLLM at {self.base_url} answers /health but not /v1/models"
            elif model not in served:
                problem = (f"vLLM at {self.base_url} serves {served}, not {model!r}: set the model setting to one "
                           "of them, or start vLLM with --served-model-name " + model)
        previous = self._model_problems.get(model)
        if problem != previous:
            self._model_problems[model] = problem
            if problem:
                log.error("%s", problem)
            else:
                log.info("vLLM at %s serves %r again", self.base_url, model)
        return problem is None

    async def _probe_models(self, timeout_s: float) -> tuple[httpx.Response | None, list | None]:
        """One probe-pool GET of /v1/models: (its response, or None when none came; its `data` list when the
        answer is 200 with one, else None)."""
        try:
            response = await self._probe_http.get(f"{self.base_url}/models", timeout=timeout_s)
            cards = response.json().get("data") if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError, AttributeError):
            return None, None
        return response, cards if isinstance(cards, list) else None

    async def served_root(self, model: str, timeout_s: float = 2.0) -> tuple[bool | None, str | None]:
        """(True, the `root` /v1/models lists for `model`: the weights vLLM loaded, None when the entry has none), or
        (False, None) when that cannot be read: unreachable, an error status, a body that is not a model list, or
        `model` not listed; (None, None) when a rate limiter refused the read (HTTP 429: the server is up, and says
        nothing about what it serves). One probe-pool request, no retries (the LLM judge's background read of the
        model it keys cached verdicts by)."""
        response, cards = await self._probe_models(timeout_s)
        if response is not None and response.status_code == RATE_LIMITED:
            return None, None
        mine = [card for card in cards or () if isinstance(card, dict) and card.get("id") == model]
        if not mine:
            return False, None
        root = mine[0].get("root")
        return True, root if isinstance(root, str) and root else None

    async def aclose(self) -> None:
        await self._http.aclose()
        await self._probe_http.aclose()

    async def _post(self, url: str, body: dict[str, Any], deadline: Deadline) -> dict[str, Any]:
        return await self._request("POST", url, body, deadline)

    async def _acquire_slot(self, route: str, deadline: Deadline) -> asyncio.Semaphore:
        """A concurrency slot, waited for no longer than the deadline allows."""
        slot = self._slot()
        remaining = deadline.remaining()
        if remaining is None:
            await slot.acquire()
            return slot
        if remaining <= 0:
            raise BackendTimeoutError(f"no time left in the deadline for vLLM {route}")
        try:
            # asyncio.timeout, not wait_for: on 3.11 wait_for returns the slot when a cancel lands as it is handed
            # over, and the cancelled call would go on to vLLM
            async with asyncio.timeout(remaining):
                await slot.acquire()
        except TimeoutError as exc:
            raise BackendTimeoutError(
                f"no free vLLM slot ({self.max_concurrency} requests in flight) within the deadline") from exc
        return slot

    async def _request(self, method: str, url: str, body: dict[str, Any] | None, deadline: Deadline) -> dict:
        # Clients see the route and the status, never this server's vLLM address (the health probes log it
        # with the cause when vLLM becomes unusable) nor vLLM's own server-error text (logged below).
        return await self._attempts(method, url, body, deadline)

    async def _attempts(self, method: str, url: str, body: dict[str, Any] | None, deadline: Deadline) -> dict:
        route = url.removeprefix(self.root_url) or "/"
        attempt = 0
        retried_500 = False
        while True:
            slot = await self._acquire_slot(route, deadline)
            failure: httpx.TransportError | None = None
            try:
                # The timeout is computed once the slot is ours: the wait for it has used part of the deadline.
                timeout = deadline.timeout(self.timeout_s)
                if timeout <= 0:
                    raise BackendTimeoutError(f"no time left in the deadline for vLLM {route}")
                self.calls += 1
                # httpx's timeout bounds each connect, write and read, not the call: a slow connect followed by a
                # slow reply, or a reply that keeps trickling in, would run past the deadline. The deadline bounds
                # the whole call (a configured timeout shorter than it keeps httpx's meaning, connect retries too).
                try:
                    async with asyncio.timeout(deadline.remaining()):
                        response = await self._http.request(method, url, json=body, timeout=timeout)
                except TimeoutError as exc:
                    raise BackendTimeoutError(f"vLLM did not answer {route} within {timeout:.1f} s") from exc
            except httpx.TransportError as exc:
                failure = exc
            finally:
                slot.release()  # never held through a retry's backoff
            if isinstance(failure, httpx.TimeoutException):
                if isinstance(failure, httpx.ConnectTimeout):
                    if attempt < self.max_retries:
                        attempt += 1
                        await asyncio.sleep(self.backoff_s * attempt)
                        continue
                    if timeout >= self.timeout_s:
                        # No connection within the whole configured timeout, the deadline not yet spent: nothing
                        # accepts connections at that address (a host that is down, a firewall dropping packets).
                        # Unreachable like a refused connection, not a slow answer (which DEADLINE_EXCEEDED is).
                        raise BackendUnavailableError(
                            f"the vLLM backend is unreachable (no connection within {timeout:g} s)") from failure
                raise BackendTimeoutError(f"vLLM did not answer {route} within {timeout:.1f} s") from failure
            if isinstance(failure, (httpx.UnsupportedProtocol, httpx.LocalProtocolError)):
                # A misconfigured URL or a request httpx cannot send: retrying cannot help.
                raise BackendUnavailableError(
                    f"vLLM cannot be called ({type(failure).__name__}): check the base_url setting") from failure
            if failure is not None:
                if attempt < self.max_retries and deadline.timeout(self.timeout_s) > self.backoff_s * (attempt + 1):
                    attempt += 1
                    await asyncio.sleep(self.backoff_s * attempt)
                    continue
                raise BackendUnavailableError(f"the vLLM backend is unreachable ({type(failure).__name__})") from failure
            if response.status_code in TRANSIENT_STATUS or response.status_code == RATE_LIMITED:
                # The server's Retry-After, where it sends one, replaces the backoff; a wait the deadline (or
                # MAX_RETRY_AFTER_S) does not allow is not started: the call gives up now instead of at its deadline.
                asked = _retry_after_s(response.headers.get("retry-after"))
                wait = self.backoff_s * (attempt + 1) if asked is None else asked
                if attempt < self.max_retries and wait <= MAX_RETRY_AFTER_S and deadline.timeout(self.timeout_s) > wait:
                    attempt += 1
                    await asyncio.sleep(wait)
                    continue
                after = f"; it asked to retry after {asked:g} s" if asked is not None else ""
                if response.status_code == RATE_LIMITED:
                    raise BackendRateLimitedError(
                        f"vLLM (or a gateway in front of it) is rate-limiting requests: HTTP 429 on {route}{after}")
                raise BackendUnavailableError(f"vLLM answered HTTP {response.status_code} on {route}{after}")
            if response.status_code == 500:
                # vLLM answers every request with an empty HTTP 500 once its engine died (and /health with 503):
                # that is an outage of the backend, not a bad answer to this one request.
                problem = await self._health_problem(min(2.0, max(0.1, deadline.timeout(2.0))))
                if problem is not None:
                    log.warning("vLLM answered HTTP 500 on %s; %s", url, problem)
                    raise BackendUnavailableError(f"vLLM answered HTTP 500 on {route} and its /health is not 200 "
                                                  "(engine dead or restarting)")
                # A healthy vLLM answers 500 for a generation that failed inside the engine (finish_reason
                # "error", which vLLM calls retryable): tried once more, then it is this request's error.
                if not retried_500 and attempt < self.max_retries and \
                        deadline.timeout(self.timeout_s) > self.backoff_s * (attempt + 1):
                    retried_500 = True
                    attempt += 1
                    log.warning("vLLM answered HTTP 500 on %s with /health fine (%s); retrying once", route,
                                _error_message(_json_or_none(response)) or "no JSON")
                    await asyncio.sleep(self.backoff_s * attempt)
                    continue
            if len(response.content) > LARGE_BODY_BYTES:
                # prompt_logprobs of a long chain come back as megabytes of JSON (~11 MB for 150k prompt tokens:
                # 0.3 s to parse): parsed on a worker thread, in pieces (_loads_in_pieces) so that the event loop
                # every other call shares gets the GIL between them.
                return await asyncio.to_thread(_json_or_error, response, route)
            return _json_or_error(response, route)


LARGE_BODY_BYTES = 256 * 1024


def _retry_after_s(value: str | None) -> float | None:
    """Seconds a Retry-After header asks for: delay-seconds or an HTTP date (RFC 9110); None when absent or
    unreadable (the caller's backoff applies then)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # an HTTP date is GMT; a date without a zone is read as such
        when = when.replace(tzinfo=datetime.timezone.utc)
    return max((when - datetime.datetime.now(datetime.timezone.utc)).total_seconds(), 0.0)
REFUSED_KEY = (401, 403)


def _refused_key(url: str | None, status: int, on: str = "") -> str:
    return (f"vLLM{f' at {url}' if url else ''} refuses this server's API key (HTTP {status}{f' on {on}' if on else ''}): "
            "the api_key setting must match vLLM's --api-key")


def _error_message(data: Any) -> str:
    """The message of an error body: OpenAI's {"error": {"message": …}}, or FastAPI's {"detail": …}."""
    if not isinstance(data, dict):
        return ""
    error = data.get("error")
    message = error.get("message") if isinstance(error, dict) else error
    return str(message or data.get("message") or data.get("detail") or "")[:300]


_SCAN = json.scanner.make_scanner(json.JSONDecoder())  # one JSON value from an index: (value, end)
_SPACE = json.decoder.WHITESPACE.match
_PIECES_DEPTH = 4  # {choices: [{prompt_logprobs: [entry, ...]}]}: the containers read element by element


def _loads_in_pieces(data: bytes) -> Any:
    """json.loads(data), with the outer containers read one element at a time.

    json's C parser holds the GIL for the whole document, so parsing megabytes on a worker thread stalls the event
    loop exactly as long as parsing on it (measured: 0.7 s for 11 MB of prompt_logprobs). Between elements the
    thread runs Python code, where the interpreter hands the GIL to a waiting thread every switch interval (5 ms).
    """
    text = data.decode(json.detect_encoding(data), "surrogatepass")
    value, end = _piece(text, 0, _PIECES_DEPTH)
    end = _SPACE(text, end).end()
    if end != len(text):
        raise json.JSONDecodeError("Extra data", text, end)
    return value


def _piece(s: str, i: int, depth: int) -> tuple[Any, int]:
    i = _SPACE(s, i).end()
    opener = s[i:i + 1]
    if depth <= 0 or opener not in ("[", "{"):
        try:
            return _SCAN(s, i)
        except StopIteration as exc:
            raise json.JSONDecodeError("Expecting value", s, exc.value) from None
    closer = "]" if opener == "[" else "}"
    out: Any = [] if opener == "[" else {}
    i = _SPACE(s, i + 1).end()
    if s.startswith(closer, i):
        return out, i + 1
    while True:
        if opener == "[":
            value, i = _piece(s, i, depth - 1)
            out.append(value)
        else:
            if not s.startswith('"', i):
                raise json.JSONDecodeError("Expecting property name enclosed in double quotes", s, i)
            key, i = json.decoder.scanstring(s, i + 1, True)
            i = _SPACE(s, i).end()
            if not s.startswith(":", i):
                raise json.JSONDecodeError("Expecting ':' delimiter", s, i)
            out[key], i = _piece(s, i + 1, depth - 1)
        i = _SPACE(s, i).end()
        if s.startswith(closer, i):
            return out, i + 1
        if not s.startswith(",", i):
            raise json.JSONDecodeError("Expecting ',' delimiter", s, i)
        i = _SPACE(s, i + 1).end()


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _json_or_error(response: httpx.Response, route: str) -> dict[str, Any]:
    try:
        data = _loads_in_pieces(response.content) if len(response.content) > LARGE_BODY_BYTES else response.json()
    except ValueError as exc:
        if response.status_code == 200:
            raise BackendResponseError(f"vLLM returned non-JSON on {route} (HTTP 200)") from exc
        data = None
    if response.status_code == 404:
        # The model is not served under that name (or the base URL lacks /v1): every request would fail the
        # same way, so this backend is down for us, like an unreachable one, not a bad answer to one claim.
        raise BackendUnavailableError(f"vLLM cannot serve the request (HTTP 404 on {route}): "
                                      f"{_error_message(data) or 'not found'}")
    if response.status_code in REFUSED_KEY:  # every request would be refused alike: down for us, not a bad answer
        raise BackendUnavailableError(_refused_key(None, response.status_code, on=route))
    if response.status_code >= 500:
        # vLLM's own text of a server error (tracebacks, internal names) stays in the log.
        log.warning("vLLM answered HTTP %d on %s: %s", response.status_code, route,
                    _error_message(data) or "no JSON")
        raise BackendResponseError(f"vLLM answered HTTP {response.status_code} on {route}", reason="BACKEND_REJECTED")
    if response.status_code != 200:
        raise BackendResponseError(
            f"vLLM rejected the request (HTTP {response.status_code} on {route}): {_error_message(data) or 'no JSON'}",
            reason="BACKEND_REJECTED",
        )
    if not isinstance(data, dict):
        raise BackendResponseError(f"vLLM returned JSON that is not an object on {route}")
    return data
