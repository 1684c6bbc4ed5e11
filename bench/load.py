#!/usr/bin/env python
"""Load benchmark over loopback: latency, throughput and server RSS of scoring distinct chains (prints JSON).

One long-lived client process drives a verifier started as a subprocess on
127.0.0.1 with closed-loop workers at each concurrency level, every request a
never-seen 10-step chain (demo facts made unique + filler steps; KI and
InfoGain, top_k 5), then a soak at one concurrency that samples the server's
RSS. Variants (server environments) run one after the other in the same run so
their numbers sit side by side; the machine is shared, so compare within a run.

    nice -n 10 .venv/bin/python bench/load.py --soak-s 300 > bench/load_results.json
    nice -n 10 .venv/bin/python bench/load.py --levels "" --soak-s 0 --batch-rows 200   # kill -9 + resume
    nice -n 10 .venv/bin/python bench/load.py --variant small-inflight=KGV_SERVER__MAX_INFLIGHT=16
    .venv/bin/python bench/load.py --suite batching --level-s 30 > bench/results/load_batching.json
    .venv/bin/python bench/load.py --suite batching --device cuda      # the same on a GPU

The batching suite (issue 8) puts side by side, in one run: the raw model ceiling (the same kind of claims
and pairs pushed straight through the batched models in this process) and the server's throughput and
latency as ratios of it; cross-request batching on vs off; int8 and bfloat16 vs fp32. Verdict cache off,
fresh server per variant, every request a never-seen chain.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "proto")]

FILLER = ("Let me work through this carefully.", "Next, consider what that implies for this case.",
          "Putting these together narrows the options.", "So the remaining choice follows from that.")


def eprint(*args) -> None:
    print(*args, file=sys.stderr, flush=True)


class ChainFactory:
    """Distinct 10-step chains: demo facts tagged with a per-chain case number, interleaved with filler.

    The tag makes every claim text new, so neither the embedding nor the verdict cache can answer it.
    """

    def __init__(self, steps: int = 10, facts_per_chain: int = 6, seed: int = 0):
        lines = (REPO / "kb" / "demo" / "facts.jsonl").read_text(encoding="utf-8").splitlines()
        self.facts = [json.loads(line)["text"] for line in lines if line.strip()]
        self.steps, self.facts_per_chain = steps, facts_per_chain
        self.rng = random.Random(seed)
        self.made = 0

    def next(self) -> dict:
        self.made += 1
        case = f"{os.getpid()}-{self.made}"
        facts = [f"{f.rstrip('.')} (case {case}.{i})." for i, f in enumerate(self.rng.sample(self.facts,
                                                                                               self.facts_per_chain))]
        filler = [f"{self.rng.choice(FILLER)[:-1]} for case {case}.{i}." for i in range(self.steps - len(facts))]
        steps = facts + filler
        self.rng.shuffle(steps)
        answer = facts[0].split()[0]
        return {"question": f"Case {case}: which statement about {answer} is correct?", "steps": steps,
                "answer": answer}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class ServerProcess:
    """`kgverify serve` on 127.0.0.1 in a subprocess, with extra environment (a variant)."""

    def __init__(self, env: dict[str, str], log_path: Path):
        self.address = f"127.0.0.1:{_free_port()}"
        paths = [str(REPO), str(REPO / "proto"), *filter(None, [os.environ.get("PYTHONPATH")])]
        self.env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths), **env}
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> "ServerProcess":
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "client.cli", "serve", "--listen", self.address],
                                     cwd=REPO, env=self.env, stdout=self._log, stderr=subprocess.STDOUT)
        return self

    async def ready(self, client, timeout_s: float = 900.0) -> None:
        """Wait until the server is SERVING; fail at once, with its log's tail, if it exits first or a service
        failed to load (the client's wait_ready raises that service's FAILED_PRECONDITION within seconds)."""
        waiting = asyncio.ensure_future(client.wait_ready(timeout_s=timeout_s))
        while not waiting.done():
            await asyncio.wait([waiting], timeout=1.0)
            if not waiting.done() and self.proc.poll() is not None:
                waiting.cancel()
                await asyncio.gather(waiting, return_exceptions=True)
        if waiting.cancelled() or waiting.exception() is not None:
            state = "running" if self.proc.poll() is None else f"exit {self.proc.returncode}"
            reason = "" if waiting.cancelled() else f" ({waiting.exception()})"
            tail = "\n".join(self.log_path.read_text(errors="replace").splitlines()[-12:])
            raise RuntimeError(f"server not SERVING ({state}){reason}:\n{tail}")

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self._log.close()


@dataclass
class LevelResult:
    concurrency: int
    latencies_s: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    wall_s: float = 0.0

    def summary(self) -> dict:
        lat = sorted(self.latencies_s)
        pick = (lambda q: round(lat[min(len(lat) - 1, int(q * len(lat)))] * 1e3, 1)) if lat else (lambda q: None)
        return {"concurrency": self.concurrency, "requests": len(lat), "errors": self.errors,
                "p50_ms": pick(0.50), "p99_ms": pick(0.99), "mean_ms": round(statistics.mean(lat) * 1e3, 1) if lat
                else None, "throughput_chains_per_s": round(len(lat) / self.wall_s, 2) if self.wall_s else None,
                "wall_s": round(self.wall_s, 1)}


async def send_chain(client, chain: dict) -> None:
    """ScoreChain with KI and InfoGain (the default request of this benchmark)."""
    await client.score_chain(metrics=("ki", "infogain"), top_k=5, timeout_s=300, **chain)


async def send_knowledge(client, chain: dict) -> None:
    """ScoreKnowledge only (the single-claim sidecar request)."""
    await client.score_knowledge(question=chain["question"], steps=chain["steps"], top_k=5, timeout_s=300)


async def closed_loop(client, factory: ChainFactory, concurrency: int, duration_s: float,
                      on_tick=None, send=send_chain) -> LevelResult:
    """`concurrency` workers, each sending the next chain as soon as its previous one is answered."""
    from client import VerifierError

    result = LevelResult(concurrency)
    stop_at = time.monotonic() + duration_s

    async def worker():
        while time.monotonic() < stop_at:
            chain = factory.next()
            started = time.perf_counter()
            try:
                await send(client, chain)
                result.latencies_s.append(time.perf_counter() - started)
            except VerifierError as exc:
                result.errors[exc.code] = result.errors.get(exc.code, 0) + 1

    async def ticker():
        while on_tick is not None:
            on_tick()
            await asyncio.sleep(10)

    began = time.monotonic()
    tick = asyncio.ensure_future(ticker())
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    tick.cancel()
    result.wall_s = time.monotonic() - began
    return result


async def run_variant(name: str, env: dict[str, str], args, workdir: Path) -> dict:
    from client import AsyncVerifierClient

    factory = ChainFactory(seed=args.seed)
    with ServerProcess(env, workdir / f"server-{name}.log") as server:
        started = time.monotonic()
        async with AsyncVerifierClient(server.address, retries=0) as client:
            await server.ready(client)
            ready_s = time.monotonic() - started
            eprint(f"[{name}] server ready in {ready_s:.0f} s; warming up")
            await closed_loop(client, factory, 2, args.warmup_s)
            batch = None
            if args.batch_rows:
                eprint(f"[{name}] kgverify batch of {args.batch_rows} rows, kill -9 at 30%, resume")
                batch = await asyncio.to_thread(batch_kill_resume, server.address, factory, args.batch_rows, workdir)
            levels = []
            for concurrency in args.levels:
                eprint(f"[{name}] concurrency {concurrency} for {args.level_s:.0f} s")
                levels.append((await closed_loop(client, factory, concurrency, args.level_s)).summary())
            soak = None
            if args.soak_s > 0:
                samples = []
                rss_start = rss_mb(server.proc.pid)
                eprint(f"[{name}] soak at concurrency {args.soak_concurrency} for {args.soak_s:.0f} s")
                result = await closed_loop(client, factory, args.soak_concurrency, args.soak_s,
                                           on_tick=lambda: samples.append(round(rss_mb(server.proc.pid) or 0, 1)))
                soak = {**result.summary(), "duration_s": args.soak_s, "rss_mb_start": round(rss_start or 0, 1),
                        "rss_mb_end": round(rss_mb(server.proc.pid) or 0, 1), "rss_mb_every_10s": samples,
                        "client_rss_mb_end": round(rss_mb(os.getpid()) or 0, 1)}
    return {"name": name, "env": env, "server_ready_s": round(ready_s, 1), "chains_made": factory.made,
            "levels": levels, "soak": soak, "batch_kill_resume": batch}


def batch_kill_resume(address: str, factory: ChainFactory, rows: int, workdir: Path, kill_after: float = 0.3) -> dict:
    """`kgverify batch` on real backends, killed with SIGKILL after kill_after of the rows, then resumed."""
    import signal

    source, out = workdir / "batch-in.jsonl", workdir / "batch-out.jsonl"
    source.write_text("".join(json.dumps({"id": f"r{i}", **factory.next()}) + "\n" for i in range(rows)))
    out.unlink(missing_ok=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "proto")])}
    command = [sys.executable, "-m", "client.cli", "batch", "--no-progress", "--input", str(source), "--output",
               str(out), "--server", address, "--concurrency", "8", "--top-k", "5"]
    started = time.monotonic()
    first = subprocess.Popen(command, cwd=REPO, env=env, stderr=subprocess.DEVNULL)
    while first.poll() is None and (out.read_bytes().count(b"\n") if out.exists() else 0) < rows * kill_after:
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait()
    killed_at = out.read_bytes().count(b"\n")
    second = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    elapsed = time.monotonic() - started
    records = [json.loads(line) for line in out.read_text().splitlines()]
    ids = [r["id"] for r in records]
    statuses = {}
    for record in records:
        key = record["status"] if isinstance(record["status"], str) else record["status"]["code"]
        statuses[key] = statuses.get(key, 0) + 1
    return {"rows": rows, "rows_when_killed": killed_at, "resume_exit_code": second.returncode,
            "records": len(records), "unique_ids": len(set(ids)), "complete": sorted(ids) == sorted(
                f"r{i}" for i in range(rows)), "statuses": statuses, "wall_s": round(elapsed, 1),
            "chains_per_s": round(rows / elapsed, 2)}


def parse_variant(text: str) -> tuple[str, dict[str, str]]:
    """NAME=KEY=VALUE,KEY=VALUE (or just NAME for the defaults)."""
    name, _, rest = text.partition("=")
    env = dict(item.split("=", 1) for item in rest.split(",") if item)
    return name, env


# ---- the batching suite (--suite batching): raw model ceiling, cross-request batching, int8 -------------------
def chain_work(chains: list[dict], embedder, kb, settings, scorer) -> list[tuple[list[str], list, list]]:
    """Per chain, what the server's models compute: claims to embed, judge pairs, InfoGain (nli) pairs (their
    contexts fitted to `scorer`, the NLI model, as the server's nli estimator fits them)."""
    from server.backends.judges.aggregation import AggregationPolicy, units_for
    from server.backends.lm.nli_estimator import NliEstimator
    from server.pipeline.info_gain import render_context0
    from server.pipeline.splitter import RuleSplitter
    from server.pipeline.types import RetrievalMode

    policy, splitter, out = AggregationPolicy(window_chars=settings.judge.window_chars), RuleSplitter(), []
    for chain in chains:
        split = splitter.split_steps(chain["steps"], chain["question"])
        claims = list(dict.fromkeys(c.text for st in split.steps for c in st.claims if not c.no_knowledge))
        hits = kb.search(claims, 5, RetrievalMode(settings.kb.retrieval_mode), vectors=embedder.encode(claims))
        pairs = list(dict.fromkeys((u.text, claim) for claim, row in zip(claims, hits)
                                   for u in units_for([h.as_evidence() for h in row], policy)))
        ig = []
        if "answer" in chain and len(chain["steps"]) > 1:
            steps, hypothesis = [st.text for st in split.steps], f"The answer is {chain['answer'].strip()}."
            context0 = render_context0(chain["question"], [])
            fit = NliEstimator(scorer, None, settings.lm.nli_max_chars).fit_contexts
            ig = [(context, hypothesis) for context, _ in fit(context0, steps, hypothesis)]
        out.append((claims, pairs, ig))
    return out


