"""`python -m server`: run the verifier with settings from the environment."""

import asyncio
import os
import sys

from .app import ListenError, serve
from .config import SettingsError, load_settings
from .context import configure_logging


def main() -> None:
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")  # (as the kgverify CLI: gRPC core's INFO lines off by default)
    try:
        settings = load_settings()
        configure_logging(settings.server.log_level)
        asyncio.run(serve(settings))
    except (SettingsError, ListenError) as exc:
        print(f"kgverify: error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
