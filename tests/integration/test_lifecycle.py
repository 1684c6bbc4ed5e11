"""Server lifecycle: per-service health while loading, serving without a KB, load shedding, SIGTERM."""

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from client import AsyncVerifierClient, VerifierClient, VerifierError
from client import requests as rq
from server.app import Runtime, start_server
from server.backends import registry
from server.health import INFO_GAIN, KNOWLEDGE, KNOWLEDGE_BASE
from server.pipeline.errors import FailedPreconditionError
from server.pipeline.types import Judgement, LabelProbs, Tier, Verdict
from tests.conftest import REPO, make_settings, takes_ctrl_c

CHAIN = {"question": "Which drug reverses heparin?", "steps": ["Protamine sulfate neutralizes heparin."],
         "answer": "Protamine"}


async def _statuses(client):
    return {name: await client.health(name) for name in ("", KNOWLEDGE, INFO_GAIN, KNOWLEDGE_BASE)}


async def test_health_goes_from_not_serving_to_serving_per_service(cache_dir, demo_kb_path, monkeypatch):
    gates = {name: asyncio.Event() for name in ("_load_kb", "_load_knowledge", "_load_info_gain")}
    for name, gate in gates.items():
        original = getattr(Runtime, name)

        async def gated(self, _original=original, _gate=gate):
            await _gate.wait()
            await _original(self)

        monkeypatch.setattr(Runtime, name, gated)
    server = await start_server(make_settings(cache_dir), ["127.0.0.1:0"])
    try:
        async with AsyncVerifierClient(server.addresses[0], retries=0) as client:
            assert set((await _statuses(client)).values()) == {"NOT_SERVING"}
            with pytest.raises(VerifierError) as info:
                await client.score_chain(**CHAIN)
            assert info.value.code == "UNAVAILABLE" and info.value.reason == "NOT_READY"

            gates["_load_kb"].set()
            await client.wait_ready(KNOWLEDGE_BASE, timeout_s=120)
            statuses = await _statuses(client)
            assert statuses[KNOWLEDGE] == statuses[INFO_GAIN] == statuses[""] == "NOT_SERVING"

            gates["_load_knowledge"].set()
            await client.wait_ready(KNOWLEDGE, timeout_s=120)
            assert (await _statuses(client))[INFO_GAIN] == "NOT_SERVING"
            assert (await client.score_chain(metrics=("ki",), **CHAIN)).knowledge_index is not None

            gates["_load_info_gain"].set()
            await client.wait_ready("", timeout_s=120)
            assert set((await _statuses(client)).values()) == {"SERVING"}
    finally:
        await server.stop(0)


async def test_a_server_without_a_kb_serves_context_only_and_info_gain(cache_dir):
    server = await start_server(make_settings(cache_dir, kb={"enabled": False}), ["127.0.0.1:0"])
    try:
        await server.wait_ready(300)
        async with AsyncVerifierClient(server.addresses[0], retries=0) as client:
            statuses = await _statuses(client)
            assert statuses[""] == statuses[KNOWLEDGE] == statuses[INFO_GAIN] == "SERVING"
            assert statuses[KNOWLEDGE_BASE] == "NOT_SERVING"
            # the container probe: each --service named must serve (the medqa sidecar names its KB service too)
            from server.healthcheck import main as probe

            address = server.addresses[0]
            assert await asyncio.to_thread(probe, ["--address", address, "--service", KNOWLEDGE]) == 0
            assert await asyncio.to_thread(probe, ["--address", address, "--service", KNOWLEDGE,
                                                   "--service", KNOWLEDGE_BASE]) == 1
            context = ["Protamine sulfate is the antidote that neutralizes heparin."]
            score = await client.score_chain(context=context, **CHAIN)
            assert score.steps[0].verdict == "supported" and score.steps[0].evidence[0].origin == "context"
            assert score.info_gain is not None
            for call in (client.score_knowledge(steps=CHAIN["steps"]), client.search("heparin"), client.kb_info()):
                with pytest.raises(VerifierError) as info:
                    await call
                assert info.value.code == "FAILED_PRECONDITION" and info.value.reason == "KB_NOT_LOADED"
            await client.wait_ready("", timeout_s=10)  # the server as a whole serves without a KB
            started = time.monotonic()
            with pytest.raises(VerifierError) as info:  # its KB service never will
                await client.wait_ready(KNOWLEDGE_BASE, timeout_s=120)
            assert info.value.reason == "KB_NOT_LOADED" and time.monotonic() - started < 60
    finally:
        await server.stop(0)


