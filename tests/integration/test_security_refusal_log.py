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


async def test_a_refused_call_carries_its_request_id_to_the_client_and_the_log(secure_server, caplog):
    """Every other error names the call's request id in its status and on its log lines; a refused token named
    none (the WARNING read "[-]"), and the refused call had no access log line, so a refusal a client reported
    could not be found in the log."""
    from server.context import RequestIdFilter

    server = await secure_server(auth_tokens=[TOKEN])
    caplog.set_level(logging.INFO, logger="kgverify.security")
    caplog.handler.addFilter(RequestIdFilter())  # as the server's log handler names each line's request id
    metadata = (("authorization", "Bearer wrong-token"), ("x-request-id", "client-req-42"))
    refused = await _refused(server.addresses[0], metadata=metadata)
    assert refused.code == "UNAUTHENTICATED"
    assert refused.metadata.get("request_id") == "client-req-42"
    lines = [r for r in caplog.records if r.name == "kgverify.security" and "ScoreChain" in r.getMessage()]
    assert {r.levelno for r in lines} == {logging.INFO, logging.WARNING}  # the access line and the warning
    assert all(getattr(r, "request_id", None) == "client-req-42" for r in lines)
    anonymous = await _refused(server.addresses[0], metadata=(("authorization", "Bearer wrong-token"),))
    assert len(anonymous.metadata.get("request_id", "")) == 16  # a fresh id when the client sent none
