"""The knowledge base currently served; swapped whole on reload, so in-flight requests keep theirs."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from .config import KbSettings
from .pipeline.errors import (KgverifyError, KnowledgeBaseCorruptError, KnowledgeBaseUnavailableError,
                              ServiceLoadFailedError)

log = logging.getLogger(__name__)


class KbHolder:
    def __init__(self, settings: KbSettings):
        self.settings = settings
        self.current = None
        self.error: KgverifyError | None = None
        self._load_lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.settings.enabled

    def get(self):
        """The loaded KB, None when the server runs without one; raises the load error if loading failed."""
        if self.error is not None:
            raise self.error
        return self.current

    def require(self):
        kb = self.get()
        if kb is None:
            raise KnowledgeBaseUnavailableError(
                "this server runs without a knowledge base (KGV_KB__ENABLED=false)" if not self.enabled
                else "the knowledge base is still loading; retry shortly")
        return kb

    def load(self, embedder) -> None:
        """Loads (or reloads) the configured KB; blocking. On failure the previous KB stays."""
        from kb.demo import ensure_demo_kb
        from kb.knowledge_base import FaissKnowledgeBase, LoadOptions

        with self._load_lock:  # concurrent reloads load one after the other; the last one wins
            # the demo KB's cache directory is named in messages until the demo is there: building it may fail (a
            # directory that cannot be written, a full disk), a load failure like any other, not "still loading"
            path = Path(self.settings.path or self.settings.cache_dir).expanduser()
            try:
                try:
                    if not self.settings.path:
                        path = ensure_demo_kb(self.settings.cache_dir, embedder)
                    kb = FaissKnowledgeBase.load(path, embedder, LoadOptions.from_settings(self.settings))
                except KnowledgeBaseCorruptError as exc:
                    if self.settings.path:
                        raise
                    # the bundled demo KB is a cache: rebuild it rather than ask the user to
                    log.warning("the demo knowledge base %s is damaged (%s); rebuilding it", path, exc.message)
                    path = ensure_demo_kb(self.settings.cache_dir, embedder, rebuild=True)
                    kb = FaissKnowledgeBase.load(path, embedder, LoadOptions.from_settings(self.settings))
            except KgverifyError as exc:
                log.error("knowledge base %s not loaded: %s", path, exc.message)
                if self.current is None:
                    self.error = exc
                raise
            except Exception as exc:  # unexpected (I/O, memory, faiss): callers get the reason, not "loading"
                log.exception("knowledge base %s not loaded", path)
                error = ServiceLoadFailedError(
                    f"knowledge base {path} failed to load ({type(exc).__name__}); see the server log")
                if self.current is None:
                    self.error = error
                raise error from exc
            # In-flight searches keep the object they fetched; the old one is freed, and its fact store closed
            # (FactStore.__del__), when the last of them lets go: its (possibly pruned) files are released then,
            # never under a running request.
            self.current, self.error = kb, None
        log.info("knowledge base %s loaded from %s (%s, %d facts)", kb.info.kb_id, path, kb.version.name,
                 kb.info.num_facts)
        if self.settings.retrieval_mode not in {m.value for m in kb.info.modes}:
            log.warning("knowledge base %s supports retrieval modes %s; requests using the default mode %r will "
                        "fail until it is rebuilt with BM25", kb.info.kb_id, [m.value for m in kb.info.modes],
                        self.settings.retrieval_mode)
