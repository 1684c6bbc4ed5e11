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