PRECISIONS = {"fp32": (False, "float32"), "int8": (True, "float32"), "bf16": (False, "bfloat16")}


def raw_ceiling(device: str, precision: str, max_batch_size: int, chains: list[dict], singles: list[dict],
                per_chain: int = 6) -> dict:
    """The models alone, in this process: the same kind of claims and pairs the server scores, fully batched."""
    from kb.demo import ensure_demo_kb
    from kb.embedder import SentenceTransformerEmbedder
    from kb.knowledge_base import FaissKnowledgeBase, LoadOptions
    from server.backends.judges.nli_model import NliModel
    from server.config import Settings

    settings = Settings()
    embedder = SentenceTransformerEmbedder(settings.embedder.model, device, max_batch_size)
    kb = FaissKnowledgeBase.load(ensure_demo_kb(settings.kb.cache_dir, embedder), embedder,
                                 LoadOptions.from_settings(settings.kb))
    int8, dtype = PRECISIONS[precision]
    nli = NliModel.load(device=device, quantize=int8, dtype=dtype)

    def score(pairs):
        for start in range(0, len(pairs), max_batch_size):
            nli.predict_proba(pairs[start:start + max_batch_size])

    def timed(fn, *a) -> float:
        began = time.perf_counter()
        fn(*a)
        return time.perf_counter() - began

    def ceiling(work) -> dict:
        claims = [c for w in work for c in w[0]]
        pairs = [p for w in work for p in (*w[1], *w[2])]
        # best of two passes: first-use costs (kernel selection for new shapes) would lower the ceiling and
        # flatter the servers' ratios to it
        passes = [timed(embedder.encode, claims) + timed(score, pairs) for _ in range(2)]
        seconds = min(passes)
        return {"chains": len(work), "claims": len(claims), "pairs": len(pairs), "model_s": round(seconds, 2),
                "model_s_passes": [round(s, 2) for s in passes],
                "chains_per_s": round(len(work) / seconds, 2), "pairs_per_s": round(len(pairs) / seconds, 1)}

    work = chain_work(chains, embedder, kb, settings, nli)
    single_work = chain_work(singles, embedder, kb, settings, nli)
    score(work[0][1][:8])  # warm-up
    # One chain alone, as the server runs it at concurrency 1: its claims, its judge pairs, its InfoGain pairs.
    alone = sorted(timed(embedder.encode, c) + timed(score, p) + timed(score, g) for c, p, g in work[:per_chain])
    return {"device": device, "precision": precision, "max_batch_size": max_batch_size, "load_avg": os.getloadavg(),
            "chains_10_steps": ceiling(work), "single_claim": ceiling(single_work),
            "one_chain_alone_s_median": round(alone[len(alone) // 2], 3)}


def isolated(fn, *args):
    """fn(*args) in a child process that exits before the servers start.

    Measured on an H200: while this process held a CUDA context of its own (the raw ceiling's models),
    every server it started failed its requests with CUBLAS_STATUS_ALLOC_FAILED at cublasCreate; servers
    started from a process that never touched CUDA served. The child also returns the memory on a CPU.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # not multiprocessing.Pool: it replaces a crashed worker and waits forever; this raises BrokenProcessPool
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


async def batching_variant(name: str, env: dict[str, str], args, workdir: Path) -> dict:
    """One fresh server: 10-step chains at concurrency 1 and 32, single-claim requests at concurrency 32."""
    from client import AsyncVerifierClient

    chains, singles = ChainFactory(seed=args.seed), ChainFactory(steps=1, facts_per_chain=1, seed=args.seed + 1)
    with ServerProcess(env, workdir / f"server-{name}.log") as server:
        async with AsyncVerifierClient(server.address, retries=0) as client:
            await server.ready(client)
            await closed_loop(client, chains, 2, args.warmup_s)
            runs = {}
            for key, factory, concurrency, send in (("chains_c1", chains, 1, send_chain),
                                                    ("chains_c32", chains, 32, send_chain),
                                                    ("single_claim_c32", singles, 32, send_knowledge)):
                if key not in args.runs:
                    continue
                eprint(f"[{name}] {key} for {args.level_s:.0f} s")
                level = await closed_loop(client, factory, concurrency, args.level_s, send=send)
                runs[key] = {**level.summary(), "load_avg_after": [round(x, 2) for x in os.getloadavg()]}
    return {"name": name, "env": env, **runs}


def work_dir(args):
    """Where server logs (and batch files) go: --log-dir, kept, or a temporary directory."""
    if args.log_dir:
        Path(args.log_dir).mkdir(parents=True, exist_ok=True)
        return contextlib.nullcontext(args.log_dir)
    return tempfile.TemporaryDirectory(prefix="kgv-load-")


def _ratio(a, b):
    return round(a / b, 3) if a and b else None


def _batched_variant(precision: str) -> str:
    """The server variant that runs `precision` with cross-request batching on."""
    return "fp32-batching-on" if precision == "fp32" else precision


def _level(servers: dict, name: str, run: str, field: str):
    """One number of one server variant's run (None when the variant or run was not measured)."""
    return servers.get(name, {}).get(run, {}).get(field)


def batching_suite(args) -> dict:
    """(a) server vs raw model ceiling, (b) cross-request batching on vs off, (c) int8 vs fp32, on one device."""
    cuda = args.device == "cuda"
    base = {"KGV_JUDGE__CACHE_SIZE": "0", "KGV_EMBEDDER__DEVICE": args.device, "KGV_JUDGE__NLI_DEVICE": args.device,
            "KGV_BATCHING__MAX_BATCH_SIZE": str(args.max_batch_size), **dict(args.server_env)}
    fp32 = {**base, "KGV_JUDGE__NLI_INT8": "false", "KGV_JUDGE__NLI_DTYPE": "float32"}
    variants = {"fp32-batching-on": fp32, "fp32-batching-off": {**fp32, "KGV_BATCHING__ENABLED": "false"},
                "bf16": {**base, "KGV_JUDGE__NLI_INT8": "false", "KGV_JUDGE__NLI_DTYPE": "bfloat16"},
                "bf16-batching-off": {**base, "KGV_JUDGE__NLI_INT8": "false", "KGV_JUDGE__NLI_DTYPE": "bfloat16",
                                      "KGV_BATCHING__ENABLED": "false"}}
    if not cuda:  # int8 dynamic quantization is CPU-only
        variants["int8"] = {**base, "KGV_JUDGE__NLI_INT8": "true", "KGV_JUDGE__NLI_DTYPE": "float32"}
    variants = {name: env for name, env in variants.items() if not args.variants or name in args.variants}
    precisions = [p for p in (("fp32", "bf16") if cuda else ("fp32", "int8", "bf16"))
                  if any(name.split("-")[0] == p for name in variants)]
    chains = [ChainFactory(seed=args.seed + 7).next() for _ in range(args.ceiling_chains)]
    singles_factory = ChainFactory(steps=1, facts_per_chain=1, seed=args.seed + 8)
    singles = [singles_factory.next() for _ in range(args.ceiling_chains)]
    ceilings = {}
    for precision in precisions if args.ceiling_chains else ():
        eprint(f"raw model ceiling, {precision} on {args.device}")
        ceilings[precision] = isolated(raw_ceiling, args.device, precision, args.max_batch_size, chains, singles)
    with work_dir(args) as tmp:
        servers = {}
        for name, env in variants.items():
            try:
                servers[name] = asyncio.run(batching_variant(name, env, args, Path(tmp)))
            except Exception as exc:  # one failed variant must not lose the others' numbers
                eprint(f"[{name}] failed: {exc}")
                servers[name] = {"name": name, "env": env, "error": f"{type(exc).__name__}: {exc}"}
    summary = {}
    for precision, ceiling in ceilings.items():
        on = _batched_variant(precision)
        summary[f"server_vs_ceiling_{precision}"] = {
            "chains_c32_throughput_over_ceiling": _ratio(_level(servers, on, "chains_c32", "throughput_chains_per_s"),
                                                         ceiling["chains_10_steps"]["chains_per_s"]),
            "single_claim_c32_throughput_over_ceiling": _ratio(
                _level(servers, on, "single_claim_c32", "throughput_chains_per_s"),
                ceiling["single_claim"]["chains_per_s"]),
            "chains_c1_p50_over_raw_chain": _ratio(_level(servers, on, "chains_c1", "p50_ms"),
                                                   ceiling["one_chain_alone_s_median"] * 1e3),
            "goals": "throughput ratio >= 0.8, p50 ratio <= 1.25"}

    def gain(on, off, run, field):
        return _ratio(_level(servers, on, run, field), _level(servers, off, run, field))

    for precision, (on, off) in {"fp32": ("fp32-batching-on", "fp32-batching-off"),
                                 "bf16": ("bf16", "bf16-batching-off")}.items():
        if on in servers and off in servers:
            summary[f"batching_on_vs_off_{precision}"] = {
                "single_claim_c32_throughput_gain": gain(on, off, "single_claim_c32", "throughput_chains_per_s"),
                "chains_c32_throughput_gain": gain(on, off, "chains_c32", "throughput_chains_per_s"),
                "chains_c1_p50_latency_ratio": gain(on, off, "chains_c1", "p50_ms"),
                "goals": "single-claim gain >= 1.3, 10-step c1 latency ratio <= 1.10"}
    judge = {}
    try:
        report = json.loads((REPO / "bench" / "results" / "judge.json").read_text())
        judge = {k: report["overall"][f"judge_{k}"]["mean_macro_f1_over_sources"]
                 for k in ceilings if f"judge_{k}" in report["overall"]}
    except (OSError, KeyError, ValueError):
        pass
    summary["precision_vs_fp32"] = {
        "raw_pairs_per_s": {k: c["chains_10_steps"]["pairs_per_s"] for k, c in ceilings.items()},
        "server_chains_c32_per_s": {k: _level(servers, _batched_variant(k), "chains_c32", "throughput_chains_per_s")
                                    for k in ceilings},
        "server_chains_c1_p50_ms": {k: _level(servers, _batched_variant(k), "chains_c1", "p50_ms") for k in ceilings},
        "dev_mean_macro_f1_from_bench_results_judge_json": judge,
        "note": "int8 scores one pair per pass (dynamic activation scales make batched rows depend on their "
                "batch); bf16 pads each row to a multiple of 8 tokens and batches rows of one width only "
                "(batch-invariant)"}
    return {"summary": summary, "raw_ceiling": ceilings, "servers": servers}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--levels", default="1,8,32", help="concurrency levels (comma-separated)")
    parser.add_argument("--level-s", type=float, default=40.0, help="seconds per concurrency level")
    parser.add_argument("--warmup-s", type=float, default=10.0)
    parser.add_argument("--soak-s", type=float, default=300.0, help="soak duration (0 = no soak)")
    parser.add_argument("--soak-concurrency", type=int, default=8)
    parser.add_argument("--variant", action="append", default=[],
                        help="NAME=KGV_X=v,KGV_Y=w: a server environment to compare (default: embedded defaults)")
    parser.add_argument("--batch-rows", type=int, default=0,
                        help="also run `kgverify batch` on this many rows, kill -9 it at 30%% and resume (0 = no)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log-dir", default="", help="keep the servers' logs here (default: a temporary directory)")
    parser.add_argument("--suite", choices=("load", "batching"), default="load",
                        help="batching: raw model ceiling, batching on vs off and int8 vs fp32 side by side")
    parser.add_argument("--device", default="cpu", help="batching suite: torch device of the models (cpu, cuda)")
    parser.add_argument("--max-batch-size", type=int, default=64, help="batching suite: KGV_BATCHING__MAX_BATCH_SIZE")
    parser.add_argument("--ceiling-chains", type=int, default=48,
                        help="batching suite: chains for the raw ceiling (0 = no ceiling)")
    parser.add_argument("--variants", default="", help="batching suite: only these server variants (comma-separated: "
                        "fp32-batching-on, fp32-batching-off, bf16, bf16-batching-off, int8)")
    parser.add_argument("--runs", default="chains_c1,chains_c32,single_claim_c32",
                        help="batching suite: which runs each server variant gets (comma-separated)")
    parser.add_argument("--server-env", action="append", default=[], metavar="NAME=VALUE",
                        help="batching suite: environment added to every server variant, e.g. OMP_WAIT_POLICY=PASSIVE")
    args = parser.parse_args()
    args.levels = [int(x) for x in args.levels.split(",") if x.strip()]
    args.variants = {x.strip() for x in args.variants.split(",") if x.strip()}
    args.runs = {x.strip() for x in args.runs.split(",") if x.strip()}
    args.server_env = [tuple(x.split("=", 1)) for x in args.server_env]
    if any(len(x) != 2 for x in args.server_env):
        parser.error("--server-env takes NAME=VALUE")
    variants = [parse_variant(v) for v in args.variant] or [("embedded-defaults", {})]
    began, load_start = time.time(), os.getloadavg()
    if args.suite == "batching":
        result = batching_suite(args)
        print(json.dumps({"benchmark": "load-batching", "transport": "grpc over TCP loopback (127.0.0.1)",
                          "device": args.device, "level_s": args.level_s, "warmup_s": args.warmup_s,
                          "machine": {"cpus": os.cpu_count(), "load_avg_at_start": load_start,
                                      "load_avg_at_end": os.getloadavg(),
                                      "note": "shared machine (other jobs running); compare within one run"},
                          "started_unix": round(began), "elapsed_s": round(time.time() - began), **result},
                         indent=2))
        return
    with work_dir(args) as tmp:
        results = [asyncio.run(run_variant(name, env, args, Path(tmp))) for name, env in variants]
    print(json.dumps({
        "benchmark": "load", "transport": "grpc over TCP loopback (127.0.0.1)", "chain_steps": 10,
        "metrics": ["ki", "infogain"], "top_k": 5, "level_s": args.level_s, "warmup_s": args.warmup_s,
        "machine": {"cpus": os.cpu_count(), "load_avg_at_start": load_start, "load_avg_at_end": os.getloadavg(),
                    "note": "shared machine (other jobs running); compare variants within one run"},
        "started_unix": round(began), "elapsed_s": round(time.time() - began), "variants": results,
    }, indent=2))


if __name__ == "__main__":
    main()
