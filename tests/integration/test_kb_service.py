"""The knowledge base behind the real server: retrieval modes, hot reload under load, embedder mismatch."""

import asyncio
from concurrent.futures import ThreadPoolExecutor

import pytest

from client import AsyncVerifierClient, VerifierClient, VerifierError
from kb.build import add_documents, build_kb
from kb.chunking import ChunkSpec
from kb.ingest import Document
from tests.conftest import damage, make_settings

DOCS = [
    Document("w", "Warfarin is a vitamin K antagonist; its effect is monitored with the INR.", "https://ex/w", "Warfarin"),
    Document("h", "Unfractionated heparin potentiates antithrombin and is monitored with the aPTT.", "https://ex/h"),
    Document("z", "Zafirlukast blocks leukotriene receptors and prevents asthma attacks.", "https://ex/z"),
    Document("o", "Omeprazole blocks the gastric proton pump and reduces stomach acid.", "https://ex/o"),
    Document("m", "Metformin reduces glucose production in the liver in type 2 diabetes.", "https://ex/m"),
]


@pytest.fixture(scope="module")
async def kb_server(cache_dir, embedder, tmp_path_factory):
    from server.app import start_server

    path = tmp_path_factory.mktemp("served") / "kb"
    build_kb(DOCS, path, embedder, chunking=ChunkSpec(max_chars=200), progress=False)
    server = await start_server(make_settings(cache_dir, kb={"path": path, "retrieval_mode": "hybrid"}),
                                ["127.0.0.1:0"])
    await server.wait_ready(300)
    yield server, path
    await server.stop(0)


async def test_info_lists_the_modes_and_the_mode_flag_changes_results(kb_server):
    server, path = kb_server
    async with AsyncVerifierClient(server.addresses[0], retries=0) as client:
        info = await client.kb_info()
        assert info["modes"] == ["dense", "bm25", "hybrid"] and info["default_mode"] == "hybrid"
        assert info["index"]["family"] == "flat" and info["path"] == str(path)
        query = "breathing trouble drug and its monitoring"
        dense = await client.search(query, top_k=2, mode="dense")
        lexical = await client.search(query, top_k=2, mode="bm25")
        hybrid = await client.search(query, top_k=4, mode="hybrid")
        default = await client.search(query, top_k=4)
        assert dense[0].fact_id == "z" and lexical[0].fact_id == "w"
        assert {dense[0].fact_id, lexical[0].fact_id} <= {h.fact_id for h in hybrid}
        assert [h.fact_id for h in default] == [h.fact_id for h in hybrid]
        assert 0 < hybrid[-1].score <= hybrid[0].score <= 1.35 / 61  # weighted reciprocal ranks, rrf_k = 60
        assert dense[0].text == DOCS[2].text and dense[0].source == DOCS[2].source



async def test_a_search_query_is_embedded_through_the_micro_batcher(kb_server):
    from prometheus_client import REGISTRY

    def embedded_texts() -> float:
        return REGISTRY.get_sample_value("kgverify_batch_items_total", {"model": "embedder"}) or 0.0

    server, _ = kb_server
    async with AsyncVerifierClient(server.addresses[0], retries=0) as client:
        before = embedded_texts()
        dense = await client.search("which drug blocks leukotriene receptors", top_k=1, mode="dense")
        after_dense = embedded_texts()
        await client.search("which drug blocks leukotriene receptors", top_k=1, mode="bm25")
        assert dense[0].fact_id == "z"
        assert after_dense == before + 1  # the query, batched with other requests' texts
        assert embedded_texts() == after_dense  # BM25 embeds nothing

async def test_hot_reload_under_concurrent_searches_drops_none(kb_server, embedder):
    server, path = kb_server
    rounds = [[Document(f"new{r}", f"The reload round drug is called {name}.", f"https://ex/{r}")]
              for r, name in enumerate(("alphadrine", "betadrine", "gammadrine"))]
    published, served, failures = set(), [], []
    done = asyncio.Event()
    async with AsyncVerifierClient(server.addresses[0], retries=0) as client:
        published.add((await client.kb_info())["kb_id"])

        async def searcher(i):
            count = 0
            while not done.is_set() or count < 5:
                mode = ("dense", "bm25", "hybrid")[(i + count) % 3]
                try:
                    hits = await client.search("how is warfarin monitored", top_k=3, mode=mode)
                    served.append(any(h.fact_id == "w" for h in hits))
                except VerifierError as exc:  # pragma: no cover - the assertion below reports it
                    failures.append(exc)
                count += 1

        workers = [asyncio.ensure_future(searcher(i)) for i in range(8)]
        with ThreadPoolExecutor(1) as pool:
            loop = asyncio.get_running_loop()
            for docs in rounds:
                # keep_versions=1 deletes the version being served: loaded files must outlive that
                manifest = await loop.run_in_executor(
                    pool, lambda: add_documents(path, docs, embedder, keep_versions=1, progress=False))
                previous, current = await client.reload_kb()
                assert previous in published and current == manifest.kb_id
                published.add(current)
        done.set()
        await asyncio.gather(*workers)
        assert failures == [] and len(served) >= 40 and all(served)
        newest = await client.search("gammadrine", top_k=1, mode="bm25")
        assert newest[0].fact_id == "new2"


