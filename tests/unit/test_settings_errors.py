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
