"""KnowledgeBaseService: search, manifest, hot reload."""

from __future__ import annotations

from kgverify.v1 import knowledge_base_service_pb2 as kbpb
from kgverify.v1 import knowledge_base_service_pb2_grpc as kbgrpc

from ..context import within
from ..pipeline.types import RetrievalMode
from . import convert


class KnowledgeBaseServicer(kbgrpc.KnowledgeBaseServiceServicer):
    def __init__(self, runtime):
        self.rt = runtime

    async def SearchKnowledgeBase(self, request, context):
        limits = self.rt.settings.limits
        query, top_k, mode = convert.search_request(request, limits.max_step_chars, limits.max_top_k)
        kb = self.rt.kb.require()
        mode = mode or self.rt.deps.default_retrieval_mode
        top_k = top_k or self.rt.deps.default_top_k
        vectors = {}
        deadline = self.rt.call_deadline(context)
        async with within(deadline):  # the search too: one over a large flat or BM25 index can take seconds
            if mode is not RetrievalMode.BM25 and top_k and mode in kb.info.modes:
                # the query is embedded through the micro-batcher, with other requests' texts
                vectors = {"vectors": await self.rt.deps.embed_texts([query], deadline)}
            hits = await self.rt.deps.blocking.run(kb.search, [query], top_k, mode, **vectors)
        return convert.fitting(convert.search_response(hits[0], kb.info.kb_id, mode),
                               self.rt.settings.server.max_message_bytes, why=convert.SEARCH_TOO_LARGE)

    async def GetKnowledgeBaseInfo(self, request, context):
        return convert.kb_info_response(self.rt.kb.require().info, self.rt.deps.default_retrieval_mode)

    async def ReloadKnowledgeBase(self, request, context):
        previous, current = await self.rt.reload_kb()
        return kbpb.ReloadKnowledgeBaseResponse(previous_kb_id=previous, kb_id=current)
