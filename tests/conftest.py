"""Shared fixtures: one embedder, one demo KB and one real server per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """A per-session cache directory (demo KB builds land here, never in the user's home)."""
    return tmp_path_factory.mktemp("kgv-cache")


@pytest.fixture(scope="session")
def embedder():
    from kb.embedder import SentenceTransformerEmbedder

    return SentenceTransformerEmbedder()


@pytest.fixture(scope="session")
def demo_kb_path(cache_dir, embedder) -> Path:
    from kb.demo import ensure_demo_kb

    return ensure_demo_kb(cache_dir, embedder)


def damage(path: Path, at: float = 0.5, mask: int = 0xFF) -> bytes:
    """Flips bits of one byte of a file (at a fraction of its length), as a disk fault would; returns the
    damaged bytes."""
    data = bytearray(Path(path).read_bytes())
    data[int(len(data) * at)] ^= mask
    Path(path).write_bytes(bytes(data))
    return bytes(data)


def make_settings(cache_dir: Path, **sections):
    """Settings for tests: the given sections over defaults, caches in cache_dir."""
    from server.config import Settings

    kb = {"cache_dir": cache_dir, **sections.pop("kb", {})}
    server = {"health_interval_s": 0.5, "grace_period_s": 0.5, **sections.pop("server", {})}
    return Settings(kb=kb, server=server, **sections)


@pytest.fixture(scope="session")
async def verifier(cache_dir, demo_kb_path, tmp_path_factory):
    """The real server with the demo KB, on 127.0.0.1:0 and a unix socket."""
    from server.app import start_server

    sock = tmp_path_factory.mktemp("sock") / "kgv.sock"
    server = await start_server(make_settings(cache_dir), ["127.0.0.1:0", f"unix://{sock}"])
    await server.wait_ready(300)
    yield server
    await server.stop(0)


def takes_ctrl_c() -> None:
    """preexec_fn of the child processes tests interrupt: a test run started in the background (`make test &`)
    ignores SIGINT, and children inherit that, so they would run through the Ctrl-C the test sends them."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)
