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
