#!/usr/bin/env python
"""Where the time goes: cProfile of the server (event loop and every executor thread) for one 10-step chain and
for 32 concurrent ones, defaults with the verdict cache off; prints the top functions per phase.

    .venv/bin/python bench/profile_chain.py > /tmp/profile.txt
    KGV_JUDGE__NLI_INT8=false .venv/bin/python bench/profile_chain.py    # any KGV_ setting applies
    PROFILE_SORT=cumulative,tottime PROFILE_TOP=40 .venv/bin/python bench/profile_chain.py   # both orders
"""
from __future__ import annotations

import asyncio
import cProfile
import functools
import io
import os
import pstats
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "proto"), str(REPO / "bench")]
os.environ.setdefault("KGV_JUDGE__CACHE_SIZE", "0")

THREAD_PROFILES: list[cProfile.Profile] = []
# From Python 3.12 cProfile runs on sys.monitoring: one profiler per interpreter sees every thread, and a
# second one ("Another profiling tool is already active") cannot start, so threads are profiled together.
PER_THREAD = sys.version_info < (3, 12)


def _profile_thread() -> None:
    profile = cProfile.Profile()
    THREAD_PROFILES.append(profile)
    profile.enable()


def report(title: str, wall_s: float, main: cProfile.Profile, top: int) -> None:
    print(f"== {title}: wall {wall_s:.2f} s, load average {os.getloadavg()}")
    groups = ((("executor threads", THREAD_PROFILES), ("event loop thread", [main])) if PER_THREAD
              else (("all threads (one profiler on Python 3.12+)", [main]),))
    for name, profiles in groups:
        for order in os.environ.get("PROFILE_SORT", "cumulative").split(","):
            out = io.StringIO()
            stats = pstats.Stats(*profiles, stream=out)
            stats.sort_stats(order.strip()).print_stats(top)
            body = out.getvalue()
            print(f"-- {name}, sorted by {order.strip()}\n" + body[body.find("   ncalls"):])


async def main() -> None:
    import server.app
    from client import AsyncVerifierClient
    from load import ChainFactory, send_chain
    from server.config import Settings

    # every executor thread profiles itself from its first task on
    if PER_THREAD:
        server.app.ThreadPoolExecutor = functools.partial(ThreadPoolExecutor, initializer=_profile_thread)
    verifier = await server.app.start_server(Settings(), ["127.0.0.1:0"])
    await verifier.wait_ready(900)
    factory = ChainFactory(seed=11)
    async with AsyncVerifierClient(verifier.addresses[0], retries=0) as client:
        for _ in range(3):  # warm-up
            await send_chain(client, factory.next())
        for title, concurrency in (("one 10-step chain", 1), ("32 concurrent 10-step chains", 32)):
            for profile in THREAD_PROFILES:
                profile.clear()
            main_profile = cProfile.Profile()
            began = time.perf_counter()
            main_profile.enable()
            await asyncio.gather(*(send_chain(client, factory.next()) for _ in range(concurrency)))
            main_profile.disable()
            report(title, time.perf_counter() - began, main_profile, int(os.environ.get("PROFILE_TOP", "25")))
    await verifier.stop(0)


if __name__ == "__main__":
    asyncio.run(main())
