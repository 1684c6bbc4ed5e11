"""`kgverify split` had no --splitter, so the LLM decomposer the README describes could not be tried from the CLI
(evaluate and batch have the option). split now takes --splitter rules|llm; llm needs --server."""

import asyncio
import json

import pytest

from client.cli import main
from tests.integration.test_batch_resume import fast_server  # noqa: F401  (a real server with instant models)


def test_split_llm_without_a_server_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["split", "--text", "Aspirin inhibits COX.", "--splitter", "llm"])
    assert exited.value.code == 2
    assert "kgverify split: error: --splitter llm needs --server" in capsys.readouterr().err


async def test_split_sends_its_splitter_to_the_server(fast_server, capsys):  # noqa: F811
    address = fast_server.addresses[0]
    argv = ["split", "--server", address, "--text", "Step 1: Aspirin inhibits COX."]
    assert await asyncio.to_thread(main, [*argv, "--splitter", "rules"]) == 0
    assert json.loads(capsys.readouterr().out)["steps"][0]["claims"][0]["text"] == "Aspirin inhibits COX."
    # this server has no LLM decomposer: asked for it, it says so (so the option reached it)
    assert await asyncio.to_thread(main, [*argv, "--splitter", "llm"]) == 2
    assert "BACKEND_NOT_CONFIGURED" in capsys.readouterr().err