@pytest.fixture(scope="module")
def other_embedder(tmp_path_factory):
    """A genuinely different sentence-transformers model: MiniLM plus a seeded 384->64 projection."""
    import torch
    from sentence_transformers import SentenceTransformer, models

    from kb.embedder import SentenceTransformerEmbedder, resolve_model_dir

    torch.manual_seed(0)
    base = SentenceTransformer(str(resolve_model_dir("all-MiniLM-L6-v2")), device="cpu", local_files_only=True)
    projection = models.Dense(384, 64, bias=False, activation_function=torch.nn.Identity())
    model_dir = tmp_path_factory.mktemp("models") / "minilm-64"
    SentenceTransformer(modules=[*base, projection, models.Normalize()]).save(str(model_dir))
    return SentenceTransformerEmbedder(str(model_dir))


async def test_a_kb_rebuilt_with_another_embedder_is_refused_and_the_old_one_keeps_serving(
        kb_server, embedder, other_embedder):
    server, path = kb_server
    async with AsyncVerifierClient(server.addresses[0], retries=0) as client:
        before = (await client.kb_info())["kb_id"]
        build_kb(DOCS, path, other_embedder, progress=False)
        with pytest.raises(VerifierError) as err:
            await client.reload_kb()
        assert err.value.code == "FAILED_PRECONDITION" and err.value.reason == "KB_EMBEDDER_MISMATCH"
        assert "minilm-64" in err.value.message and "KGV_EMBEDDER__MODEL" in err.value.message
        assert (await client.kb_info())["kb_id"] == before
        assert (await client.search("warfarin INR", top_k=1))[0].fact_id == "w"
        build_kb(DOCS, path, embedder, chunking=ChunkSpec(max_chars=200), progress=False)
        previous, current = await client.reload_kb()
        assert previous == before and current != before


async def test_a_server_started_on_a_damaged_kb_says_why_and_serves_again_after_repair_and_reload(
        cache_dir, embedder, tmp_path, capsys):
    """Waiting for a KB that failed its checksum ends with KB_CORRUPT, not a timeout; a reload of the repaired
    KB turns the service (and the whole server) SERVING again."""
    import json
    import time

    from kb import cli as kb_cli
    from kb.layout import current_version
    from server.app import start_server

    path = tmp_path / "kb"
    build_kb(DOCS, path, embedder, progress=False)
    damage(current_version(path) / "index.faiss")
    server = await start_server(make_settings(cache_dir, kb={"path": path}), ["127.0.0.1:0"])
    knowledge_base = "kgverify.v1.KnowledgeBaseService"
    try:
        async with AsyncVerifierClient(server.addresses[0], retries=0) as client:
            await client.wait_ready("kgverify.v1.KnowledgeService", timeout_s=300)  # judging needs no KB
            for wait in (lambda: client.wait_ready(knowledge_base, timeout_s=120),
                         lambda: client.wait_ready("", timeout_s=120),
                         lambda: asyncio.to_thread(_sync_wait_ready, server.addresses[0], knowledge_base)):
                started = time.monotonic()
                with pytest.raises(VerifierError) as err:
                    await wait()
                assert err.value.code == "FAILED_PRECONDITION" and err.value.reason == "KB_CORRUPT"
                assert "index.faiss" in err.value.message
                assert time.monotonic() - started < 60
            scored = await client.score_knowledge(steps=["Warfarin is monitored with the INR."],
                                                  context=[DOCS[0].text])
            assert scored.steps[0].verdict == "supported"  # context passages need no KB
            assert await client.health(knowledge_base) == "NOT_SERVING"

            # still damaged: the reload says why, with the status of a KB that cannot be read (it was 2, the status
            # of bad options)
            assert await asyncio.to_thread(kb_cli.main, ["reload", "--server", server.addresses[0]]) == 1
            assert "KB_CORRUPT" in capsys.readouterr().err

            build_kb(DOCS, path, embedder, progress=False)  # the operator repairs it and reloads
            assert await asyncio.to_thread(kb_cli.main, ["reload", "--server", server.addresses[0]]) == 0
            reloaded = json.loads(capsys.readouterr().out)
            assert reloaded["previous_kb_id"] == "" and reloaded["kb_id"] == (await client.kb_info())["kb_id"]
            assert reloaded["num_facts"] == len(DOCS) and reloaded["path"] == str(path)
            assert await client.health(knowledge_base) == "SERVING"
            await client.wait_ready("", timeout_s=10)
            assert (await client.search("warfarin INR", top_k=1))[0].fact_id == "w"
    finally:
        await server.stop(0)


