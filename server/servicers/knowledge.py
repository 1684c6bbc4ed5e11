"""KnowledgeService: split, KI, KI + InfoGain, and the streaming RPC."""

from __future__ import annotations

from kgverify.v1 import knowledge_service_pb2_grpc as kgrpc

from ..context import deadline_of, within
from ..pipeline import scoring
from ..streaming import run_stream
from . import convert


class KnowledgeServicer(kgrpc.KnowledgeServiceServicer):
    def __init__(self, runtime):
        self.rt = runtime

    async def SplitReasoning(self, request, context):
        chain, splitter = convert.split_request(request)
        deadline = self.rt.call_deadline(context)
        async with within(deadline):
            result = await scoring.split(chain, splitter, self.rt.deps, deadline)
        return convert.fitting(convert.split_response(result), self.rt.settings.server.max_message_bytes,
                               why=convert.SPLIT_TOO_LARGE)

    async def ScoreKnowledge(self, request, context):
        deadline = self.rt.call_deadline(context)
        async with within(deadline):
            result = await scoring.knowledge(convert.knowledge_request(request), self.rt.deps, deadline)
        return convert.fitting_result(result, convert.knowledge_response, self.rt.settings.server.max_message_bytes)

    async def ScoreChain(self, request, context):
        return await self._score_chain(request, self.rt.call_deadline(context))

    async def StreamScoreChains(self, request_iterator, context):
        stream_deadline = deadline_of(context)  # the stream as a whole may last; each item has the call limit

        async def process(chain):
            return await self._score_chain(chain, self.rt.item_deadline(stream_deadline))

        # A stream alone never runs more items than the server admits: above KGV_SERVER__MAX_INFLIGHT it shed its
        # own items on an idle server (the sidecar admits 32, a stream took 64) instead of reading no further.
        server = self.rt.settings.server
        async for response in run_stream(request_iterator, process, self.rt.admission,
                                         min(server.max_stream_inflight, server.max_inflight),
                                         self.rt.settings.limits.max_id_chars,
                                         self.rt.settings.server.max_message_bytes):
            yield response

    async def _score_chain(self, request, deadline):
        async with within(deadline):
            result = await scoring.chain(convert.chain_request(request), self.rt.deps, deadline)
        return convert.fitting_result(result, convert.chain_response, self.rt.settings.server.max_message_bytes)
