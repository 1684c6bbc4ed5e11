"""The knowledge base service behind the real server: load failures, reloads and error statuses."""

import pytest

from client import AsyncVerifierClient, VerifierError
from tests.conftest import make_settings


async def test_a_demo_kb_that_cannot_be_built_is_a_load_failure_not_a_kb_still_loading(tmp_path, embedder):
    """A server without a configured KB builds the demo KB in its cache directory; when that fails (a directory it
    cannot write, a full disk) every KB call said "still loading; retry shortly", waiting for readiness never
    ended and a reload failed INTERNAL."""
    from server.app import start_server

    blocked = tmp_path / "cache"
    blocked.write_text("a file where the cache directory should be")
    server = await start_server(make_settings(blocked), ["127.0.0.1:0"])
    try:
        async with AsyncVerifierClient(server.addresses[0], retries=0) as client:
            with pytest.raises(VerifierError) as err:
                await client.wait_ready("", timeout_s=120)
            assert err.value.code == "FAILED_PRECONDITION" and err.value.reason == "SERVICE_LOAD_FAILED"
            assert str(blocked) in err.value.message and "FileExistsError" in err.value.message
            for call in (client.search("warfarin"), client.kb_info(), client.reload_kb(),
                         client.score_knowledge(steps=["Warfarin is monitored with the INR."])):
                with pytest.raises(VerifierError) as err:
                    await call
                assert (err.value.code, err.value.reason) == ("FAILED_PRECONDITION", "SERVICE_LOAD_FAILED")
            blocked.unlink()  # the cause is fixed: a reload builds the demo KB and serves it
            assert (await client.reload_kb())[1]
            await client.wait_ready("", timeout_s=60)
            assert await client.search("warfarin", top_k=1)
    finally:
        await server.stop(0)
