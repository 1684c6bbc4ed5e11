"""`kgverify evaluate` had no way to send a multiple-choice question's options (batch takes `choices`): a MedQA or
MedBullets question scored alone lost them, and an answer of one letter ("B") was scored as the text "B". It takes
--choice TEXT, repeated in option order."""

import asyncio
import json

from client.cli import main
from tests.integration.test_batch_resume import fast_server  # noqa: F401  (a real server with instant models)

CHAIN = ["--question", "Which drug reverses warfarin?", "--reasoning", "Vitamin K reverses warfarin.",
         "--choice", "Protamine sulfate", "--choice", "Vitamin K"]


async def test_evaluate_sends_the_options_given_with_choice(fast_server, capsys):  # noqa: F811
    address = fast_server.addresses[0]
    assert await asyncio.to_thread(main, ["evaluate", *CHAIN, "--answer", "B", "--json", "--server", address]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["status"] == "ok" and record["target"] == "answer" and record["info_gain"] is not None
    # the server got the two options: a letter past them is refused
    assert await asyncio.to_thread(main, ["evaluate", *CHAIN, "--answer", "C", "--server", address]) == 2
    assert "'C' names no option: 2 choices were sent (A to B)" in capsys.readouterr().err
