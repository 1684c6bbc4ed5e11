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


def read_token_file(path: Path) -> str:
    """The bearer token a client sends, from a file in the server's token-file format: one token a line, blank lines
    and lines starting with # left out, a UTF-8 byte order mark ignored. ValueError, naming the file but never its
    text, when it holds no token, more than one (a client sends one: which?) or one gRPC metadata cannot carry
    (not printable ASCII). The whole file was sent as the token: with a comment line, gRPC refused the call as
    'Invalid metadata' (INTERNAL) and every call failed."""
    text = Path(path).read_bytes().decode("utf-8-sig", errors="replace")
    tokens = [line.strip() for line in text.splitlines()]
    tokens = [(number, token) for number, token in enumerate(tokens, 1) if token and not token.startswith("#")]
    if not tokens:
        raise ValueError(f"{path} holds no token (one a line; # starts a comment)")
    if len(tokens) > 1:
        raise ValueError(f"{path} holds {len(tokens)} tokens (lines {', '.join(str(n) for n, _ in tokens[:5])}): "
                         "a client sends one; give a file with the token this client uses")
    number, token = tokens[0]
    if not (token.isascii() and token.isprintable()):
        raise ValueError(f"line {number} of {path} holds characters other than printable ASCII, which gRPC "
                         "metadata cannot carry: it cannot be the token")
    return token


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
