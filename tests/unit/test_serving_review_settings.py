"""Startup settings that used to start a useless server, hang the micro-batcher or end in a traceback: each is now
one clear error naming its KGV_* variable."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from server import security
from server.batching import MicroBatcher
from server.config import SecuritySettings, SettingsError, load_settings
from server.pipeline.runtime import Blocking

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name, value, says", [
    ("KGV_SERVER__LISTEN", "[]", "at least 1 item"),  # was: a server "listening on " nothing, forever
    ("KGV_SERVER__MAX_MESSAGE_BYTES", "99999999999", "less than or equal to 2147483647"),  # was: OverflowError
    ("KGV_BATCHING__MAX_WAIT_MS", "inf", "finite"),  # was: partial batches never ran
    ("KGV_BATCHING__MAX_WAIT_MS", "1e300", "less than or equal to 60000"),
    ("KGV_SERVER__GRACE_PERIOD_S", "inf", "finite"),
    ("KGV_JUDGE__TIMEOUT_S", "inf", "finite"),
    ("KGV_KB__BM25_WEIGHT", "inf", "finite"),
])
def test_unusable_values_are_refused_naming_the_variable(name, value, says, monkeypatch):
    for other in [n for n in os.environ if n.startswith("KGV_")]:
        monkeypatch.delenv(other)
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert name in str(info.value) and says in str(info.value)


async def test_an_infinite_max_wait_is_refused_by_the_batcher_itself():
    with pytest.raises(ValueError, match="finite"):
        MicroBatcher("m", lambda items: items, Blocking(ThreadPoolExecutor(1)), max_wait_ms=float("inf"))
    with pytest.raises(ValueError, match="finite"):
        MicroBatcher("m", lambda items: items, Blocking(ThreadPoolExecutor(1)), max_wait_ms=float("nan"))


async def test_a_large_finite_max_wait_still_answers_a_lone_request_by_its_deadline_not_never():
    batcher = MicroBatcher("m", lambda items: [len(i) for i in items], Blocking(ThreadPoolExecutor(1)),
                           max_wait_ms=50.0)
    assert await asyncio.wait_for(batcher.submit(["ab"]), 5) == [2]


def test_a_token_file_that_is_missing_or_not_utf8_is_a_settings_error_naming_variable_and_line(tmp_path):
    with pytest.raises(SettingsError, match="KGV_SECURITY__AUTH_TOKENS_FILE: cannot read the token file"):
        security.auth_interceptor(SecuritySettings(auth_tokens_file=tmp_path / "missing"))
    bad = tmp_path / "tokens"
    bad.write_bytes(b"# tokens\ngood-token\nsecret\xff\n")
    with pytest.raises(SettingsError) as info:
        security.auth_interceptor(SecuritySettings(admin_tokens_file=bad))
    message = str(info.value)
    assert "KGV_SECURITY__ADMIN_TOKENS_FILE: line 3" in message and "not UTF-8" in message
    assert "secret" not in message and "good-token" not in message  # never the file's contents


def test_files_that_are_not_a_pem_certificate_and_key_are_refused_naming_the_variables(tmp_path):
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(SettingsError) as info:
        security.server_credentials(SecuritySettings(tls_cert_file=junk, tls_key_file=junk))
    assert "KGV_SECURITY__TLS_CERT_FILE / KGV_SECURITY__TLS_KEY_FILE" in str(info.value)


def test_python_m_server_says_what_is_wrong_with_a_token_file_in_one_line(tmp_path):
    """`python -m server` caught only settings and listen errors: a token file it could not read was a traceback."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KGV_")}
    env.update(KGV_SECURITY__AUTH_TOKENS_FILE=str(tmp_path / "missing"), KGV_KB__ENABLED="false",
               KGV_SERVER__LISTEN='["127.0.0.1:0"]', KGV_KB__CACHE_DIR=str(tmp_path))
    done = subprocess.run([sys.executable, "-m", "server"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith(
        "kgverify: error: KGV_SECURITY__AUTH_TOKENS_FILE: cannot read the token file")


@pytest.mark.parametrize("backend", ["transformers", "vllm"])
def test_a_causal_lm_backend_without_a_model_is_refused_at_load(backend, monkeypatch):
    """Was found only while loading: the server came up with InfoGain failed and its overall health NOT_SERVING."""
    for other in [n for n in os.environ if n.startswith("KGV_")]:
        monkeypatch.delenv(other)
    monkeypatch.setenv("KGV_LM__BACKEND", backend)
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert f"KGV_LM: Value error, backend={backend} needs KGV_LM__MODEL" in str(info.value)
    monkeypatch.setenv("KGV_LM__MODEL", "qa")
    assert load_settings().lm.model == "qa"
