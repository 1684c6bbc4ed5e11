"""The verifier a command starts in its own process (no --server) takes no metrics port and no tokens from the
environment: with a compose service's KGV_METRICS__PORT (taken by the running server) and KGV_SECURITY__AUTH_TOKENS
set, `kgverify evaluate` failed to bind the port, and its own calls carried no token."""

from __future__ import annotations

import socket

from client import AsyncVerifierClient
from client.embedded import embedded_server
from tests.conftest import make_settings
from tests.integration.test_server_review4 import fake_models  # noqa: F401  (the fake judge and estimator)


async def test_the_embedded_verifier_ignores_the_servers_metrics_port_and_tokens(cache_dir, demo_kb_path,
                                                                                  fake_models):  # noqa: F811
    with socket.socket() as taken:  # the metrics port of the server running beside the command
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = make_settings(cache_dir, kb={"path": demo_kb_path}, metrics={"port": port},
                                 security={"auth_tokens": ["s3cret-token"]})
        async with embedded_server(settings) as address:
            async with AsyncVerifierClient(address, retries=0) as client:  # no token: the command's own calls
                score = await client.score_chain(question="What reverses heparin?", answer="Protamine",
                                                 steps=["Protamine sulfate neutralizes heparin."])
    assert score.steps and score.info_gain is not None
