"""The embedded verifier's socket under a deep TMPDIR: a unix socket path over 107 bytes cannot be bound, and gRPC
said only "address in use", so `kgverify demo` / `evaluate` without --server failed (seen under pytest-xdist's
temporary paths; CI runners and macOS's /var/folders are as deep)."""

from __future__ import annotations

import shutil
import tempfile

import grpc
import pytest

from client import embedded
from client.embedded import MAX_SOCKET_PATH, SOCKET_NAME, EmbeddedServerError, _socket_dir


@pytest.fixture
def deep_tmpdir(tmp_path, monkeypatch):
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    monkeypatch.setattr(tempfile, "tempdir", str(deep))
    return deep


async def test_a_tmpdir_too_deep_for_a_socket_path_puts_the_socket_where_it_fits_and_grpc_listens(deep_tmpdir):
    assert len(str(deep_tmpdir / f"kgverify-12345678/{SOCKET_NAME}").encode()) > MAX_SOCKET_PATH
    where = _socket_dir()
    try:
        path = where / SOCKET_NAME
        assert len(str(path).encode()) <= MAX_SOCKET_PATH and not str(where).startswith(str(deep_tmpdir))
        assert where.stat().st_mode & 0o777 == 0o700  # private, as in TMPDIR
        server = grpc.aio.server()
        assert server.add_insecure_port(f"unix://{path}") == 1  # bound (0 or an error before)
        await server.start()
        await server.stop(0)
    finally:
        shutil.rmtree(where, ignore_errors=True)


def test_a_short_tmpdir_keeps_the_socket(tmp_path, monkeypatch):
    short = tempfile.mkdtemp(prefix="k-", dir="/tmp")
    try:
        monkeypatch.setattr(tempfile, "tempdir", short)
        where = _socket_dir()
        assert where.parent.as_posix() == short
    finally:
        shutil.rmtree(short, ignore_errors=True)


def test_no_directory_that_fits_is_a_clear_error_naming_the_remedy(deep_tmpdir, monkeypatch):
    monkeypatch.setattr(embedded, "MAX_SOCKET_PATH", 10)
    with pytest.raises(EmbeddedServerError, match="at most 10 bytes.*set TMPDIR to a short writable directory"):
        _socket_dir()


def test_a_tmpdir_that_is_not_valid_utf8_is_measured_in_its_bytes(tmp_path, monkeypatch):
    odd = tmp_path / "t\udcff"  # (a byte 0xff in the name, as Python holds it)
    odd.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(odd))
    where = _socket_dir()  # (raised UnicodeEncodeError before)
    shutil.rmtree(where, ignore_errors=True)
