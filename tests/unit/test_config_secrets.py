"""A secret setting given in the wrong form (a token without its JSON brackets, an API key as a list) is named in
the startup error without its value: the error reaches the terminal and the container log. (An API key is any
string, so it cannot be malformed this way.)"""

import pytest

from server.config import SettingsError, load_settings

SECRET = "s3cret-value-never-printed"


@pytest.mark.parametrize("name, value", [
    ("KGV_SECURITY__AUTH_TOKENS", SECRET),                 # not JSON
    ("KGV_SECURITY__AUTH_TOKENS", f'"{SECRET}"'),          # JSON, but a string instead of a list
    ("KGV_SECURITY__ADMIN_TOKENS", f'{{"a": "{SECRET}"}}'),
    ("KGV_SECURITY__ADMIN_TOKENS", f'["ok", 5, "{SECRET}", null]'),
])
def test_a_malformed_secret_is_named_without_its_value(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    message = str(info.value)
    assert name in message and SECRET not in message


@pytest.mark.parametrize("name, value", [("KGV_SERVER__EXECUTOR_WORKERS", "many"), ("KGV_SERVER__LISTEN", "0.0.0.0:1")])
def test_other_bad_values_are_still_quoted(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert name in str(info.value) and repr(value) in str(info.value)
