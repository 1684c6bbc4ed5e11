"""The options of every command that connects to a server that requires TLS, mTLS or a bearer token:
`batch`, `evaluate`, `split` and `demo` (with --server) and `kb reload`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_security_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("secure servers (with --server)")
    group.add_argument("--tls-ca", type=Path, help="CA certificate of TLS servers")
    group.add_argument("--tls-cert", type=Path, help="client certificate (mTLS)")
    group.add_argument("--tls-key", type=Path, help="client private key (mTLS)")
    group.add_argument("--token-file", type=Path, help="file holding the bearer token of servers with auth")


def channel_security_of(args: argparse.Namespace) -> tuple[Any, tuple]:
    """(TLS credentials or None, call metadata) from the options of add_security_options; ValueError (a bad
    option: exit status 2) for --tls-cert without --tls-key or a token file that holds no token, OSError for a
    file that cannot be read."""
    from .batch import BatchError, channel_security

    try:
        return channel_security(args.tls_ca, args.tls_cert, args.tls_key, args.token_file)
    except BatchError as exc:
        raise ValueError(str(exc)) from None
    except OSError as exc:  # no such file, permission denied, ...
        raise ValueError(f"cannot read {exc.filename}: {exc.strerror}") from None


def client_options(args: argparse.Namespace) -> dict[str, Any]:
    """credentials= and metadata= for a client of args.server (none for an embedded server, which listens on a
    private unix socket)."""
    if not getattr(args, "server", None):
        return {}
    credentials, metadata = channel_security_of(args)
    return {"credentials": credentials, "metadata": metadata}
