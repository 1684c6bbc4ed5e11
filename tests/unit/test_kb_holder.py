"""The server's KB holder: a replaced version's files are released once no request uses it, never before."""

import gc
import os

from kb.build import add_documents, build_kb
from kb.ingest import Document
from server.kb_holder import KbHolder
from server.pipeline.types import RetrievalMode
from tests.conftest import make_settings

DOCS = [Document("w", "Warfarin is a vitamin K antagonist monitored with the INR."),
        Document("h", "Unfractionated heparin is monitored with the aPTT.")]


def _open_stores(version_dir) -> int:
    """This process's file descriptors on that version's fact store (pruned or not)."""
    target = str(version_dir / "facts.sqlite")
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}").startswith(target)
        except OSError:
            pass
    return count


def test_a_replaced_version_is_closed_when_its_last_request_lets_go_and_not_before(tmp_path, cache_dir, embedder):
    """The fact store's SQLite connection sits in a reference cycle: a replaced (and pruned) version kept its
    facts.sqlite open until the cycle collector happened to run, however long after its last request."""
    path = tmp_path / "kb"
    build_kb(DOCS, path, embedder, progress=False)
    holder = KbHolder(make_settings(cache_dir, kb={"path": path}).kb)
    holder.load(embedder)
    old = holder.get()  # a request in flight holds the version it fetched
    old_dir = old.version
    add_documents(path, [Document("m", "Metformin lowers hepatic glucose output.")], embedder, keep_versions=1,
                  progress=False)
    gc.disable()  # only reference counting may release it
    try:
        holder.load(embedder)
        assert holder.get().version != old_dir and not old_dir.exists()  # replaced and pruned
        assert _open_stores(old_dir) == 1
        hits = old.search(["warfarin monitoring"], 1, RetrievalMode.HYBRID)[0]  # still served to its request
        assert hits and hits[0].fact_id == "w"
        del old, hits
        assert _open_stores(old_dir) == 0  # released as the request let go, no collector needed
        assert _open_stores(holder.get().version) == 1
    finally:
        gc.enable()
