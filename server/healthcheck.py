"""Container health probe: one grpc.health.v1 Check; exit 0 when SERVING, 1 otherwise (`python -m server.healthcheck`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def default_address() -> str:
    """The first unix listener of the settings (no TLS, no token needed), else the first TCP one on loopback."""
    from server.config import load_settings

    listen = load_settings().server.listen
    unix = [a for a in listen if a.startswith("unix:")]
    if unix:
        return unix[0]
    host, port = listen[0].rsplit(":", 1)
    return f"{'127.0.0.1' if host in ('0.0.0.0', '[::]', '') else host}:{port}"


def check(address: str, service: str = "", timeout_s: float = 3.0, ca: Path | None = None,
          cert: Path | None = None, key: Path | None = None, server_name: str | None = None) -> str:
    """The serving status name of `service` at `address` (raises grpc.RpcError when unreachable)."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    if ca or cert:
        credentials = grpc.ssl_channel_credentials(
            ca.read_bytes() if ca else None, key.read_bytes() if key else None, cert.read_bytes() if cert else None)
        options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
        channel = grpc.secure_channel(address, credentials, options)
    else:
        channel = grpc.insecure_channel(address)
    with channel:
        response = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service),
                                                             timeout=timeout_s)
    return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m server.healthcheck", description=__doc__)
    parser.add_argument("--address", help="host:port or unix:///path (default: from KGV_SERVER__LISTEN)")
    parser.add_argument("--service", action="append", default=None,
                        help="service name (default: the whole server); repeat it to require several services")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds")
    parser.add_argument("--tls-ca", type=Path, help="CA of a TLS listener")
    parser.add_argument("--tls-cert", type=Path, help="client certificate (mTLS)")
    parser.add_argument("--tls-key", type=Path, help="client key (mTLS)")
    parser.add_argument("--tls-server-name", help="name the server certificate was issued for")
    args = parser.parse_args(argv)
    address = args.address or default_address()
    healthy = True
    for service in args.service or [""]:  # each named service must serve (e.g. the KnowledgeService and its KB)
        try:
            status = check(address, service, args.timeout, args.tls_ca, args.tls_cert, args.tls_key,
                           args.tls_server_name)
        except Exception as exc:  # unreachable, refused, TLS failure: all mean "not healthy"
            print(f"{address}: {type(exc).__name__}: {getattr(exc, 'details', lambda: exc)()}", file=sys.stderr)
            return 1
        print(f"{address} {service or '(server)'}: {status}")
        healthy = healthy and status == "SERVING"
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
