#!/usr/bin/env python
"""Smoke check of the server on an accelerator: one fresh server per device layout, one never-seen 10-step
chain (KI + InfoGain) and one single-claim request, each timed once, then the server log's first traceback.

    python bench/device_smoke.py                                   # all layouts (needs CUDA)
    python bench/device_smoke.py --layouts cpu --log-dir /tmp/smoke

Prints one line per request ("<layout> chain ok 0.069" or "... FAILED <error>"); exit status 1 when any
failed. A quick check before the batching suite (bench/load.py --suite batching --device cuda).
"""
from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "proto")]

from bench.load import ChainFactory, ServerProcess, send_chain, send_knowledge  # noqa: E402

LAYOUTS = {
    "cpu": {"KGV_EMBEDDER__DEVICE": "cpu", "KGV_JUDGE__NLI_DEVICE": "cpu"},
    "cuda": {"KGV_EMBEDDER__DEVICE": "cuda", "KGV_JUDGE__NLI_DEVICE": "cuda"},
    "embedder-cpu": {"KGV_EMBEDDER__DEVICE": "cpu", "KGV_JUDGE__NLI_DEVICE": "cuda"},
    "nli-cpu": {"KGV_EMBEDDER__DEVICE": "cuda", "KGV_JUDGE__NLI_DEVICE": "cpu"},
}


async def smoke(name: str, env: dict[str, str], log: Path) -> bool:
    from client import AsyncVerifierClient

    ok = True
    with ServerProcess({"KGV_JUDGE__CACHE_SIZE": "0", **env}, log) as server:
        async with AsyncVerifierClient(server.address, retries=0) as client:
            try:
                await server.ready(client, timeout_s=300)
            except Exception as exc:
                print(f"{name} NOT READY {exc}")
                return False
            for label, send, steps in (("chain", send_chain, 10), ("single", send_knowledge, 1)):
                chain = ChainFactory(steps=steps, facts_per_chain=min(6, steps), seed=5).next()
                began = time.perf_counter()
                try:
                    await send(client, chain)
                    print(f"{name} {label} ok {time.perf_counter() - began:.3f}")
                except Exception as exc:
                    ok = False
                    print(f"{name} {label} FAILED {exc}")
    text = log.read_text(errors="replace")
    at = text.find("Traceback")
    if at >= 0:
        print(text[at:at + 3000])
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layouts", default="cuda,embedder-cpu,nli-cpu", help=f"comma-separated: {', '.join(LAYOUTS)}")
    parser.add_argument("--log-dir", default="", help="keep the servers' logs here (default: a temporary directory)")
    args = parser.parse_args()
    names = [x.strip() for x in args.layouts.split(",") if x.strip()]
    if unknown := [x for x in names if x not in LAYOUTS]:
        parser.error(f"unknown layouts {unknown}; choose from {list(LAYOUTS)}")
    with tempfile.TemporaryDirectory(prefix="kgv-smoke-") as tmp:
        logs = Path(args.log_dir or tmp)
        logs.mkdir(parents=True, exist_ok=True)
        results = [asyncio.run(smoke(name, LAYOUTS[name], logs / f"server-{name}.log")) for name in names]
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