@pytest.mark.parametrize("failure, shown", [
    (FailedPreconditionError("KGV_JUDGE__NLI_DEVICE=cuda, but torch 2.13.0 sees no CUDA device"),
     "KGV_JUDGE__NLI_DEVICE=cuda, but torch 2.13.0 sees no CUDA device"),
    (OSError("weights at /secret/path unreadable"), "an unexpected error; see the server log"),
], ids=["known", "unexpected"])
async def test_a_service_that_failed_to_load_answers_failed_precondition_not_a_retryable_not_ready(
        cache_dir, monkeypatch, failure, shown):
    def broken(ctx):
        raise failure

    monkeypatch.setitem(registry.JUDGES, "nli", broken)
    server = await start_server(make_settings(cache_dir, kb={"enabled": False}), ["127.0.0.1:0"])
    try:
        await server.wait_ready(300)
        async with AsyncVerifierClient(server.addresses[0], retries=3) as client:
            with pytest.raises(VerifierError) as info:
                await client.score_knowledge(steps=CHAIN["steps"])
            assert info.value.code == "FAILED_PRECONDITION" and info.value.reason == "SERVICE_LOAD_FAILED"
            assert info.value.message == f"{KNOWLEDGE} failed to load at startup: {shown}"
            assert "/secret/path" not in info.value.message  # unexpected details stay in the log
            assert (await _statuses(client))[KNOWLEDGE] == "NOT_SERVING"
            assert (await client.score_info_gain(**CHAIN)).info_gain is not None  # the other service serves
            await client.wait_ready(INFO_GAIN, timeout_s=60)
            # waiting for the failed service ends with its reason, not with a timeout
            for wait in (lambda: client.wait_ready(KNOWLEDGE, timeout_s=120),
                         lambda: asyncio.to_thread(_sync_wait_ready, server.addresses[0], "")):
                started = time.monotonic()
                with pytest.raises(VerifierError) as info:
                    await wait()
                assert info.value.reason == "SERVICE_LOAD_FAILED" and shown in info.value.message
                assert time.monotonic() - started < 60
    finally:
        await server.stop(0)


def _sync_wait_ready(address, service):
    with VerifierClient(address) as client:
        client.wait_ready(service, timeout_s=120)


class GatedJudge:
    """A judge that holds every call until the test opens the gate."""

    name, prompt_version = "gated", ""

    def __init__(self):
        self.gate = asyncio.Event()
        self.waiting = 0

    async def judge(self, items, deadline):
        self.waiting += 1
        await self.gate.wait()
        return [Judgement(Verdict.NOT_ENOUGH_INFO, LabelProbs(0, 0, 1), Tier.EMBEDDED) for _ in items]

    async def ready(self):
        return True


