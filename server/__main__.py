"""`python -m server`: run the verifier with settings from the environment."""

import asyncio

from .app import serve
from .config import Settings
from .context import configure_logging


def main() -> None:
    settings = Settings()
    configure_logging(settings.server.log_level)
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
