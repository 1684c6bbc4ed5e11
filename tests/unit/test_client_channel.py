"""The client's channels ping a silent connection (keepalive) no more often than the kgverify server allows."""

from client.aio import KEEPALIVE_TIME_MS, SERVER_MIN_PING_INTERVAL_MS, channel_options
from server.app import _options
from server.config import Settings


def test_client_keepalive_pings_are_within_what_the_server_accepts():
    client = dict(channel_options())
    server = dict(_options(Settings()))
    allowed = server["grpc.http2.min_ping_interval_without_data_ms"]
    assert allowed == SERVER_MIN_PING_INTERVAL_MS
    assert client["grpc.keepalive_time_ms"] == KEEPALIVE_TIME_MS > allowed  # (not at the limit: timer jitter)
    assert client["grpc.http2.ping_timeout_ms"] == client["grpc.keepalive_timeout_ms"] <= 30_000
    # no pings on an idle channel unless the server permits them
    assert not client["grpc.keepalive_permit_without_calls"] or server.get("grpc.keepalive_permit_without_calls")
