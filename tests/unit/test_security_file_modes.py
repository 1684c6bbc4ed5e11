"""A token, key or CA file every user of the machine can write is named in a startup warning (anyone could add
a token or a CA, or swap the key); one readable by all is not (container runtimes mount secrets so)."""

import logging

import pytest

from server.config import SecuritySettings
from server.security import load_admin_tokens, load_tokens


def _warnings(caplog):
    return [r.getMessage() for r in caplog.records if r.name == "kgverify.security" and r.levelno == logging.WARNING]


@pytest.mark.parametrize("field, load", [("auth_tokens_file", load_tokens), ("admin_tokens_file", load_admin_tokens)])
def test_a_world_writable_token_file_is_warned_about(tmp_path, caplog, field, load):
    path = tmp_path / "tokens"
    path.write_text("a-token\n")
    path.chmod(0o666)
    caplog.set_level(logging.WARNING, logger="kgverify.security")
    assert len(load(SecuritySettings(**{field: path}))) == 1
    [warning] = _warnings(caplog)
    assert str(path) in warning and "-rw-rw-rw-" in warning and "a-token" not in warning


@pytest.mark.parametrize("mode", [0o600, 0o644, 0o444, 0o640])
def test_files_only_their_owner_can_write_are_not(tmp_path, caplog, mode):
    path = tmp_path / "tokens"
    path.write_text("a-token\n")
    path.chmod(mode)
    caplog.set_level(logging.WARNING, logger="kgverify.security")
    load_tokens(SecuritySettings(auth_tokens_file=path))
    assert _warnings(caplog) == []
