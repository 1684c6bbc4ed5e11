"""run_stream on its own: the request id of a stream item, which starts every log line of that item."""

from __future__ import annotations

import logging

from kgverify.v1 import knowledge_service_pb2 as kpb
from server.admission import Admission
from server.context import request_id_var
from server.streaming import run_stream


class _Ids(logging.Filter):
    def __init__(self):
        super().__init__()
        self.seen: list[str] = []

    def filter(self, record):
        self.seen.append(request_id_var.get())
        return True


async def test_an_item_id_with_line_breaks_cannot_forge_log_lines():
    """The item id went into the request id as sent: "a\\n2026-... ERROR ..." wrote a second, forged log line."""
    forged = "x\n2026-11-28 12:00:00,000 ERROR kgverify.rpc [admin] forged\r\x1b[2J"

    async def requests():
        yield kpb.StreamScoreChainsRequest(id=forged)

    async def process(chain):
        raise RuntimeError("unexpected")  # logged with its traceback, under the item's request id

    ids = _Ids()
    logger = logging.getLogger("server.streaming")
    logger.addFilter(ids)
    request_id_var.set("stream1")
    try:
        results = [r async for r in run_stream(requests(), process, Admission(4), 4, 256)]
    finally:
        logger.removeFilter(ids)
    assert [r.id for r in results] == [forged]  # the result still carries the id as sent
    assert results[0].status.code == 13
    assert ids.seen and all(i.isprintable() and i.startswith("stream1/x\\n2026") for i in ids.seen), ids.seen