async def test_an_unexpected_kb_load_error_is_reported_not_called_loading(cache_dir, embedder, tmp_path, monkeypatch):
    from kb.knowledge_base import FaissKnowledgeBase
    from server.app import start_server

    path = tmp_path / "kb"
    build_kb(DOCS, path, embedder, progress=False)

    def unreadable(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path / "secret"))

    monkeypatch.setattr(FaissKnowledgeBase, "load", unreadable)
    server = await start_server(make_settings(cache_dir, kb={"path": path}), ["127.0.0.1:0"])
    try:
        async with AsyncVerifierClient(server.addresses[0], retries=0) as client:
            with pytest.raises(VerifierError) as err:
                await client.wait_ready("", timeout_s=120)
            assert err.value.code == "FAILED_PRECONDITION" and err.value.reason == "SERVICE_LOAD_FAILED"
            assert "failed to load (PermissionError)" in err.value.message and "secret" not in err.value.message
            with pytest.raises(VerifierError) as err:
                await client.search("warfarin")
            assert err.value.reason == "SERVICE_LOAD_FAILED"
            monkeypatch.undo()  # the cause is fixed: a reload serves
            assert (await client.reload_kb())[1]
            await client.wait_ready("", timeout_s=60)
    finally:
        await server.stop(0)


def _sync_wait_ready(address, service):
    with VerifierClient(address) as client:
        client.wait_ready(service, timeout_s=120)


async def test_concurrent_reloads_run_one_at_a_time_off_the_request_workers(kb_server, monkeypatch):
    """Two reloads at once used to block both request workers (a thread lock waited inside the shared executor):
    every search, embedding and judge call waited for the whole load."""
    import threading
    import time

    from kb.knowledge_base import FaissKnowledgeBase

    server, _ = kb_server
    real = FaissKnowledgeBase.load.__func__
    threads, active, most = [], [0], [0]

    def slow_load(cls, *args, **kwargs):
        threads.append(threading.current_thread().name)
        active[0] += 1
        most[0] = max(most[0], active[0])
        try:
            time.sleep(0.5)
            return real(cls, *args, **kwargs)
        finally:
            active[0] -= 1

    monkeypatch.setattr(FaissKnowledgeBase, "load", classmethod(slow_load))
    async with AsyncVerifierClient(server.addresses[0]) as client:
        reloads = [asyncio.create_task(client.reload_kb()) for _ in range(2)]
        await asyncio.sleep(0.1)
        hits = await client.search("warfarin monitoring", top_k=1)  # served while both reloads are pending
        assert not all(r.done() for r in reloads) and hits
        results = await asyncio.gather(*reloads)
    assert len(results) == 2 and most[0] == 1
    assert len(threads) == 2 and not any(name.startswith("kgv-work") for name in threads), threads


async def test_a_reload_onto_a_kb_without_bm25_warns_that_the_default_mode_now_fails(kb_server, embedder, capsys):
    """A server whose default mode is hybrid reloaded a KB built --no-bm25 silently (exit 0, no word): every
    request keeping the default mode then failed FAILED_PRECONDITION."""
    import json

    from kb import cli as kb_cli
    from kb.build import BuildOptions

    server, path = kb_server
    address = server.addresses[0]
    try:
        build_kb(DOCS, path, embedder, chunking=ChunkSpec(max_chars=200), options=BuildOptions(bm25=False),
                 progress=False)
        assert await asyncio.to_thread(kb_cli.main, ["reload", "--server", address]) == 0
        out, err = capsys.readouterr()
        reloaded = json.loads(out)
        assert reloaded["modes"] == ["dense"] and reloaded["default_mode"] == "hybrid"
        assert "not the server's default 'hybrid'" in reloaded["warning"] and "RETRIEVAL_MODE_UNAVAILABLE" in err
        async with AsyncVerifierClient(address, retries=0) as client:
            with pytest.raises(VerifierError, match="RETRIEVAL_MODE_UNAVAILABLE"):
                await client.search("warfarin INR", top_k=1)  # what the warning announced
    finally:
        build_kb(DOCS, path, embedder, chunking=ChunkSpec(max_chars=200), progress=False)
        assert await asyncio.to_thread(kb_cli.main, ["reload", "--server", address]) == 0
    out, err = capsys.readouterr()
    assert "warning" not in json.loads(out) and "warning" not in err