async def test_overload_is_shed_fast_and_health_is_never_shed(cache_dir, demo_kb_path, monkeypatch):
    judge = GatedJudge()
    monkeypatch.setitem(registry.JUDGES, "nli", lambda ctx: judge)
    server = await start_server(make_settings(cache_dir, server={"max_inflight": 2}), ["127.0.0.1:0"])
    try:
        await server.wait_ready(300)
        async with AsyncVerifierClient(server.addresses[0], retries=0) as client:
            held = [asyncio.ensure_future(client.score_knowledge(steps=CHAIN["steps"])) for _ in range(2)]
            while judge.waiting < 2:
                await asyncio.sleep(0.01)
            with pytest.raises(VerifierError) as info:
                await client.score_knowledge(steps=CHAIN["steps"])
            assert info.value.code == "RESOURCE_EXHAUSTED" and info.value.reason == "OVERLOADED"
            assert await client.health() == "SERVING" and await client.health(KNOWLEDGE) == "SERVING"

            async def one_item():
                yield "shed", rq.chain_request(CHAIN, metrics=("ki",))

            streamed = [r async for r in client.stream_chains(one_item())]
            assert streamed[0][1].code == "RESOURCE_EXHAUSTED"
            assert not any(task.done() for task in held)
            judge.gate.set()
            results = await asyncio.gather(*held)
            assert all(r.steps[0].verdict == "not_enough_info" for r in results)
    finally:
        await server.stop(0)


def _serve_process(sock, cache_dir, **settings) -> subprocess.Popen:
    """`kgverify serve` on a unix socket in a child process (stdout and stderr together), KGV_* from settings."""
    env = {**os.environ, "KGV_KB__CACHE_DIR": str(cache_dir),
           "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "proto")]), **settings}
    return subprocess.Popen([sys.executable, "-m", "client.cli", "serve", "--listen", f"unix://{sock}"],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            preexec_fn=takes_ctrl_c)


async def test_sigterm_drains_in_flight_calls_and_exits_cleanly(tmp_path, cache_dir):
    sock = tmp_path / "kgv.sock"
    # exit_on_load_failure on: a server whose services all load keeps serving
    proc = _serve_process(sock, cache_dir, KGV_KB__ENABLED="false", KGV_SERVER__GRACE_PERIOD_S="20",
                          KGV_SERVER__EXIT_ON_LOAD_FAILURE="true")
    try:
        async with AsyncVerifierClient(f"unix://{sock}") as client:
            await client.wait_ready(timeout_s=300)
            context = [{"text": "Protamine sulfate is the antidote that neutralizes heparin."}]

            async def items():
                for i in range(12):
                    yield f"c{i}", rq.chain_request({**CHAIN, "context": context})

            results = []
            async for item_id, result in client.stream_chains(items()):
                if not results:
                    proc.send_signal(signal.SIGTERM)
                results.append((item_id, result))
        assert len(results) == 12 and not any(isinstance(r, VerifierError) for _, r in results)
        assert await asyncio.to_thread(proc.wait, 60) == 0
        assert "shutting down" in proc.stdout.read().decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def test_exit_on_load_failure_exits_with_status_3_naming_the_service(tmp_path, cache_dir):
    """Opt-in: a knowledge base that cannot be loaded ends the process (status 3) instead of a server that
    stays up with KnowledgeBaseService NOT_SERVING; it exits once every service has had its try."""
    sock = tmp_path / "kgv.sock"
    proc = _serve_process(sock, cache_dir, KGV_KB__PATH=str(tmp_path / "no-such-kb"),
                          KGV_SERVER__EXIT_ON_LOAD_FAILURE="true", KGV_SERVER__GRACE_PERIOD_S="0.2")
    try:
        assert await asyncio.to_thread(proc.wait, 120) == 3
        log = proc.stdout.read().decode()
        assert f"exiting with status 3: {KNOWLEDGE_BASE} failed to load" in log, log[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("address", ["0.0.0.0", "localhost:99999", "50070", "127.0.0.1:", "unix://",
                                     "unix:///tmp/" + "s" * 120 + ".sock"])
def test_a_malformed_listen_address_is_refused_before_anything_starts(address):
    from server.app import ListenError, check_listen_address

    with pytest.raises(ListenError, match="not host:port|names no socket path|at most 10[37] bytes"):
        check_listen_address(address)


async def test_a_unix_socket_whose_directory_cannot_be_made_is_one_line_not_a_traceback(tmp_path, cache_dir):
    from server.app import ListenError

    a_file = tmp_path / "hostname"
    a_file.write_text("not a directory")
    with pytest.raises(ListenError, match=f"cannot create the directory {a_file}"):
        await start_server(make_settings(cache_dir, kb={"enabled": False}), [f"unix://{a_file}/kgv.sock"])
    done = subprocess.run([sys.executable, "-m", "server"], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "proto")]),
                               "KGV_SERVER__LISTEN": f'["unix://{a_file}/kgv.sock"]', "KGV_KB__ENABLED": "false"})
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert "cannot create the directory" in done.stderr


