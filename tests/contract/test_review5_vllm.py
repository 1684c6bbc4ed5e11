"""The shared vLLM client against a real HTTP peer: the RPC deadline bounds a whole call."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from server.backends.vllm_client import VllmClient
from server.pipeline.deadline import Deadline
from server.pipeline.errors import BackendTimeoutError


class TricklingServer:
    """An HTTP peer that answers at once with headers, then sends its (valid JSON) body one byte at a time:
    every read gets data long before httpx's read timeout, but the whole body takes `seconds`."""

    def __init__(self, seconds: float = 3.0):
        self.body = b'{"choices": []' + b" " * 28 + b"}"
        self.pause = seconds / len(self.body)
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(8)
        self._stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._sock.getsockname()[1]}/v1"

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            head, _, rest = data.partition(b"\r\n\r\n")
            length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), 0)
            while len(rest) < length:
                rest += conn.recv(65536)
            try:
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\n\r\n" % len(self.body))
                for i in range(len(self.body)):
                    if self._stop.is_set():
                        return
                    conn.sendall(self.body[i:i + 1])
                    time.sleep(self.pause)
            except OSError:
                return

    def close(self) -> None:
        self._stop.set()
        self._sock.close()


@pytest.fixture
def trickling():
    server = TricklingServer()
    yield server
    server.close()


async def test_a_reply_that_keeps_arriving_does_not_outlast_the_deadline(trickling):
    """httpx's timeout bounds each read, not the call: a reply trickling in would run past the RPC's deadline
    (and the cascade's reserve for degraded verdicts)."""
    client = VllmClient(trickling.base_url, timeout_s=30.0, max_retries=0)
    try:
        with pytest.raises(BackendTimeoutError):
            await client.chat_completions({"model": "judge", "messages": []}, Deadline.after(0.5))
    finally:
        await client.aclose()


async def test_a_large_reply_leaves_the_event_loop_running_while_it_is_parsed(monkeypatch):
    """prompt_logprobs of a long chain are megabytes of JSON. json's C parser holds the GIL for a whole document,
    so parsing it on a worker thread froze the event loop (every other call, health checks) as long as parsing
    on it would: the loop must keep running while the reply is parsed."""
    import asyncio
    import json

    from server.backends import vllm_client
    from tests.fakes.vllm_server import FakeVllmServer

    ticks = 0
    during: list[int] = []
    real = vllm_client._json_or_error

    def counting(response, route):
        start = ticks
        data = real(response, route)
        during.append(ticks - start)
        return data

    async def ticker():
        nonlocal ticks
        while True:
            await asyncio.sleep(0.001)
            ticks += 1

    monkeypatch.setattr(vllm_client, "_json_or_error", counting)
    prompt = [1] + [5 + i % 40 for i in range(30_000)]
    server = FakeVllmServer(max_model_len=40_000, scorer=lambda ids: [-0.25] * (len(ids) - 1)).start()
    client = VllmClient(server.base_url, timeout_s=120.0)
    clock = asyncio.create_task(ticker())
    try:
        reply = await client.completions({"model": "judge", "prompt": [prompt] * 4, "max_tokens": 1,
                                          "prompt_logprobs": 0})
    finally:
        clock.cancel()
        await client.aclose()
        server.stop()
    assert [len(c["prompt_logprobs"]) for c in reply["choices"]] == [30_001] * 4
    assert reply["choices"][2]["prompt_logprobs"][1] == {"5": {"logprob": -0.25, "rank": 1, "decoded_token": "5"}}
    assert len(json.dumps(reply)) > 5 * vllm_client.LARGE_BODY_BYTES
    assert during[0] >= 10  # the loop ran on while the reply was parsed (a frozen loop: 0 or 1)


@pytest.mark.parametrize("body", [
    b'{"choices": [{"prompt_logprobs": [null, {"5": {"logprob": -1.5e-3, "rank": 1}}]}], "u": [NaN, 1e400, "\\u00e9"]}',
    '\ufeff{"a": [1, 2, {"b": []}], "c": {}, "d": "x\\"y", "a": 3}'.encode("utf-8"),
    '  [ {"k" : [ [ [ 1 ] ] ] } , true , null , -0 ]  '.encode("utf-16"),
])
def test_a_large_reply_parses_as_json_loads_does(body):
    from server.backends import vllm_client

    assert repr(vllm_client._loads_in_pieces(body)) == repr(json_loads(body))  # repr: NaN != NaN


@pytest.mark.parametrize("body", [b'{"a": [1, 2,]}', b'{"a": 1,}', b'{"a" 1}', b'[1 2]', b'{"a": [1]} x', b'{"a": [',
                                  b"", b"{'a': 1}", b'{"a": "\x01"}'])
def test_a_malformed_large_reply_is_rejected_as_json_loads_rejects_it(body):
    from server.backends import vllm_client

    with pytest.raises(ValueError):
        json_loads(body)
    with pytest.raises(ValueError):
        vllm_client._loads_in_pieces(body)


def json_loads(body: bytes):
    import json

    return json.loads(body)


async def test_a_call_cancelled_as_its_concurrency_slot_frees_up_stays_cancelled():
    """A cancel (the client gave up, the RPC's deadline passed) that lands as the slot this call waits for is handed
    to it must end the call: on Python 3.11 asyncio.wait_for returned the slot instead, the cancel was lost and the
    call went on to vLLM for a client that was gone, holding the slot."""
    import asyncio

    from tests.fakes.vllm_server import FakeVllmServer, label_choice_reply

    server = FakeVllmServer(chat=lambda body: label_choice_reply({"A": 0.7, "B": 0.2, "C": 0.1})).start()
    client = VllmClient(server.base_url, max_concurrency=1)
    try:
        slot = client._slot()
        await slot.acquire()  # another call holds the only slot
        call = asyncio.create_task(client.chat_completions({"model": "judge", "messages": []}, Deadline.after(30)))
        for _ in range(5):
            await asyncio.sleep(0)  # the call is waiting for the slot
        slot.release()  # the slot goes to the waiting call ...
        await asyncio.sleep(0)
        call.cancel()  # ... as its client goes away
        outcome = (await asyncio.gather(call, return_exceptions=True))[0]
        assert isinstance(outcome, asyncio.CancelledError), outcome
        assert not slot.locked()  # and the slot is free for the next call
    finally:
        await client.aclose()
        server.stop()
