"""`python -m server`: run the verifier with settings from the environment."""

import asyncio
import sys

from .app import ListenError, serve
from .config import Settings
from .context import configure_logging


def main() -> None:
    settings = Settings()
    configure_logging(settings.server.log_level)
    try:
        asyncio.run(serve(settings))
    except ListenError as exc:
        print(f"kgverify: error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
