"""Settings that would only fail on the first request (or silently mean something else) are refused at startup."""

from __future__ import annotations

import pytest

from server.config import SettingsError, load_settings


@pytest.mark.parametrize("name, value, expected", [
    # vLLM refuses an empty cache_salt on every request (the judge's and decomposer's were already checked).
    ("KGV_LM__VLLM_CACHE_SALT", "", "KGV_LM__VLLM_CACHE_SALT: String should have at least 1 character"),
])
def test_a_value_that_fails_later_is_refused_naming_the_variable(monkeypatch, name, value, expected):
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert expected in str(info.value)


@pytest.mark.parametrize("name", [
    "KGV_KB__PATH", "KGV_KB__CACHE_DIR", "KGV_JUDGE__NLI_MODEL_PATH", "KGV_SECURITY__AUTH_TOKENS_FILE",
    "KGV_SECURITY__ADMIN_TOKENS_FILE", "KGV_SECURITY__TLS_CLIENT_CA_FILE",
])
@pytest.mark.parametrize("value", ["", "  "])
def test_an_empty_path_is_refused_not_taken_for_the_working_directory(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert f"{name}: Value error, an empty path; unset the variable to use the default" in str(info.value)


def test_an_empty_tls_pair_is_refused_naming_each_variable(monkeypatch):
    monkeypatch.setenv("KGV_SECURITY__TLS_CERT_FILE", "")
    monkeypatch.setenv("KGV_SECURITY__TLS_KEY_FILE", "")
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert "KGV_SECURITY__TLS_CERT_FILE: Value error, an empty path" in str(info.value)
    assert "KGV_SECURITY__TLS_KEY_FILE: Value error, an empty path" in str(info.value)


def test_a_set_path_is_still_accepted(monkeypatch, tmp_path):
    monkeypatch.setenv("KGV_KB__PATH", str(tmp_path))
    assert load_settings().kb.path == tmp_path
