"""Running batch again into the same --output with other scoring options (--judge baseline after nli, to compare
judges) kept every row's first record and said only "resumed: N rows already done": nothing told the user the new
options scored nothing. The run now says that the rows keep their records whatever the options."""

import asyncio
import json

from client.cli import main
from tests.integration.test_batch_resume import fast_server  # noqa: F401  (a real server with instant models)


async def test_a_resumed_run_says_its_rows_keep_their_records_whatever_the_options(fast_server, tmp_path,  # noqa: F811
                                                                                     capfd):
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_text("".join(json.dumps({"id": f"r{i}", "question": "q", "answer": "A",
                                          "reasoning": "Protamine sulfate neutralizes heparin."}) + "\n"
                              for i in range(2)))
    args = ["batch", "--no-progress", "--input", str(source), "--output", str(out),
            "--server", fast_server.addresses[0]]
    assert await asyncio.to_thread(main, args) == 0
    assert "resuming" not in capfd.readouterr().err
    before = out.read_text()
    assert await asyncio.to_thread(main, [*args, "--top-k", "3"]) == 0
    err = capfd.readouterr().err
    assert (f"resuming {out}: 2 rows already have a record there and keep it; they are not scored again, whatever "
            "the scoring options: give another --output to score them with other options") in err, err
    assert out.read_text() == before
