"""Refused calls write one WARNING per method and reason per minute, not one per call: a client retrying with a
wrong token, or a scanner, must not flood the server's log (each call is still in the access log)."""

import logging

from server.pipeline.errors import KgverifyError
from server.security import PermissionDeniedError, RefusalLog, UnauthenticatedError
from tests.integration.test_security import TOKEN, _refused, secure_server  # noqa: F401 (fixture)


def _warnings(caplog):
    return [r.getMessage() for r in caplog.records
            if r.name == "kgverify.security" and r.levelno == logging.WARNING and "refused" in r.getMessage()]


async def test_a_burst_of_refused_calls_is_one_warning(secure_server, caplog):
    server = await secure_server(auth_tokens=[TOKEN])
    caplog.set_level(logging.DEBUG, logger="kgverify.security")
    for _ in range(25):
        wrong = (("authorization", "Bearer wrong-token"),)
        assert (await _refused(server.addresses[0], metadata=wrong)).code == "UNAUTHENTICATED"
    assert len(_warnings(caplog)) == 1


def test_held_back_refusals_are_counted_in_the_next_warning(caplog):
    now = [0.0]
    refusals = RefusalLog(interval_s=60, clock=lambda: now[0])
    caplog.set_level(logging.DEBUG, logger="kgverify.security")
    bad_token: KgverifyError = UnauthenticatedError("missing or unknown bearer token")
    for _ in range(5):
        refusals.refused("/kgverify.v1.KnowledgeService/ScoreChain", bad_token)
        now[0] += 1
    # another method, or another reason, is its own first warning
    refusals.refused("/kgverify.v1.KnowledgeBaseService/ReloadKnowledgeBase", bad_token)
    refusals.refused("/kgverify.v1.KnowledgeBaseService/ReloadKnowledgeBase", PermissionDeniedError("admin only"))
    now[0] = 70.0
    refusals.refused("/kgverify.v1.KnowledgeService/ScoreChain", bad_token)
    warnings = _warnings(caplog)
    assert len(warnings) == 4
    assert "more refused" not in warnings[0]
    assert warnings[-1].endswith("(4 more refused like it in the last 70 s)")
