"""An in-process server on a private unix socket, for CLI commands run without --server."""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
from contextlib import asynccontextmanager
from pathlib import Path
from typing import AsyncIterator


class EmbeddedServerError(RuntimeError):
    """A service the command needs failed to load."""


def kb_note(settings, kb) -> str:
    """The line saying which knowledge base the embedded verifier judges claims against ("" without one): the
    bundled demo KB is a few hundred facts, so KI on a real dataset against it means little, and nothing else
    said that it was the one in use."""
    if kb is None:
        return ""
    from .render import printable  # (terminal controls in a path shown as escapes)

    info = kb.info
    if settings.kb.path:
        return printable(f"knowledge base {info.kb_id}: {info.num_facts} facts, from {settings.kb.path}")
    return printable(f"knowledge base {info.kb_id}: the bundled demo KB ({info.num_facts} facts, for trying kgverify "
                     f"out; kgverify kb search {info.path} QUERY shows them); judge your own domain against a KB "
                     "built with `kgverify kb build` (--kb DIR or KGV_KB__PATH)")


SOCKET_NAME = "kgverify.sock"
# bytes: a unix socket's path must fit sockaddr_un.sun_path with its NUL (108 on Linux, 104 on macOS and the BSDs)
MAX_SOCKET_PATH = 107 if sys.platform.startswith("linux") else 103


def _socket_dir() -> Path:
    """A private (0700) directory for the embedded verifier's socket: in the temporary directory (TMPDIR), or in
    /tmp or /var/tmp when a socket path there would be too long for a unix socket (a deep TMPDIR: CI runners,
    pytest's temporary paths, macOS's /var/folders/...), which gRPC refused as "address in use"."""
    probe = f"kgverify-{'x' * 8}/{SOCKET_NAME}"  # mkdtemp adds 8 characters to the prefix
    tried = []
    for parent in (tempfile.gettempdir(), "/tmp", "/var/tmp"):
        if parent in tried or not Path(parent).is_dir():
            continue
        tried.append(parent)
        if len(os.fsencode(Path(parent) / probe)) <= MAX_SOCKET_PATH:  # (a TMPDIR not valid UTF-8 too)
            try:
                return Path(tempfile.mkdtemp(prefix="kgverify-", dir=parent))
            except OSError:
                continue
    raise EmbeddedServerError(
        f"no directory for the embedded verifier's socket: a unix socket path must be at most {MAX_SOCKET_PATH} "
        f"bytes, and {', '.join(tried) or 'no temporary directory'} gave none that fits and can be written: set "
        "TMPDIR to a short writable directory, or run a server and pass --server")


def _private(settings):
    """The settings of a verifier only this process calls, on its own 0700 socket: no metrics endpoint and no
    token auth. Taken from the environment as they were, those of a server running beside it (a compose service's
    KGV_METRICS__PORT, KGV_SECURITY__AUTH_TOKENS) made `docker compose exec verifier kgverify evaluate …` fail: the
    metrics port was taken, and the command's own calls carried no token."""
    from server.config import MetricsSettings, SecuritySettings

    return settings.model_copy(update={"metrics": MetricsSettings(port=None), "security": SecuritySettings()})


@asynccontextmanager
async def embedded_server(settings=None, load_timeout_s: float = 900.0,
                          required: tuple[str, ...] | None = None, uses_kb: bool = True) -> AsyncIterator[str]:
    """Starts the verifier in this process and yields its address; stops it on exit.

    Raises EmbeddedServerError when a required service (default: all the server
    needs) did not load, with the reason, instead of waiting on it.
    """
    from server.app import start_server
    from server.config import load_settings

    settings = _private(settings or load_settings())
    for name in ("kgverify", "server", "kb"):
        logging.getLogger(name).setLevel(logging.WARNING)
    tmp = _socket_dir()
    address = f"unix://{tmp / SOCKET_NAME}"
    print("starting the embedded verifier (loading models)...", file=sys.stderr)
    verifier = await start_server(settings, [address])
    try:
        try:
            await verifier.wait_ready(load_timeout_s)
        except TimeoutError:  # (asyncio's, which says nothing)
            raise EmbeddedServerError(f"the embedded verifier could not start: its models did not finish loading "
                                      f"within {load_timeout_s:g} s") from None
        runtime = verifier.runtime
        missing = [name for name in (required or runtime.health.required) if not runtime.health.ready(name)]
        if missing:
            reasons = "; ".join(f"{name}: {runtime.load_errors.get(name, 'not ready')}" for name in missing)
            raise EmbeddedServerError(f"the embedded verifier could not start: {reasons}")
        note = kb_note(settings, runtime.kb.current) if uses_kb else ""  # (context passages or InfoGain only)
        if note:
            print(note, file=sys.stderr)
        yield address
    finally:
        await verifier.stop(0)
        shutil.rmtree(tmp, ignore_errors=True)
