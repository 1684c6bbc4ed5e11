"""Token files that would silently turn token auth off or never match stop the start naming the variable."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from client import AsyncVerifierClient, VerifierError
from tests.integration.test_security import secure_server  # noqa: F401 (a fixture)

ROOT = Path(__file__).resolve().parents[2]
CHAIN = {"question": "Which drug reverses heparin?", "steps": ["Protamine sulfate neutralizes heparin."],
         "answer": "Protamine", "context": ["Protamine sulfate is the antidote that neutralizes heparin."]}


def _serve(tmp_path, **env):
    """`python -m server` with these KGV_ variables; it must refuse to start (a hang guard only)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("KGV_")}
    environ.update(KGV_KB__ENABLED="false", KGV_KB__CACHE_DIR=str(tmp_path / "cache"),
                   KGV_SERVER__LISTEN=f'["unix://{tmp_path / "kgv.sock"}"]', **env)
    return subprocess.run([sys.executable, "-m", "server"], cwd=ROOT, env=environ, capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("content", ["", "\n\n", "# the tokens of the QA service\n  \n"])
def test_an_empty_token_file_stops_the_start_instead_of_turning_auth_off(tmp_path, content):
    """An empty mounted secret (or one with only comments) left no token: the server started with no token auth at
    all, open to every caller, without a word."""
    tokens = tmp_path / "tokens"
    tokens.write_text(content)
    done = _serve(tmp_path, KGV_SECURITY__AUTH_TOKENS_FILE=str(tokens))
    assert done.returncode == 2, done.stderr
    assert "KGV_SECURITY__AUTH_TOKENS_FILE" in done.stderr and "holds no token" in done.stderr
    assert "Traceback" not in done.stderr


def test_an_empty_admin_token_file_stops_the_start_instead_of_letting_every_caller_reload(tmp_path):
    admin = tmp_path / "admin-tokens"
    admin.write_text("")
    done = _serve(tmp_path, KGV_SECURITY__AUTH_TOKENS='["ordinary-token"]',
                  KGV_SECURITY__ADMIN_TOKENS_FILE=str(admin))
    assert done.returncode == 2, done.stderr
    assert "KGV_SECURITY__ADMIN_TOKENS_FILE" in done.stderr and "holds no token" in done.stderr


def test_a_token_no_client_can_send_stops_the_start_without_showing_it(tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text("ascii-token\nsécret-tökén\n")
    done = _serve(tmp_path, KGV_SECURITY__AUTH_TOKENS_FILE=str(tokens))
    assert done.returncode == 2, done.stderr
    assert "line 2" in done.stderr and "printable ASCII" in done.stderr and "tökén" not in done.stderr


async def _score(address, token):
    async with AsyncVerifierClient(address, retries=0, timeout_s=10,
                                   metadata=(("authorization", f"Bearer {token}"),)) as client:
        return await client.score_chain(metrics=("ki",), **CHAIN)


async def test_a_token_file_with_a_byte_order_mark_accepts_its_first_token(secure_server, tmp_path):
    """A file saved as "UTF-8 with BOM" (Windows tools) made the first token "\\ufeff<token>", which no client
    sends: every call with that token was refused UNAUTHENTICATED."""
    tokens = tmp_path / "tokens"
    tokens.write_bytes(b"\xef\xbb\xbffirst-token\r\n  # an indented comment\r\nsecond-token\r\n")
    address = (await secure_server(auth_tokens_file=tokens)).addresses[0]
    for token in ("first-token", "second-token"):
        assert (await _score(address, token)).knowledge_index == 1.0
    with pytest.raises(VerifierError) as info:  # a comment is never a token, indented or not
        await _score(address, "# an indented comment")
    assert info.value.code == "UNAUTHENTICATED"