async def test_an_address_in_use_or_a_live_unix_socket_is_refused_and_a_stale_socket_reused(tmp_path, cache_dir):
    from server.app import ListenError

    sock = tmp_path / "kgv.sock"
    first = await start_server(make_settings(cache_dir, kb={"enabled": False}),
                               ["127.0.0.1:0", f"unix://{sock}"])
    try:
        port = first.addresses[0].rsplit(":", 1)[1]
        for taken in (f"127.0.0.1:{port}", f"unix://{sock}"):
            with pytest.raises(ListenError, match="cannot listen on"):
                await start_server(make_settings(cache_dir, kb={"enabled": False}), [taken])
        async with AsyncVerifierClient(f"unix://{sock}") as client:  # the first server kept its socket
            assert await client.health("") in ("SERVING", "NOT_SERVING")
    finally:
        await first.stop(0)
    sock.unlink(missing_ok=True)
    import socket as socket_module

    stale = socket_module.socket(socket_module.AF_UNIX, socket_module.SOCK_STREAM)
    stale.bind(str(sock))  # a socket file nobody listens on, as a killed server leaves it
    stale.close()
    second = await start_server(make_settings(cache_dir, kb={"enabled": False}), [f"unix://{sock}"])
    await second.stop(0)


def test_the_cli_says_in_one_line_that_the_port_is_taken(cache_dir):
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    env = {**os.environ, "KGV_KB__ENABLED": "false", "KGV_KB__CACHE_DIR": str(cache_dir),
           "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "proto")])}
    try:
        done = subprocess.run([sys.executable, "-m", "server"], cwd=REPO, capture_output=True, text=True,
                              env={**env, "KGV_SERVER__LISTEN": f'["127.0.0.1:{port}"]'}, timeout=120)
    finally:
        holder.close()
    assert done.returncode == 2, done.stderr[-2000:]
    assert f"cannot listen on 127.0.0.1:{port}: the address is in use" in done.stderr
    assert "Traceback" not in done.stderr


async def test_a_second_signal_exits_at_once_while_calls_drain(tmp_path, cache_dir):
    sock = tmp_path / "kgv.sock"
    proc = _serve_process(sock, cache_dir, KGV_KB__ENABLED="false", KGV_SERVER__GRACE_PERIOD_S="60")
    try:
        async with AsyncVerifierClient(f"unix://{sock}") as client:
            await client.wait_ready(timeout_s=300)
            hold = asyncio.Event()

            async def items():  # a stream the client keeps open: the server drains it for the whole grace
                yield "c0", rq.chain_request({**CHAIN, "context": [{"text": CHAIN["steps"][0]}]})
                await hold.wait()

            async def consume():
                async for _ in client.stream_chains(items()):
                    proc.send_signal(signal.SIGTERM)  # first signal: graceful, waits up to 60 s for the stream

            consumer = asyncio.create_task(consume())
            log = proc.stdout
            while b"shutting down" not in (line := await asyncio.to_thread(log.readline)):
                assert line, "the server exited before draining"
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(proc.wait, 30) == 128 + signal.SIGTERM
            assert time.monotonic() - started < 10  # not the 60 s grace
            assert b"SIGTERM again while shutting down: exiting now" in log.read()
            hold.set()
            consumer.cancel()
            await asyncio.gather(consumer, return_exceptions=True)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_taken_metrics_port_stops_the_start_in_one_line_and_leaves_no_socket(tmp_path, cache_dir):
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    sock = tmp_path / "kgv.sock"
    env = {**os.environ, "KGV_KB__ENABLED": "false", "KGV_KB__CACHE_DIR": str(cache_dir),
           "KGV_METRICS__PORT": str(port), "KGV_METRICS__HOST": "127.0.0.1",
           "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "proto")])}
    try:
        done = subprocess.run([sys.executable, "-m", "client.cli", "serve", "--listen", f"unix://{sock}"],
                              cwd=REPO, capture_output=True, text=True, env=env, timeout=120)
    finally:
        holder.close()
    assert done.returncode == 2, done.stderr[-2000:]
    assert f"cannot serve metrics on 127.0.0.1:{port}" in done.stderr and "KGV_METRICS__PORT" in done.stderr
    assert "Traceback" not in done.stderr and "listening on" not in done.stderr
    assert not sock.exists()  # the gRPC socket bound before the metrics port failed is gone


async def test_an_embedder_that_cannot_load_fails_knowledge_and_kb_calls_with_its_reason(tmp_path, cache_dir):
    missing = tmp_path / "no-embedder"
    server = await start_server(make_settings(cache_dir, embedder={"model": str(missing)}), ["127.0.0.1:0"])
    try:
        await server.wait_ready(300)
        async with AsyncVerifierClient(server.addresses[0], retries=0) as client:
            calls = (lambda: client.score_knowledge(steps=CHAIN["steps"], context=[{"text": CHAIN["steps"][0]}]),
                     lambda: client.score_knowledge(steps=CHAIN["steps"]),
                     lambda: client.search("heparin"))
            for call in calls:
                with pytest.raises(VerifierError) as info:
                    await call()
                assert info.value.code == "FAILED_PRECONDITION" and info.value.reason == "SERVICE_LOAD_FAILED"
                assert f"embedding model {str(missing)!r} is not a local directory" in info.value.message
            statuses = await _statuses(client)
            assert statuses[KNOWLEDGE] == statuses[KNOWLEDGE_BASE] == "NOT_SERVING"
            assert (await client.score_info_gain(**CHAIN)).info_gain is not None  # InfoGain does not embed
    finally:
        await server.stop(0)


async def test_calls_a_shutdown_cancels_are_logged_and_counted_as_the_unavailable_their_clients_get(
        cache_dir, monkeypatch, caplog):
    from prometheus_client import REGISTRY

    def count(code):
        return REGISTRY.get_sample_value("kgverify_rpc_duration_seconds_count",
                                         {"method": "/kgverify.v1.KnowledgeService/ScoreKnowledge",
                                          "code": code}) or 0.0

    judge = GatedJudge()  # never opened: the call is still in flight when the grace ends
    monkeypatch.setitem(registry.JUDGES, "nli", lambda ctx: judge)
    server = await start_server(make_settings(cache_dir, kb={"enabled": False}), ["127.0.0.1:0"])
    before = count("UNAVAILABLE"), count("CANCELLED")
    try:
        await server.wait_ready(300)
        async with AsyncVerifierClient(server.addresses[0], retries=0) as client:
            held = asyncio.ensure_future(client.score_knowledge(steps=CHAIN["steps"],
                                                                context=[{"text": CHAIN["steps"][0]}]))
            while judge.waiting < 1:
                await asyncio.sleep(0.01)
            with caplog.at_level("INFO", logger="kgverify.rpc"):
                await server.stop(0.2)
            with pytest.raises(VerifierError) as info:
                await held
            assert info.value.code == "UNAVAILABLE"
    finally:
        await server.stop(0)
    assert (count("UNAVAILABLE"), count("CANCELLED")) == (before[0] + 1, before[1])
    assert any("ScoreKnowledge UNAVAILABLE (server shutdown)" in r.getMessage() for r in caplog.records)
