"""Settings errors name the environment variable, say what is expected, and catch misspelled variables."""

from __future__ import annotations

import re

import pytest

from server.config import SettingsError, _known_variables, load_settings
from tests.conftest import REPO


@pytest.mark.parametrize("name, value, expected", [
    ("KGV_SERVER__LISTEN", "127.0.0.1:50053", "KGV_SERVER__LISTEN: must be JSON, e.g. '[\"127.0.0.1:50051\"]'"),
    ("KGV_SERVER__MAX_INFLIGHT", "abc", "KGV_SERVER__MAX_INFLIGHT: Input should be a valid integer"),
    ("KGV_SERVER__LOG_LEVEL", "verbose", "KGV_SERVER__LOG_LEVEL: String should match pattern"),
    ("KGV_SERVR__LISTEN", '["x:1"]', "KGV_SERVR__LISTEN: not a kgverify setting (did you mean KGV_SERVER__LISTEN?)"),
    ("KGV_JUDGE__CASCADE_THRESHOLD", "2", "KGV_JUDGE__CASCADE_THRESHOLD: Input should be less than or equal to 1"),
    ("KGV_JUDGE__BASE_URL", "vllm:8000/v1", "KGV_JUDGE__BASE_URL: Value error, must be an http:// or https:// URL"),
    ("KGV_LM__BASE_URL", "localhost:8000/v1", "KGV_LM__BASE_URL: Value error, must be an http:// or https:// URL"),
    ("KGV_SPLITTER__BASE_URL", "ftp://x/v1", "KGV_SPLITTER__BASE_URL: Value error, must be an http:// or https://"),
])
def test_a_bad_or_unknown_variable_is_named_with_what_is_expected(monkeypatch, name, value, expected):
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert expected in str(info.value)
    assert "pydantic" not in str(info.value)


def test_good_variables_load_and_the_log_level_is_case_insensitive(monkeypatch):
    monkeypatch.setenv("KGV_SERVER__LOG_LEVEL", "debug")
    monkeypatch.setenv("KGV_SERVER__LISTEN", '["127.0.0.1:50070"]')
    settings = load_settings()
    assert settings.server.log_level == "DEBUG" and settings.server.listen == ["127.0.0.1:50070"]


def test_every_variable_the_docs_and_compose_file_name_exists():
    known = _known_variables()
    files = [REPO / "README.md", REPO / "docker-compose.yml", *sorted((REPO / "docs").glob("*.md"))]
    named = {(f.name, m) for f in files for m in re.findall(r"KGV_[A-Z0-9_]*[A-Z0-9]", f.read_text())}
    assert {(f, m) for f, m in named if m not in known and not m.endswith(("_TLS", "KGV_SPLITTER"))} == set()


def test_kgverify_config_masks_every_secret(monkeypatch, capsys):
    from client.cli import main

    for name, secret in (("KGV_JUDGE__API_KEY", "sk-judge"), ("KGV_LM__API_KEY", "sk-lm"),
                         ("KGV_SPLITTER__API_KEY", "sk-splitter"), ("KGV_SECURITY__AUTH_TOKENS", '["tok-auth"]')):
        monkeypatch.setenv(name, secret)
    assert main(["config"]) == 0
    printed = capsys.readouterr().out
    assert '"api_key": "**********"' in printed
    for secret in ("sk-judge", "sk-lm", "sk-splitter", "tok-auth"):
        assert secret not in printed


@pytest.mark.parametrize("name, value, expected", [
    ("KGV_JUDGE__MODEL", "", "KGV_JUDGE__MODEL: Value error, an empty model name; unset the variable"),
    ("KGV_JUDGE__MODEL", " judge", "KGV_JUDGE__MODEL: Value error, a model name with spaces around it: ' judge'"),
    ("KGV_EMBEDDER__MODEL", "  ", "KGV_EMBEDDER__MODEL: Value error, an empty model name"),
    ("KGV_LM__MODEL", "", "KGV_LM__MODEL: Value error, an empty model name"),
    ("KGV_SPLITTER__MODEL", "qwen\n", "KGV_SPLITTER__MODEL: Value error, a model name with spaces around it"),
    ("KGV_LM__DTYPE", "bf16", "KGV_LM__DTYPE: Input should be 'auto', 'float32', 'bfloat16' or 'float16'"),
])
def test_model_names_and_the_lm_dtype_are_checked_at_startup(monkeypatch, name, value, expected):
    """Each of these was accepted and failed later, far from the variable: vLLM's 404 on every claim, the embedder
    looking for a directory named "", an unknown torch dtype only when the causal LM loaded."""
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert expected in str(info.value)


def test_model_names_and_dtypes_that_were_good_still_load(monkeypatch):
    monkeypatch.setenv("KGV_JUDGE__MODEL", "Qwen/Qwen3-8B")
    monkeypatch.setenv("KGV_LM__DTYPE", "bfloat16")
    monkeypatch.setenv("KGV_SPLITTER__MODEL", "decomposer")
    settings = load_settings()
    assert (settings.judge.model, settings.lm.dtype, settings.splitter.model) == ("Qwen/Qwen3-8B", "bfloat16",
                                                                                  "decomposer")
