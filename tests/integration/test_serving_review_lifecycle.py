"""Starting on a unix socket path that holds something else."""

from __future__ import annotations

import pytest

from server.app import ListenError, start_server
from tests.conftest import make_settings


@pytest.mark.parametrize("kind", ["file", "directory"])
async def test_a_unix_socket_path_holding_a_file_or_directory_is_refused_saying_so_and_left_alone(tmp_path, cache_dir,
                                                                                                 kind):
    """gRPC's bind failed with "Address already in use", which read as another server on that socket."""
    path = tmp_path / "kgv.sock"
    if kind == "file":
        path.write_text("precious\n")
    else:
        path.mkdir()
    with pytest.raises(ListenError) as info:
        await start_server(make_settings(cache_dir, kb={"enabled": False}), [f"unix://{path}"])
    assert f"{path} exists and is not a socket" in str(info.value)
    assert path.read_text() == "precious\n" if kind == "file" else path.is_dir()
